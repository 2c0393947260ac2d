//! Load run: durable ingest of signed ClickUp webhooks, against two baselines
//! measured in the same run on the same machine.
//!
//! Phase A "ceiling": a bare actix-web server that reads the body and answers.
//! Phase B "verifying": the same plus HMAC-SHA256 verification and a JSON parse.
//! Phase C "clickup-bridge": the real daemon, committing every event to SQLite.
//!
//! Run with `cargo bench --bench ingest` (see bench/README.md for the options).

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{KeyInit, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::{BTreeMap, HashSet};
use std::error::Error;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type HmacSha256 = hmac::Hmac<Sha256>;
type BoxError = Box<dyn Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

const SECRET: &str = "bench-secret";
const SIGNATURE: HeaderName = HeaderName::from_static("x-signature");
/// What the baselines answer: the daemon's answer's shape and size.
const BASELINE_ANSWER: &str =
    r#"{"event_id":"evt_0196a3b2c4d57e8f9a0b1c2d3e4f5a6b","duplicate":false}"#;
const ROUTES_YAML: &str =
    "version: 1\nsources:\n  clickup:\n    verify: clickup\n    secret: bench-secret\nroutes: []\n";

// ---------------------------------------------------------------- options

#[derive(Debug, Clone)]
struct Options {
    duration: Duration,
    warmup: Duration,
    connections: usize,
    rounds: usize,
    requests: usize,
    client_threads: usize,
    server_workers: usize,
    out: PathBuf,
}

const USAGE: &str = "\
usage: cargo bench --bench ingest -- [options]
  --duration SECS       measured time per phase (default 10)
  --warmup SECS         unmeasured warm-up per phase (default 1)
  --connections N       concurrent keep-alive clients (default 16)
  --rounds N            repeat A,B,C N times, report medians (default 1)
  --requests N          distinct signed requests built up front (default 400000)
  --client-threads N    load generator runtime threads (default 2)
  --server-workers N    actix workers of the baselines (default 2, as the daemon on 2 cores)
  --out FILE            JSON report (default bench/results/ingest-latest.json)";

fn parse_options() -> Res<Options> {
    let mut o = Options {
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        connections: 16,
        rounds: 1,
        requests: 400_000,
        client_threads: 2,
        server_workers: 2,
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results/ingest-latest.json"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            // `cargo bench` passes --bench to harness=false targets.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--duration" => o.duration = Duration::from_secs_f64(value("--duration")?.parse()?),
            "--warmup" => o.warmup = Duration::from_secs_f64(value("--warmup")?.parse()?),
            "--connections" => o.connections = value("--connections")?.parse()?,
            "--rounds" => o.rounds = value("--rounds")?.parse()?,
            "--requests" => o.requests = value("--requests")?.parse()?,
            "--client-threads" => o.client_threads = value("--client-threads")?.parse()?,
            "--server-workers" => o.server_workers = value("--server-workers")?.parse()?,
            "--out" => o.out = PathBuf::from(value("--out")?),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    if o.connections == 0
        || o.rounds == 0
        || o.requests == 0
        || o.client_threads == 0
        || o.server_workers == 0
    {
        return Err(format!("counts must be at least 1\n{USAGE}").into());
    }
    if o.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------- requests

/// One pre-built request: exact body bytes and their signature.
struct Prebuilt {
    body: &'static [u8],
    signature: HeaderValue,
}

/// Builds `n` distinct compact bodies shaped like ClickUp's taskStatusUpdated
/// (each with its own `history_items[0].id`, so each has its own dedupe key)
/// and signs each. All bodies live in one leaked buffer so that sending one
/// is zero-copy.
fn prebuild(n: usize) -> Res<Vec<Prebuilt>> {
    const MARK: &str = "@@ID@@";
    let template = json!({
        "event": "taskStatusUpdated",
        "history_items": [{
            "id": MARK,
            "type": 1,
            "date": "1642736073330",
            "field": "status",
            "parent_id": "162641062",
            "data": {"status_type": "custom"},
            "source": null,
            "user": {
                "id": 183,
                "username": "John",
                "email": "john@company.com",
                "color": "#7b68ee",
                "initials": "J",
                "profilePicture": null
            },
            "before": {"status": "to do", "color": "#f9d900", "orderindex": 0, "type": "open"},
            "after": {"status": "in progress", "color": "#7C4DFF", "orderindex": 1, "type": "custom"}
        }],
        "task_id": "1vj38vv",
        "webhook_id": "7fa3ec74-69a8-4530-a251-8a13730bd204"
    })
    .to_string();
    let (prefix, suffix) = template
        .split_once(MARK)
        .ok_or("template lacks its marker")?;
    let base: u64 = 2_800_787_326_392_370_170;
    let mut buf = Vec::with_capacity(n * (template.len() + 8));
    let mut spans = Vec::with_capacity(n);
    for i in 0..n {
        let start = buf.len();
        buf.extend_from_slice(prefix.as_bytes());
        buf.extend_from_slice((base + i as u64).to_string().as_bytes());
        buf.extend_from_slice(suffix.as_bytes());
        spans.push(start..buf.len());
    }
    let all: &'static [u8] = Box::leak(buf.into_boxed_slice());
    let key =
        <HmacSha256 as KeyInit>::new_from_slice(SECRET.as_bytes()).map_err(|e| e.to_string())?;
    spans
        .into_iter()
        .map(|span| {
            let body = &all[span];
            let mut mac = key.clone();
            mac.update(body);
            let signature = HeaderValue::from_str(&hex::encode(mac.finalize().into_bytes()))?;
            Ok(Prebuilt { body, signature })
        })
        .collect()
}

// ---------------------------------------------------------------- baselines

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Ceiling,
    Verifying,
    Bridge,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Ceiling, Phase::Verifying, Phase::Bridge];

    fn key(self) -> &'static str {
        match self {
            Phase::Ceiling => "ceiling",
            Phase::Verifying => "verifying",
            Phase::Bridge => "clickup_bridge",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Phase::Ceiling => "A ceiling (read body, 200)",
            Phase::Verifying => "B verifying (HMAC + JSON parse)",
            Phase::Bridge => "C clickup-bridge (SQLite, FULL)",
        }
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().finish()
}

async fn ceiling(body: web::Bytes) -> HttpResponse {
    std::hint::black_box(body.len());
    HttpResponse::Ok()
        .content_type("application/json")
        .body(BASELINE_ANSWER)
}

async fn verifying(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let mut sig = [0u8; 32];
    let decoded = req
        .headers()
        .get("x-signature")
        .map(|v| hex::decode_to_slice(v.as_bytes(), &mut sig).is_ok())
        .unwrap_or(false);
    if !decoded {
        return HttpResponse::Forbidden().finish();
    }
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(SECRET.as_bytes()) else {
        return HttpResponse::InternalServerError().finish();
    };
    mac.update(&body);
    if mac.verify_slice(&sig).is_err() {
        return HttpResponse::Forbidden().finish();
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) => {
            std::hint::black_box(&v);
            HttpResponse::Ok()
                .content_type("application/json")
                .body(BASELINE_ANSWER)
        }
        Err(_) => HttpResponse::BadRequest().finish(),
    }
}

