//! The one load generator of both benches: a fixed number of keep-alive
//! HTTP/1.1 clients, each sending its next pre-built signed request as soon
//! as the previous one was answered (a closed loop, as wrk does).
//!
//! Each client owns one TCP connection and writes the request bytes itself
//! (`httparse` reads the answer): a general HTTP client costs several times
//! the CPU per request, and the load generator shares one core with the
//! sink while the server under test has the other, so its cost per request
//! bounds what the fastest baseline can show.
//!
//! Start-up is not measured: the bodies are signed before any client
//! exists, every client connects first, and only when all of them are
//! connected does the clock start and all of them are released together.

use super::{CpuSnap, CpuUse, Meter, Prebuilt, Res};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The load generator's runtime: its threads are named `loadgen`, which is
/// how the CPU accounting finds them.
pub fn loadgen_runtime(threads: usize) -> Res<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("loadgen")
        // Threads that come and go would make the CPU accounting jump.
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()?)
}

/// Where requests go: `http://HOST:PORT/PATH` (loopback, no TLS).
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// `POST {path} HTTP/1.1`, `host` and `content-type`, up to the signature.
    head: Arc<[u8]>,
}

impl Target {
    pub fn parse(url: &str) -> Res<Target> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("load target {url:?}: only http:// URLs are supported"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = host
            .parse()
            .map_err(|e| format!("load target {url:?}: the host must be IP:PORT ({e})"))?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\nx-signature: "
        );
        Ok(Target {
            addr,
            head: head.into_bytes().into(),
        })
    }
}

/// One keep-alive connection and its buffers.
struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    buf: Vec<u8>,
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect: timeout".to_owned())?
            .map_err(|e| format!("connect: {}", e.kind()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("connect: nodelay: {}", e.kind()))?;
        Ok(Conn {
            stream,
            out: Vec::with_capacity(4096),
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and reads its answer: `Ok(body)` for a 200,
    /// `Err(kind)` otherwise ("http 503", "read: eof", ...). After an `Err`
    /// the connection is not reused.
    async fn exchange(&mut self, target: &Target, req: &Prebuilt) -> Result<Vec<u8>, String> {
        self.out.clear();
        self.out.extend_from_slice(&target.head);
        self.out.extend_from_slice(req.signature.as_bytes());
        self.out.extend_from_slice(b"\r\ncontent-length: ");
        self.out
            .extend_from_slice(req.body.len().to_string().as_bytes());
        self.out.extend_from_slice(b"\r\n\r\n");
        self.out.extend_from_slice(req.body);
        match tokio::time::timeout(REQUEST_TIMEOUT, self.round_trip()).await {
            Ok(r) => r,
            Err(_) => Err("timeout".into()),
        }
    }

    async fn round_trip(&mut self) -> Result<Vec<u8>, String> {
        let mut written = 0;
        while written < self.out.len() {
            self.stream
                .writable()
                .await
                .map_err(|e| format!("write: {}", e.kind()))?;
            match self.stream.try_write(&self.out[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("write: {}", e.kind())),
            }
        }
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(answer) = parse_answer(&self.buf)? {
                return answer;
            }
            self.stream
                .readable()
                .await
                .map_err(|e| format!("read: {}", e.kind()))?;
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return Err("read: eof".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("read: {}", e.kind())),
            }
        }
    }
}

/// `None` while the answer is incomplete; then the body of a 200 or what
/// else came.
fn parse_answer(buf: &[u8]) -> Result<Option<Result<Vec<u8>, String>>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("read: bad answer: {e}")),
    };
    let mut length = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("read: chunked answers are not supported".into());
        }
    }
    let length = length.ok_or("read: answer without content-length")?;
    if buf.len() < head_len + length {
        return Ok(None);
    }
    let body = buf[head_len..head_len + length].to_vec();
    Ok(Some(match resp.code {
        Some(200) => Ok(body),
        Some(code) => Err(format!("http {code}")),
        None => Err("read: no status".into()),
    }))
}

/// What one client (and then all of them) counted.
#[derive(Default)]
pub struct Tally {
    /// Latencies (µs) of 200s sent and answered inside the measured window.
    pub latencies: Vec<u32>,
    /// Non-200 answers and transport failures inside the measured window.
    pub errors: u64,
    /// Non-200 answers and failures over the whole phase, by kind.
    pub error_kinds: BTreeMap<String, u64>,
}