/// An in-process actix-web server on its own `System` in its own thread.
struct Baseline {
    addr: SocketAddr,
    handle: ServerHandle,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

fn start_baseline(phase: Phase, workers: usize) -> Res<Baseline> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("baseline-{}", phase.key()))
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let app = App::new().route("/healthz", web::get().to(healthz));
                    match phase {
                        Phase::Verifying => app.route("/hooks/clickup", web::post().to(verifying)),
                        _ => app.route("/hooks/clickup", web::post().to(ceiling)),
                    }
                })
                .workers(workers)
                .disable_signals()
                .shutdown_timeout(5)
                .listen(listener)?
                .run();
                let _ = tx.send(server.handle());
                server.await
            })
        })?;
    let handle = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|e| format!("baseline server {} did not start: {e}", phase.key()))?;
    Ok(Baseline {
        addr,
        handle,
        thread,
    })
}

impl Baseline {
    async fn stop(self) -> Res<()> {
        self.handle.stop(true).await;
        // The server future has returned, so the thread ends at once.
        self.thread
            .join()
            .map_err(|_| "baseline server thread panicked")??;
        Ok(())
    }
}

// ---------------------------------------------------------------- daemon

struct Daemon {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn free_port() -> Res<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn start_daemon() -> Res<Daemon> {
    let dir = tempfile::Builder::new()
        .prefix("clickup-bridge-bench-")
        .tempdir()?;
    let addr = free_port()?;
    let admin = free_port()?;
    std::fs::create_dir_all(dir.path().join("templates"))?;
    std::fs::write(dir.path().join("routes.yaml"), ROUTES_YAML)?;
    let settings = dir.path().join("settings.toml");
    std::fs::write(
        &settings,
        format!(
            "listen = \"{addr}\"\nadmin_listen = \"{admin}\"\nroutes = \"routes.yaml\"\ntemplates = \"templates\"\n\
             store = \"sqlite://{}\"\nlog_format = \"json\"\n",
            dir.path().join("bench.db").display()
        ),
    )?;
    let log = std::fs::File::create(dir.path().join("daemon.log"))?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clickup-bridge"));
    cmd.arg("serve")
        .arg("-c")
        .arg(&settings)
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Settings from the caller's environment must not leak into the run.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CLICKUP_BRIDGE_") {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", env!("CARGO_BIN_EXE_clickup-bridge")))?;
    Ok(Daemon { child, addr, dir })
}

impl Daemon {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn wait_healthy(&mut self) -> Res<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("http://{}/healthz", self.addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!(
                    "daemon exited before it was healthy ({status}):\n{}",
                    self.log_tail()
                )
                .into());
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("daemon not healthy after 30 s:\n{}", self.log_tail()).into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait (the daemon's shutdown_timeout is 30 s by default).
    async fn stop(&mut self) -> Res<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !kill.success() {
            return Err(format!("kill -TERM {pid} failed: {kill}").into());
        }
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "daemon did not exit within 45 s of SIGTERM:\n{}",
                    self.log_tail()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join("bench.db")
    }
}

/// Ids of the clickup events in the SQLite file (read after the daemon exited).
async fn stored_event_ids(db: &Path) -> Res<HashSet<String>> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(false)
        .connect()
        .await?;
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM events WHERE source = 'clickup'")
        .fetch_all(&mut conn)
        .await?;
    sqlx::Connection::close(conn).await?;
    Ok(ids.into_iter().collect())
}

// ---------------------------------------------------------------- /proc

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime in ticks from a /proc/.../stat file.
fn stat_ticks(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ", field 3 (state) is index 0; utime is field 14.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU ticks of this process's threads: (load generator threads, all threads).
fn self_ticks() -> (u64, u64) {
    let mut loadgen = 0;
    let mut all = 0;
    if let Ok(entries) = std::fs::read_dir("/proc/self/task") {
        for e in entries.flatten() {
            let Some(t) = stat_ticks(&e.path().join("stat")) else {
                continue;
            };
            all += t;
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.starts_with("loadgen") {
                loadgen += t;
            }
        }
    }
    (loadgen, all)
}

/// The number of CPUs that /proc/stat accounts for.
fn proc_cpus() -> usize {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count()
        .max(1)
}

/// (busy, total) jiffies of the whole machine (iowait counts as idle).
fn machine_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let nums: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = nums.iter().take(8).sum();
    let idle = nums.get(3).copied().unwrap_or(0) + nums.get(4).copied().unwrap_or(0);
    (total - idle.min(total), total)
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

struct CpuSnap {
    at: Instant,
    loadgen: u64,
    own: u64,
    child: Option<u64>,
    machine: (u64, u64),
}

fn cpu_snap(child: Option<u32>) -> CpuSnap {
    let (loadgen, own) = self_ticks();
    CpuSnap {
        at: Instant::now(),
        loadgen,
        own,
        child: child.and_then(|pid| stat_ticks(Path::new(&format!("/proc/{pid}/stat")))),
        machine: machine_ticks(),
    }
}

// ---------------------------------------------------------------- load

#[derive(Default)]
struct WorkerOut {
    /// Latencies (µs) of 200s sent and answered inside the measured window.
    latencies: Vec<u32>,
    /// Non-200 answers and transport failures inside the measured window.
    errors: u64,
    /// Non-200 answers and failures over the whole phase, by kind.
    error_kinds: BTreeMap<String, u64>,
    /// Bodies of every 200 answer over the whole phase (warm-up included).
    answers: Vec<Vec<u8>>,
}

struct LoadOut {
    measured: Duration,
    latencies: Vec<u32>,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    answers: Vec<Vec<u8>>,
    pool_exhausted: bool,
    client_cores: f64,
    server_cores: f64,
    machine_busy: f64,
    other_cores: f64,
}

async fn run_load(
    url: String,
    pool: Arc<Vec<Prebuilt>>,
    opts: &Options,
    wrap: bool,
    server_pid: Option<u32>,
    ticks_per_sec: f64,
) -> Res<LoadOut> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(opts.connections)
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = reqwest::Url::parse(&url)?;
    let start = Instant::now();
    let warm_end = start + opts.warmup;
    let end = warm_end + opts.duration;
    let next = Arc::new(AtomicUsize::new(0));
    let exhausted = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        let (client, url, pool, next, exhausted) = (
            client.clone(),
            url.clone(),
            pool.clone(),
            next.clone(),
            exhausted.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = WorkerOut::default();
            while Instant::now() < end {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let req = match pool.get(if wrap { i % pool.len() } else { i }) {
                    Some(r) => r,
                    None => {
                        exhausted.store(true, Ordering::Relaxed);
                        break;
                    }
                };
                let t0 = Instant::now();
                let sent = client
                    .post(url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .header(SIGNATURE, req.signature.clone())
                    .body(req.body)
                    .send()
                    .await;
                let result = match sent {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.bytes().await {
                            Ok(b) if status == reqwest::StatusCode::OK => Ok(b.to_vec()),
                            Ok(_) => Err(format!("http {}", status.as_u16())),
                            Err(e) => Err(format!("read: {}", kind_of(&e))),
                        }
                    }
                    Err(e) => Err(format!("send: {}", kind_of(&e))),
                };
                let t1 = Instant::now();
                let in_window = t0 >= warm_end && t1 <= end;
                match result {
                    Ok(body) => {
                        if in_window {
                            let us = t1.duration_since(t0).as_micros();
                            out.latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                        out.answers.push(body);
                    }
                    Err(kind) => {
                        if in_window {
                            out.errors += 1;
                        }
                        *out.error_kinds.entry(kind).or_default() += 1;
                    }
                }
            }
            out
        }));
    }
    tokio::time::sleep_until(warm_end.into()).await;
    let before = cpu_snap(server_pid);
    tokio::time::sleep_until(end.into()).await;
    let after = cpu_snap(server_pid);

    let mut out = LoadOut {
        measured: opts.duration,
        latencies: Vec::new(),
        errors: 0,
        error_kinds: BTreeMap::new(),
        answers: Vec::new(),
        pool_exhausted: false,
        client_cores: 0.0,
        server_cores: 0.0,
        machine_busy: 0.0,
        other_cores: 0.0,
    };
    for t in tasks {
        match t.await {
            Ok(w) => {
                out.latencies.extend(w.latencies);
                out.errors += w.errors;
                for (k, v) in w.error_kinds {
                    *out.error_kinds.entry(k).or_default() += v;
                }
                out.answers.extend(w.answers);
            }
            Err(e) => {
                out.errors += 1;
                *out.error_kinds.entry(format!("worker: {e}")).or_default() += 1;
            }
        }
    }
    out.pool_exhausted = exhausted.load(Ordering::Relaxed);
    let secs = after.at.duration_since(before.at).as_secs_f64() * ticks_per_sec;
    let loadgen = after.loadgen.saturating_sub(before.loadgen);
    out.client_cores = loadgen as f64 / secs;
    out.server_cores = match (before.child, after.child) {
        (Some(b), Some(a)) => a.saturating_sub(b) as f64 / secs,
        // In-process baselines: everything of this process but the load generator.
        _ => after.own.saturating_sub(before.own).saturating_sub(loadgen) as f64 / secs,
    };
    let (busy, total) = (
        after.machine.0.saturating_sub(before.machine.0),
        after.machine.1.saturating_sub(before.machine.1),
    );
    out.machine_busy = if total > 0 {
        busy as f64 / total as f64
    } else {
        0.0
    };
    // Whatever else ran on the machine meanwhile (other processes, kernel
    // threads such as the journal's): the noise the phases share.
    out.other_cores =
        (out.machine_busy * proc_cpus() as f64 - out.client_cores - out.server_cores).max(0.0);
    out.latencies.sort_unstable();
    Ok(out)
}