impl Tally {
    fn answered(&mut self, t0: Instant, t1: Instant, in_window: bool) {
        if in_window {
            let us = t1.duration_since(t0).as_micros();
            self.latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }

    fn failed(&mut self, kind: String, in_window: bool) {
        if in_window {
            self.errors += 1;
        }
        *self.error_kinds.entry(kind).or_default() += 1;
    }

    fn absorb(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        for (k, v) in other.error_kinds {
            *self.error_kinds.entry(k).or_default() += v;
        }
    }

    fn lost_worker(&mut self, e: &tokio::task::JoinError) {
        self.errors += 1;
        *self.error_kinds.entry(format!("worker: {e}")).or_default() += 1;
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// Warm-up, then a measured window.
    Timed {
        warmup: Duration,
        duration: Duration,
    },
    /// Until this many events were answered 200 (each failure is replaced by
    /// a fresh event); everything is measured.
    Accepted(u64),
}

pub struct LoadSpec {
    /// Where the requests go: request `i` to `urls[i % urls.len()]`, as a
    /// round-robin load balancer would spread them over several instances.
    pub urls: Vec<String>,
    pub connections: usize,
    pub stop: Stop,
    /// Cycle through the pool (only where events need not be distinct).
    pub wrap: bool,
    /// The processes whose CPU counts as "server" (empty: this process).
    pub server_pids: Vec<u32>,
    /// Keep the body of every 200 (the ingest bench checks them).
    pub keep_answers: bool,
    /// Incremented on every 200, for progress reports.
    pub progress: Arc<AtomicU64>,
}

#[derive(Default)]
struct WorkerOut {
    tally: Tally,
    accepted: Vec<(u32, Instant)>,
    answers: Vec<Vec<u8>>,
    gave_up: bool,
}

pub struct LoadOut {
    /// When every client was released (the clock's origin).
    pub start: Instant,
    /// When the measured window began (after the warm-up).
    pub window_start: Instant,
    /// When it ended (when the last client stopped, for `Stop::Accepted`).
    pub window_end: Instant,
    pub tally: Tally,
    /// (pool index, when its 200 was read) of every 200, in that order.
    pub accepted: Vec<(u32, Instant)>,
    /// The bodies of every 200 (warm-up included), with `keep_answers`.
    pub answers: Vec<Vec<u8>>,
    pub pool_exhausted: bool,
    pub gave_up: bool,
    /// CPU over the measured window.
    pub cpu: CpuUse,
    /// The snapshot at `start`, for figures that span more than the window.
    pub start_snap: CpuSnap,
}

impl LoadOut {
    pub fn window(&self) -> Duration {
        self.window_end.duration_since(self.window_start)
    }

    /// 200s sent and answered in the window, per second.
    pub fn rps(&self) -> f64 {
        self.tally.latencies.len() as f64 / self.window().as_secs_f64()
    }
}

/// Consecutive failures after which a client gives up in `Stop::Accepted`.
pub const GIVE_UP_AFTER: u32 = 1000;

/// The moments every client works to, known once all are connected.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    warm_end: Instant,
    end: Option<Instant>,
}

pub async fn run_load(spec: LoadSpec, pool: Arc<Vec<Prebuilt>>, meter: &Meter) -> Res<LoadOut> {
    let targets = Arc::new(
        spec.urls
            .iter()
            .map(|u| Target::parse(u))
            .collect::<Res<Vec<_>>>()?,
    );
    if targets.is_empty() {
        return Err("the load needs at least one URL".into());
    }
    let next = Arc::new(AtomicUsize::new(0));
    let claimed = Arc::new(AtomicU64::new(0));
    let exhausted = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(tokio::sync::Barrier::new(spec.connections + 1));
    let (go_tx, go_rx) = tokio::sync::watch::channel(None::<Clock>);
    let mut tasks = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let (targets, pool, next, claimed, exhausted, progress, ready) = (
            targets.clone(),
            pool.clone(),
            next.clone(),
            claimed.clone(),
            exhausted.clone(),
            spec.progress.clone(),
            ready.clone(),
        );
        let mut go = go_rx.clone();
        let (stop, wrap, keep_answers) = (spec.stop, spec.wrap, spec.keep_answers);
        tasks.push(tokio::spawn(async move {
            let mut out = WorkerOut::default();
            // This client's connections, one per target, opened before the clock.
            let mut conns: Vec<Option<Conn>> = Vec::with_capacity(targets.len());
            for t in targets.iter() {
                match Conn::open(t.addr).await {
                    Ok(conn) => conns.push(Some(conn)),
                    Err(kind) => {
                        out.tally.failed(kind, false);
                        conns.push(None);
                    }
                }
            }
            ready.wait().await;
            let clock = match go.wait_for(Option::is_some).await {
                Ok(clock) => *clock,
                Err(_) => return out,
            };
            let Some(clock) = clock else { return out };
            'events: loop {
                match (stop, clock.end) {
                    (Stop::Timed { .. }, Some(end)) if Instant::now() >= end => break,
                    (Stop::Accepted(target), _)
                        if claimed.fetch_add(1, Ordering::Relaxed) >= target =>
                    {
                        break;
                    }
                    _ => {}
                }
                // Send fresh events until one is accepted (timed: just one).
                let mut failures = 0u32;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let idx = if wrap { i % pool.len() } else { i };
                    let Some(req) = pool.get(idx) else {
                        exhausted.store(true, Ordering::Relaxed);
                        break 'events;
                    };
                    let t = i % targets.len();
                    let t0 = Instant::now();
                    let result = match &mut conns[t] {
                        Some(conn) => conn.exchange(&targets[t], req).await,
                        None => Err("no connection".to_owned()),
                    };
                    let t1 = Instant::now();
                    let in_window = t0 >= clock.warm_end && clock.end.is_none_or(|end| t1 <= end);
                    match result {
                        Ok(body) => {
                            out.tally.answered(t0, t1, in_window);
                            if keep_answers {
                                out.answers.push(body);
                            }
                            out.accepted
                                .push((u32::try_from(idx).unwrap_or(u32::MAX), t1));
                            progress.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(kind) => {
                            out.tally.failed(kind, in_window);
                            // The answer may be half read: start over.
                            conns[t] = Conn::open(targets[t].addr).await.ok();
                            failures += 1;
                            if clock.end.is_some() {
                                break;
                            }
                            if failures >= GIVE_UP_AFTER {
                                out.gave_up = true;
                                break 'events;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            out
        }));
    }
    // Every client is connected: start the clock and release them together.
    ready.wait().await;
    let start_snap = meter.snap_many(&spec.server_pids);
    let start = start_snap.at;
    let clock = match spec.stop {
        Stop::Timed { warmup, duration } => Clock {
            start,
            warm_end: start + warmup,
            end: Some(start + warmup + duration),
        },
        Stop::Accepted(_) => Clock {
            start,
            warm_end: start,
            end: None,
        },
    };
    go_tx
        .send(Some(clock))
        .map_err(|_| "every load client ended before the start")?;
    let (before, after_window) = match clock.end {
        Some(end) => {
            tokio::time::sleep_until(clock.warm_end.into()).await;
            let before = meter.snap_many(&spec.server_pids);
            tokio::time::sleep_until(end.into()).await;
            (Some(before), Some(meter.snap_many(&spec.server_pids)))
        }
        None => (None, None),
    };
    let mut outs = Vec::with_capacity(tasks.len());
    for t in tasks {
        outs.push(t.await);
    }
    let (cpu, window_end) = match (before, after_window) {
        (Some(b), Some(a)) => (meter.between(&b, &a), clock.end.unwrap_or(a.at)),
        _ => {
            let after = meter.snap_many(&spec.server_pids);
            (meter.between(&start_snap, &after), after.at)
        }
    };
    let mut out = LoadOut {
        start: clock.start,
        window_start: clock.warm_end,
        window_end,
        tally: Tally::default(),
        accepted: Vec::new(),
        answers: Vec::new(),
        pool_exhausted: exhausted.load(Ordering::Relaxed),
        gave_up: false,
        cpu,
        start_snap,
    };
    for w in outs {
        match w {
            Ok(w) => {
                out.tally.absorb(w.tally);
                out.accepted.extend(w.accepted);
                out.answers.extend(w.answers);
                out.gave_up |= w.gave_up;
            }
            Err(e) => out.tally.lost_worker(&e),
        }
    }
    out.tally.latencies.sort_unstable();
    out.accepted.sort_unstable_by_key(|(_, t)| *t);
    Ok(out)
}