fn kind_of(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else if e.is_request() {
        "request"
    } else {
        "other"
    }
}

// ---------------------------------------------------------------- results

#[derive(Clone, Debug)]
struct PhaseResult {
    phase: Phase,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    client_cores: f64,
    server_cores: f64,
    machine_busy: f64,
    other_cores: f64,
    idle_rss_mb: Option<f64>,
    peak_rss_mb: Option<f64>,
    after_rss_mb: Option<f64>,
    /// Phase C: every 200 of the phase (warm-up included).
    accepted: Option<u64>,
    /// Phase C: problems found by the durability checks.
    problems: Vec<String>,
    /// Phase C: notes that are not failures.
    notes: Vec<String>,
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    f64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]) / 1000.0
}

fn summarize(phase: Phase, load: &LoadOut) -> PhaseResult {
    let ok = load.latencies.len() as u64;
    PhaseResult {
        phase,
        rps: ok as f64 / load.measured.as_secs_f64(),
        p50_ms: percentile_ms(&load.latencies, 50.0),
        p99_ms: percentile_ms(&load.latencies, 99.0),
        ok,
        errors: load.errors,
        error_kinds: load.error_kinds.clone(),
        client_cores: load.client_cores,
        server_cores: load.server_cores,
        machine_busy: load.machine_busy,
        other_cores: load.other_cores,
        idle_rss_mb: None,
        peak_rss_mb: None,
        after_rss_mb: None,
        accepted: None,
        problems: if load.pool_exhausted {
            vec!["ran out of pre-built requests: raise --requests".into()]
        } else {
            Vec::new()
        },
        notes: Vec::new(),
    }
}

async fn run_baseline(
    phase: Phase,
    pool: Arc<Vec<Prebuilt>>,
    opts: &Options,
    hz: f64,
) -> Res<PhaseResult> {
    let server = start_baseline(phase, opts.server_workers)?;
    let url = format!("http://{}/hooks/clickup", server.addr);
    let load = run_load(url, pool, opts, true, None, hz).await;
    server.stop().await?;
    let load = load?;
    Ok(summarize(phase, &load))
}

async fn run_bridge(pool: Arc<Vec<Prebuilt>>, opts: &Options, hz: f64) -> Res<PhaseResult> {
    let mut daemon = start_daemon()?;
    if let Err(e) = daemon.wait_healthy().await {
        let _ = daemon.child.kill();
        let _ = daemon.child.wait();
        return Err(e);
    }
    let pid = daemon.child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kb_to_mb = |kb: u64| kb as f64 / 1024.0;
    let idle = status_kb(pid, "VmRSS:").map(kb_to_mb);
    let url = format!("http://{}/hooks/clickup", daemon.addr);
    let load = run_load(url, pool, opts, false, Some(pid), hz).await;
    let peak = status_kb(pid, "VmHWM:").map(kb_to_mb);
    let after = status_kb(pid, "VmRSS:").map(kb_to_mb);
    let exit = daemon.stop().await;
    let load = load?;
    let mut r = summarize(Phase::Bridge, &load);
    r.idle_rss_mb = idle;
    r.peak_rss_mb = peak;
    r.after_rss_mb = after;

    match exit {
        Ok(s) if s.success() => {}
        Ok(s) => r.problems.push(format!(
            "daemon exit after SIGTERM: {s}\n{}",
            daemon.log_tail()
        )),
        Err(e) => r.problems.push(e.to_string()),
    }

    // Every 200 must be a fresh event with its own id.
    let mut ids = HashSet::with_capacity(load.answers.len());
    let (mut dups, mut unparsable, mut repeated) = (0u64, 0u64, 0u64);
    for a in &load.answers {
        match serde_json::from_slice::<Value>(a) {
            Ok(v) => {
                if v["duplicate"] != Value::Bool(false) {
                    dups += 1;
                }
                match v["event_id"].as_str() {
                    Some(id) if id.starts_with("evt_") => {
                        if !ids.insert(id.to_owned()) {
                            repeated += 1;
                        }
                    }
                    _ => unparsable += 1,
                }
            }
            Err(_) => unparsable += 1,
        }
    }
    r.accepted = Some(load.answers.len() as u64);
    if dups > 0 {
        r.problems
            .push(format!("{dups} answers did not say \"duplicate\":false"));
    }
    if repeated > 0 {
        r.problems
            .push(format!("{repeated} answers repeated an event_id"));
    }
    if unparsable > 0 {
        r.problems
            .push(format!("{unparsable} 200 answers lacked an evt_ event_id"));
    }

    // After a clean exit, every acknowledged id must be in the file.
    match stored_event_ids(&daemon.db_path()).await {
        Ok(stored) => {
            let missing = ids.iter().filter(|id| !stored.contains(*id)).count();
            if missing > 0 {
                r.problems.push(format!(
                    "{missing} acknowledged events missing from SQLite after exit"
                ));
            }
            r.notes.push(format!(
                "SQLite after exit: {} clickup events stored, {} of {} acknowledged ids found",
                stored.len(),
                ids.len() - missing,
                ids.len()
            ));
        }
        Err(e) => r.notes.push(format!(
            "could not read the SQLite file after exit (skipped): {e}"
        )),
    }
    Ok(r)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median_opt(v: Vec<Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.into_iter().flatten().collect();
    if v.is_empty() { None } else { Some(median(v)) }
}

/// The median of each figure over the rounds, errors summed.
fn combine(rounds: &[Vec<PhaseResult>], phase: Phase) -> Option<PhaseResult> {
    let all: Vec<&PhaseResult> = rounds
        .iter()
        .flatten()
        .filter(|r| r.phase == phase)
        .collect();
    let first = (*all.first()?).clone();
    let pick = |f: fn(&PhaseResult) -> f64| median(all.iter().map(|r| f(r)).collect());
    let pick_opt =
        |f: fn(&PhaseResult) -> Option<f64>| median_opt(all.iter().map(|r| f(r)).collect());
    let mut error_kinds = BTreeMap::new();
    for r in &all {
        for (k, v) in &r.error_kinds {
            *error_kinds.entry(k.clone()).or_default() += v;
        }
    }
    Some(PhaseResult {
        phase,
        rps: pick(|r| r.rps),
        p50_ms: pick(|r| r.p50_ms),
        p99_ms: pick(|r| r.p99_ms),
        ok: all.iter().map(|r| r.ok).sum(),
        errors: all.iter().map(|r| r.errors).sum(),
        error_kinds,
        client_cores: pick(|r| r.client_cores),
        server_cores: pick(|r| r.server_cores),
        machine_busy: pick(|r| r.machine_busy),
        other_cores: pick(|r| r.other_cores),
        idle_rss_mb: pick_opt(|r| r.idle_rss_mb),
        peak_rss_mb: pick_opt(|r| r.peak_rss_mb),
        after_rss_mb: pick_opt(|r| r.after_rss_mb),
        accepted: all.iter().map(|r| r.accepted).sum(),
        problems: all.iter().flat_map(|r| r.problems.clone()).collect(),
        notes: first.notes.clone(),
    })
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into())
}

fn phase_json(r: &PhaseResult) -> Value {
    json!({
        "requests_per_sec": r.rps,
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
        "ok_in_window": r.ok,
        "errors": r.errors,
        "error_kinds": r.error_kinds,
        "client_cpu_cores": r.client_cores,
        "server_cpu_cores": r.server_cores,
        "machine_busy": r.machine_busy,
        "other_cpu_cores": r.other_cores,
        "idle_rss_mb": r.idle_rss_mb,
        "peak_rss_mb": r.peak_rss_mb,
        "after_rss_mb": r.after_rss_mb,
        "accepted_events": r.accepted,
        "problems": r.problems,
        "notes": r.notes,
    })
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

// ---------------------------------------------------------------- main

fn main() -> Result<(), BoxError> {
    let opts = parse_options()?;
    let hz = clock_ticks();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "ingest bench: {} connections, {} client threads, {} server workers, {} s warm-up + {} s per phase, {} round(s), {} cores",
        opts.connections,
        opts.client_threads,
        opts.server_workers,
        opts.warmup.as_secs_f64(),
        opts.duration.as_secs_f64(),
        opts.rounds,
        cores
    );
    let t = Instant::now();
    let pool = Arc::new(prebuild(opts.requests)?);
    let body_len = pool.first().map(|p| p.body.len()).unwrap_or(0);
    println!(
        "pre-built {} distinct signed requests (~{} bytes each) in {:.2} s",
        pool.len(),
        body_len,
        t.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads)
        .thread_name("loadgen")
        // Threads that come and go would make the CPU accounting jump.
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()?;

    let rounds: Vec<Vec<PhaseResult>> = rt.block_on(async {
        let mut rounds = Vec::new();
        for round in 1..=opts.rounds {
            let mut results = Vec::new();
            for phase in Phase::ALL {
                let r = match phase {
                    Phase::Bridge => run_bridge(pool.clone(), &opts, hz).await,
                    _ => run_baseline(phase, pool.clone(), &opts, hz).await,
                }
                .map_err(|e| format!("round {round}, phase {}: {e}", phase.key()))?;
                println!(
                    "round {round} {:<34} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
                    phase.label(),
                    r.rps,
                    r.p50_ms,
                    r.p99_ms,
                    r.errors
                );
                results.push(r);
                // Let sockets in TIME_WAIT and the page cache settle a little.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            rounds.push(results);
        }
        Ok::<_, BoxError>(rounds)
    })?;

    let combined: Vec<PhaseResult> = Phase::ALL
        .iter()
        .filter_map(|p| combine(&rounds, *p))
        .collect();
    let get = |p: Phase| combined.iter().find(|r| r.phase == p);
    let (Some(a), Some(b), Some(c)) = (
        get(Phase::Ceiling),
        get(Phase::Verifying),
        get(Phase::Bridge),
    ) else {
        return Err("a phase produced no result".into());
    };

    let title = if opts.rounds > 1 {
        format!("median of {} rounds", opts.rounds)
    } else {
        "1 round".to_string()
    };
    println!();
    println!("== ingest: signed ClickUp webhooks, {title} ==");
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>7} {:>11} {:>11} {:>10} {:>9} {:>9}",
        "phase",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "client cpu",
        "server cpu",
        "other cpu",
        "idle RSS",
        "peak RSS"
    );
    for r in &combined {
        println!(
            "{:<34} {:>10.0} {:>9.2} {:>9.2} {:>7} {:>11.2} {:>11.2} {:>10.2} {:>9} {:>9}",
            r.phase.label(),
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.client_cores,
            r.server_cores,
            r.other_cores,
            r.idle_rss_mb
                .map(|v| format!("{v:.1} MB"))
                .unwrap_or_else(|| "-".into()),
            r.peak_rss_mb
                .map(|v| format!("{v:.1} MB"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    let ratios = [
        (
            "verifying / ceiling",
            ratio(b.rps, a.rps),
            ratio(b.p99_ms, a.p99_ms),
        ),
        (
            "clickup-bridge / verifying",
            ratio(c.rps, b.rps),
            ratio(c.p99_ms, b.p99_ms),
        ),
        (
            "clickup-bridge / ceiling",
            ratio(c.rps, a.rps),
            ratio(c.p99_ms, a.p99_ms),
        ),
    ];
    println!();
    println!("{:<34} {:>10} {:>9}", "ratio", "req/s", "p99");
    for (name, rps, p99) in &ratios {
        println!("{name:<34} {rps:>10.3} {p99:>9.2}");
    }
    println!();
    println!(
        "clickup-bridge: {} events acknowledged (warm-up included), RSS idle {} MB, peak {} MB, after load {} MB",
        c.accepted.unwrap_or(0),
        fmt_opt(c.idle_rss_mb),
        fmt_opt(c.peak_rss_mb),
        fmt_opt(c.after_rss_mb)
    );
    for r in rounds.iter().flatten() {
        for n in &r.notes {
            println!("note: {n}");
        }
    }
    let machine: Vec<String> = combined
        .iter()
        .map(|r| format!("{} {:.0}%", r.phase.key(), r.machine_busy * 100.0))
        .collect();
    println!("machine CPU busy during the window: {}", machine.join(", "));
    let mut problems: Vec<String> = Vec::new();
    for r in &combined {
        if r.errors > 0 || !r.error_kinds.is_empty() {
            problems.push(format!("{}: errors {:?}", r.phase.key(), r.error_kinds));
        }
        for p in &r.problems {
            problems.push(format!("{}: {p}", r.phase.key()));
        }
    }
    if problems.is_empty() {
        println!(
            "checks: every request answered 200; every clickup-bridge answer was a new event with its own id"
        );
    } else {
        for p in &problems {
            println!("PROBLEM: {p}");
        }
    }

    let per_round: Vec<Value> = rounds
        .iter()
        .map(|rs| {
            let mut m = serde_json::Map::new();
            for r in rs {
                m.insert(r.phase.key().into(), phase_json(r));
            }
            let f = |p: Phase| {
                rs.iter()
                    .find(|r| r.phase == p)
                    .map(|r| r.rps)
                    .unwrap_or(f64::NAN)
            };
            m.insert(
                "ratios".into(),
                json!({
                    "verifying_over_ceiling": ratio(f(Phase::Verifying), f(Phase::Ceiling)),
                    "bridge_over_verifying": ratio(f(Phase::Bridge), f(Phase::Verifying)),
                    "bridge_over_ceiling": ratio(f(Phase::Bridge), f(Phase::Ceiling)),
                }),
            );
            Value::Object(m)
        })
        .collect();
    let report = json!({
        "bench": "ingest",
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "machine": {"cores": cores},
        "options": {
            "duration_s": opts.duration.as_secs_f64(),
            "warmup_s": opts.warmup.as_secs_f64(),
            "connections": opts.connections,
            "rounds": opts.rounds,
            "requests_prebuilt": opts.requests,
            "client_threads": opts.client_threads,
            "server_workers": opts.server_workers,
            "body_bytes": body_len,
        },
        "aggregate": if opts.rounds > 1 { "median" } else { "single" },
        "phases": {
            "ceiling": phase_json(a),
            "verifying": phase_json(b),
            "clickup_bridge": phase_json(c),
        },
        "ratios": {
            "requests_per_sec": {
                "verifying_over_ceiling": ratios[0].1,
                "bridge_over_verifying": ratios[1].1,
                "bridge_over_ceiling": ratios[2].1,
            },
            "p99": {
                "verifying_over_ceiling": ratios[0].2,
                "bridge_over_verifying": ratios[1].2,
                "bridge_over_ceiling": ratios[2].2,
            },
        },
        "rounds": per_round,
        "problems": problems,
    });
    if let Some(dir) = opts.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&opts.out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", opts.out.display());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} problem(s), see above", problems.len()).into())
    }
}
