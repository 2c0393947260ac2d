//! What the load runs `ingest.rs` and `e2e.rs` share: option parsing, the
//! pool of pre-built signed requests, the signature check of the in-process
//! receivers, in-process actix-web servers, the daemon as a child process,
//! SQLite access, a throwaway PostgreSQL cluster (`pg.rs`), CPU and RSS from
//! /proc, the load loop (one or several target URLs, round-robin) with its
//! bookkeeping, percentiles and the report's last steps.
//!
//! Each bench includes it with `#[path = "common.rs"] mod common;`.

// Each bench uses only part of this module; to it the rest is dead code.
#![allow(dead_code)]

#[path = "pg.rs"]
pub mod pg;

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
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type HmacSha256 = hmac::Hmac<Sha256>;
pub type BoxError = Box<dyn Error + Send + Sync>;
pub type Res<T> = Result<T, BoxError>;

const SECRET: &str = "bench-secret";
const SIGNATURE: HeaderName = HeaderName::from_static("x-signature");
/// What the in-process receivers answer: the daemon's answer's shape and size.
const BASELINE_ANSWER: &str =
    r#"{"event_id":"evt_0196a3b2c4d57e8f9a0b1c2d3e4f5a6b","duplicate":false}"#;
/// `history_items[0].id` of pool entry `i` is `ID_BASE + i`; the e2e message
/// carries it as `#N`, so the sink knows which event a message is.
pub const ID_BASE: u64 = 2_800_787_326_392_370_170;

// ---------------------------------------------------------------- options

/// The command line after the program name, read option by option.
pub struct Args {
    args: std::iter::Skip<std::env::Args>,
    usage: &'static str,
}

impl Args {
    pub fn new(usage: &'static str) -> Self {
        Self {
            args: std::env::args().skip(1),
            usage,
        }
    }

    /// The next option. Skips what `cargo bench` adds; answers `-h`/`--help`
    /// with the usage and exits 0.
    pub fn next_option(&mut self) -> Option<String> {
        loop {
            let arg = self.args.next()?;
            match arg.as_str() {
                // `cargo bench` passes --bench to harness=false targets.
                "--bench" => {}
                "-h" | "--help" => {
                    println!("{}", self.usage);
                    std::process::exit(0);
                }
                _ => return Some(arg),
            }
        }
    }

    /// The value of option `name` (the next argument).
    pub fn value(&mut self, name: &str) -> Res<String> {
        Ok(self
            .args
            .next()
            .ok_or_else(|| format!("{name} needs a value\n{}", self.usage))?)
    }

    pub fn parse<T>(&mut self, name: &str) -> Res<T>
    where
        T: FromStr,
        T::Err: Error + Send + Sync + 'static,
    {
        Ok(self.value(name)?.parse()?)
    }

    /// Seconds, fractions allowed.
    pub fn secs(&mut self, name: &str) -> Res<Duration> {
        Ok(Duration::from_secs_f64(self.parse(name)?))
    }

    pub fn unknown(&self, arg: &str) -> BoxError {
        format!("unknown argument {arg:?}\n{}", self.usage).into()
    }

    /// Every count must be at least 1 and the measured time positive.
    pub fn check(&self, counts: &[usize], duration: Duration) -> Res<()> {
        if counts.contains(&0) {
            return Err(format!("counts must be at least 1\n{}", self.usage).into());
        }
        if duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- requests

/// One pre-built request: exact body bytes and their signature.
pub struct Prebuilt {
    pub body: &'static [u8],
    pub signature: HeaderValue,
}

/// Builds `n` distinct compact bodies shaped like ClickUp's taskStatusUpdated
/// (entry `i` has `history_items[0].id` = `ID_BASE + i`, so each has its own
/// dedupe key and its own `#N` in the e2e message) and signs each. All bodies
/// live in one leaked buffer so that sending one is zero-copy.
pub fn prebuild(n: usize) -> Res<Vec<Prebuilt>> {
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
    let mut buf = Vec::with_capacity(n * (template.len() + 8));
    let mut spans = Vec::with_capacity(n);
    for i in 0..n {
        let start = buf.len();
        buf.extend_from_slice(prefix.as_bytes());
        buf.extend_from_slice((ID_BASE + i as u64).to_string().as_bytes());
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

/// `prebuild(n)`, timed, and says so.
pub fn prebuild_pool(n: usize) -> Res<Arc<Vec<Prebuilt>>> {
    let t = Instant::now();
    let pool = Arc::new(prebuild(n)?);
    println!(
        "pre-built {} distinct signed requests (~{} bytes each) in {:.2} s",
        pool.len(),
        body_len(&pool),
        t.elapsed().as_secs_f64()
    );
    Ok(pool)
}

pub fn body_len(pool: &[Prebuilt]) -> usize {
    pool.first().map(|p| p.body.len()).unwrap_or(0)
}

// ---------------------------------------------------------------- in-process servers

/// The in-process receivers' `X-Signature` check: hex decode, then
/// constant-time HMAC-SHA256 (`verify_slice`). `Some` is the refusal to answer.
pub fn signature_refusal(req: &HttpRequest, body: &[u8]) -> Option<HttpResponse> {
    let mut sig = [0u8; 32];
    let decoded = req
        .headers()
        .get("x-signature")
        .map(|v| hex::decode_to_slice(v.as_bytes(), &mut sig).is_ok())
        .unwrap_or(false);
    if !decoded {
        return Some(HttpResponse::Forbidden().finish());
    }
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(SECRET.as_bytes()) else {
        return Some(HttpResponse::InternalServerError().finish());
    };
    mac.update(body);
    if mac.verify_slice(&sig).is_err() {
        return Some(HttpResponse::Forbidden().finish());
    }
    None
}

/// 200 with `BASELINE_ANSWER`.
pub fn baseline_answer() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(BASELINE_ANSWER)
}

pub type Configure = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// An in-process actix-web server on its own `System` in its own thread.
pub struct Server {
    pub addr: SocketAddr,
    handle: ServerHandle,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

pub fn start_server(name: &str, workers: usize, configure: Configure) -> Res<Server> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let configure = configure.clone();
                    App::new().configure(move |c| configure(c))
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
        .map_err(|e| format!("server {name} did not start: {e}"))?;
    Ok(Server {
        addr,
        handle,
        thread,
    })
}

impl Server {
    pub async fn stop(self) -> Res<()> {
        self.handle.stop(true).await;
        // The server future has returned, so the thread ends at once.
        self.thread.join().map_err(|_| "server thread panicked")??;
        Ok(())
    }
}

// ---------------------------------------------------------------- daemon

/// `clickup-bridge serve` as a child process in its own temp dir.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn free_port() -> Res<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts the daemon in a fresh temp dir named `tmp_prefix...` with this
/// routes.yaml, `store` (a `postgres://` URL; `None` is a SQLite file in the
/// temp dir) and `RUST_LOG=warn`, without the caller's
/// environment variables for which `drop_env(name)` is true. Waits until it
/// is healthy (killing it if it does not get there), then gives it 300 ms to
/// settle before idle RSS is read.
pub async fn start_daemon(
    tmp_prefix: &str,
    routes_yaml: &str,
    store: Option<&str>,
    drop_env: fn(&str) -> bool,
) -> Res<Daemon> {
    let dir = tempfile::Builder::new().prefix(tmp_prefix).tempdir()?;
    let addr = free_port()?;
    let admin = free_port()?;
    std::fs::create_dir_all(dir.path().join("templates"))?;
    std::fs::write(dir.path().join("routes.yaml"), routes_yaml)?;
    let settings = dir.path().join("settings.toml");
    let store = match store {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    std::fs::write(
        &settings,
        format!(
            "listen = \"{addr}\"\nadmin_listen = \"{admin}\"\nroutes = \"routes.yaml\"\ntemplates = \"templates\"\n\
             store = \"{store}\"\nlog_format = \"json\"\n"
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
    for (k, _) in std::env::vars_os() {
        if drop_env(&k.to_string_lossy()) {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", env!("CARGO_BIN_EXE_clickup-bridge")))?;
    let mut daemon = Daemon { child, addr, dir };
    if let Err(e) = daemon.wait_healthy().await {
        daemon.kill_now();
        return Err(e);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(daemon)
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn log_lines(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("daemon.log"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// A note quoting the log when the daemon logged anything (it runs at warn).
    pub fn log_note(&self) -> Option<String> {
        let warnings = self.log_lines();
        (warnings > 0).then(|| {
            format!(
                "daemon logged {warnings} line(s) at warn or above; last:\n{}",
                self.log_tail()
            )
        })
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
    pub async fn stop(&mut self) -> Res<ExitStatus> {
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
                self.kill_now();
                return Err(format!(
                    "daemon did not exit within 45 s of SIGTERM:\n{}",
                    self.log_tail()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The problem to report unless `exit` (what `stop` gave) is exit 0.
    pub fn exit_problem(&self, exit: &Res<ExitStatus>) -> Option<String> {
        match exit {
            Ok(s) if s.success() => None,
            Ok(s) => Some(format!(
                "daemon exit after SIGTERM: {s}\n{}",
                self.log_tail()
            )),
            Err(e) => Some(e.to_string()),
        }
    }

    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("bench.db")
    }
}

/// A connection to the daemon's SQLite file (WAL readers do not block its writer).
pub async fn open_db(db: &Path) -> Res<sqlx::SqliteConnection> {
    use sqlx::ConnectOptions;
    Ok(sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await?)
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

/// The fields of a /proc/.../stat file after "pid (comm) " (index 0 is
/// field 3, the state).
fn stat_fields(path: &Path) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    // The state is a letter: keep its place with 0.
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// CPU ticks of a PostgreSQL cluster: the postmaster's own and those of the
/// children it has reaped (cutime + cstime: backends that ended), plus the
/// live children's (backends, checkpointer, WAL writer, ...).
fn cluster_ticks(postmaster: u32) -> u64 {
    let Some(pm) = stat_fields(Path::new(&format!("/proc/{postmaster}/stat"))) else {
        return 0;
    };
    // utime 14, stime 15, cutime 16, cstime 17 → indices 11..=14.
    let mut total: u64 = pm.get(11..15).map(|f| f.iter().sum()).unwrap_or(0);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == postmaster {
                continue;
            }
            let Some(f) = stat_fields(&e.path().join("stat")) else {
                continue;
            };
            // ppid is field 4, index 1.
            if f.get(1) == Some(&u64::from(postmaster)) {
                total += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
            }
        }
    }
    total
}

/// The ids of this process's threads.
pub fn own_tids() -> HashSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU ticks of this process's threads: (load generator, sink, all).
fn self_ticks(sink_tids: &HashSet<u32>) -> (u64, u64, u64) {
    let (mut loadgen, mut sink, mut all) = (0, 0, 0);
    if let Ok(entries) = std::fs::read_dir("/proc/self/task") {
        for e in entries.flatten() {
            let Some(t) = stat_ticks(&e.path().join("stat")) else {
                continue;
            };
            all += t;
            let tid: Option<u32> = e.file_name().to_str().and_then(|s| s.parse().ok());
            if tid.is_some_and(|tid| sink_tids.contains(&tid)) {
                sink += t;
                continue;
            }
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.starts_with("loadgen") {
                loadgen += t;
            }
        }
    }
    (loadgen, sink, all)
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

/// `key` ("VmRSS:", "VmHWM:") of process `pid`, in MB.
pub fn rss_mb(pid: u32, key: &str) -> Option<f64> {
    status_kb(pid, key).map(|kb| kb as f64 / 1024.0)
}

/// What the bench needs to account CPU.
#[derive(Clone)]
pub struct Meter {
    hz: f64,
    cpus: usize,
    /// Threads of an in-process sink (e2e), accounted apart; empty in ingest.
    sink_tids: Arc<HashSet<u32>>,
    /// The postmaster of the PostgreSQL cluster the daemons use, if any: it
    /// and its children are accounted apart.
    pub db_pid: Option<u32>,
}

pub struct CpuSnap {
    pub at: Instant,
    loadgen: u64,
    sink: u64,
    own: u64,
    /// The children's ticks, summed; `None` without children.
    child: Option<u64>,
    /// The children's threads: (pid, tid) → (name, ticks).
    child_threads: BTreeMap<(u32, u32), (String, u64)>,
    /// The PostgreSQL cluster's ticks.
    db: u64,
    machine: (u64, u64),
}

/// CPU ticks of every thread of `pid`, by tid, with the thread's name
/// (trailing digits trimmed, so a pool's threads share one name).
fn thread_ticks(pid: u32) -> BTreeMap<u32, (String, u64)> {
    let mut out = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in entries.flatten() {
            let Some(tid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Some(t) = stat_ticks(&e.path().join("stat")) else {
                continue;
            };
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let name = comm
                .trim()
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == ' ')
                .to_owned();
            out.insert(tid, (name, t));
        }
    }
    out
}

/// Cores used between two snapshots.
#[derive(Clone, Debug, Default)]
pub struct CpuUse {
    /// The load generator's threads.
    pub client: f64,
    /// The daemon (a child process) or an in-process server (the rest of
    /// this process).
    pub server: f64,
    /// The sink's threads (e2e).
    pub sink: f64,
    /// The PostgreSQL cluster: the postmaster and its children.
    pub db: f64,
    /// Everything else on the machine.
    pub other: f64,
    /// Busy share of the whole machine.
    pub machine_busy: f64,
    /// The daemon's cores by thread name, busiest first.
    pub server_threads: Vec<(String, f64)>,
}

impl CpuUse {
    pub fn json(&self) -> Value {
        json!({
            "client_cores": self.client,
            "server_cores": self.server,
            "sink_cores": self.sink,
            "postgres_cores": self.db,
            "other_cores": self.other,
            "machine_busy": self.machine_busy,
            "server_threads_cores": self.server_threads.iter().map(|(n, c)| json!({"thread": n, "cores": c})).collect::<Vec<_>>(),
        })
    }

    /// "name 0.42, name 0.10" (threads above 0.01 cores).
    pub fn threads_line(&self) -> String {
        self.server_threads
            .iter()
            .filter(|(_, c)| *c >= 0.01)
            .map(|(n, c)| format!("{n} {c:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Meter {
    /// `sink_tids`: threads of this process to account as the sink.
    pub fn new(sink_tids: HashSet<u32>) -> Self {
        Self {
            hz: clock_ticks(),
            cpus: proc_cpus(),
            sink_tids: Arc::new(sink_tids),
            db_pid: None,
        }
    }

    pub fn snap(&self, child: Option<u32>) -> CpuSnap {
        self.snap_many(child.as_slice())
    }

    /// A snapshot with these daemons as "server" (their ticks summed).
    pub fn snap_many(&self, children: &[u32]) -> CpuSnap {
        let (loadgen, sink, own) = self_ticks(&self.sink_tids);
        let child = (!children.is_empty()).then(|| {
            children
                .iter()
                .filter_map(|pid| stat_ticks(Path::new(&format!("/proc/{pid}/stat"))))
                .sum()
        });
        let mut child_threads = BTreeMap::new();
        for pid in children {
            for (tid, v) in thread_ticks(*pid) {
                child_threads.insert((*pid, tid), v);
            }
        }
        CpuSnap {
            at: Instant::now(),
            loadgen,
            sink,
            own,
            child,
            child_threads,
            db: self.db_pid.map(cluster_ticks).unwrap_or(0),
            machine: machine_ticks(),
        }
    }

    pub fn between(&self, before: &CpuSnap, after: &CpuSnap) -> CpuUse {
        let ticks = after.at.duration_since(before.at).as_secs_f64() * self.hz;
        if ticks <= 0.0 {
            return CpuUse::default();
        }
        let loadgen = after.loadgen.saturating_sub(before.loadgen);
        let sink = after.sink.saturating_sub(before.sink);
        let db = after.db.saturating_sub(before.db);
        let server = match (before.child, after.child) {
            (Some(b), Some(a)) => a.saturating_sub(b),
            // In-process server: everything of this process but the load
            // generator and the sink.
            _ => after
                .own
                .saturating_sub(before.own)
                .saturating_sub(loadgen + sink),
        };
        let (busy, total) = (
            after.machine.0.saturating_sub(before.machine.0),
            after.machine.1.saturating_sub(before.machine.1),
        );
        let machine_busy = if total > 0 {
            busy as f64 / total as f64
        } else {
            0.0
        };
        let mut u = CpuUse {
            client: loadgen as f64 / ticks,
            server: server as f64 / ticks,
            sink: sink as f64 / ticks,
            db: db as f64 / ticks,
            other: 0.0,
            machine_busy,
            server_threads: Vec::new(),
        };
        let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
        for (tid, (name, t)) in &after.child_threads {
            let b = before.child_threads.get(tid).map(|(_, t)| *t).unwrap_or(0);
            *by_name.entry(name.as_str()).or_default() += t.saturating_sub(b);
        }
        u.server_threads = by_name
            .into_iter()
            .map(|(n, t)| (n.to_owned(), t as f64 / ticks))
            .collect();
        u.server_threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        // Whatever else ran on the machine meanwhile (other processes, kernel
        // threads such as the journal's): the noise the phases share. With a
        // child process the rest of this process (its main thread) counts
        // here too; it is idle but for polling.
        u.other = (machine_busy * self.cpus as f64 - u.client - u.server - u.sink - u.db).max(0.0);
        u
    }
}

// ---------------------------------------------------------------- load

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

/// A keep-alive HTTP/1.1 client without proxy or Nagle, as the load
/// generator and the naive forwarder use.
pub fn http_client(max_idle_per_host: usize) -> Res<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(max_idle_per_host)
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// POSTs one pre-built request. `Ok` is the body of a 200; `Err` says what
/// went wrong ("http 503", "send: connect", ...).
pub async fn send_signed(
    client: &reqwest::Client,
    url: &reqwest::Url,
    req: &Prebuilt,
) -> Result<web::Bytes, String> {
    let sent = client
        .post(url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(SIGNATURE, req.signature.clone())
        .body(req.body)
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status = resp.status();
            match resp.bytes().await {
                Ok(b) if status == reqwest::StatusCode::OK => Ok(b),
                Ok(_) => Err(format!("http {}", status.as_u16())),
                Err(e) => Err(format!("read: {}", kind_of(&e))),
            }
        }
        Err(e) => Err(format!("send: {}", kind_of(&e))),
    }
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

/// What one load generator client (and then all of them) counted.
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
    /// A 200 for the request sent at `t0` and answered at `t1`.
    pub fn answered(&mut self, t0: Instant, t1: Instant, in_window: bool) {
        if in_window {
            let us = t1.duration_since(t0).as_micros();
            self.latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }

    /// Anything but a 200, `kind` as `send_signed` says it.
    pub fn failed(&mut self, kind: String, in_window: bool) {
        if in_window {
            self.errors += 1;
        }
        *self.error_kinds.entry(kind).or_default() += 1;
    }

    /// Adds one client's tally.
    pub fn absorb(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        for (k, v) in other.error_kinds {
            *self.error_kinds.entry(k).or_default() += v;
        }
    }

    /// A client task that did not come back.
    pub fn lost_worker(&mut self, e: &tokio::task::JoinError) {
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
    /// The daemons whose CPU counts as "server" (empty: this process).
    pub server_pids: Vec<u32>,
    /// Keep the body of every 200 (the ingest bench checks them).
    pub keep_answers: bool,
    /// Incremented on every 200, for progress reports.
    pub progress: Arc<AtomicU64>,
}

#[derive(Default)]
pub struct WorkerOut {
    tally: Tally,
    /// (pool index, when its 200 was read) of every 200 of the phase.
    accepted: Vec<(u32, Instant)>,
    /// The bodies of those 200s, with `keep_answers`.
    answers: Vec<web::Bytes>,
    gave_up: bool,
}

pub struct LoadOut {
    /// When the measured window began.
    pub window_start: Instant,
    /// When it ended.
    pub window_end: Instant,
    pub tally: Tally,
    /// (pool index, when its 200 was read) of every 200, in that order.
    pub accepted: Vec<(u32, Instant)>,
    /// The bodies of every 200 (warm-up included), with `keep_answers`.
    pub answers: Vec<web::Bytes>,
    pub pool_exhausted: bool,
    pub gave_up: bool,
    pub cpu: CpuUse,
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

pub async fn run_load(spec: LoadSpec, pool: Arc<Vec<Prebuilt>>, meter: &Meter) -> Res<LoadOut> {
    let client = http_client(spec.connections)?;
    let urls = Arc::new(
        spec.urls
            .iter()
            .map(|u| reqwest::Url::parse(u))
            .collect::<Result<Vec<_>, _>>()?,
    );
    if urls.is_empty() {
        return Err("the load needs at least one URL".into());
    }
    let start = Instant::now();
    let (warm_end, end) = match spec.stop {
        Stop::Timed { warmup, duration } => (start + warmup, Some(start + warmup + duration)),
        Stop::Accepted(_) => (start, None),
    };
    let next = Arc::new(AtomicUsize::new(0));
    let claimed = Arc::new(AtomicU64::new(0));
    let exhausted = Arc::new(AtomicBool::new(false));
    let before = if end.is_some() {
        None
    } else {
        Some(meter.snap_many(&spec.server_pids))
    };
    let mut tasks = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let (client, urls, pool, next, claimed, exhausted, progress) = (
            client.clone(),
            urls.clone(),
            pool.clone(),
            next.clone(),
            claimed.clone(),
            exhausted.clone(),
            spec.progress.clone(),
        );
        let (stop, wrap, keep_answers) = (spec.stop, spec.wrap, spec.keep_answers);
        tasks.push(tokio::spawn(async move {
            let mut out = WorkerOut::default();
            'events: loop {
                match (stop, end) {
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
                    let url = &urls[i % urls.len()];
                    let t0 = Instant::now();
                    let result = send_signed(&client, url, req).await;
                    let t1 = Instant::now();
                    let in_window = t0 >= warm_end && end.is_none_or(|end| t1 <= end);
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
                            failures += 1;
                            if end.is_some() {
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
    let (before, after) = match (before, end) {
        (Some(before), _) => {
            // Measured as a whole: wait for the clients.
            let mut outs = Vec::with_capacity(tasks.len());
            for t in tasks.drain(..) {
                outs.push(t.await);
            }
            let after = meter.snap_many(&spec.server_pids);
            return Ok(collect(
                outs, start, after.at, &exhausted, meter, &before, &after,
            ));
        }
        (None, Some(end)) => {
            tokio::time::sleep_until(warm_end.into()).await;
            let before = meter.snap_many(&spec.server_pids);
            tokio::time::sleep_until(end.into()).await;
            (before, meter.snap_many(&spec.server_pids))
        }
        (None, None) => return Err("no way to end the load".into()),
    };
    let mut outs = Vec::with_capacity(tasks.len());
    for t in tasks {
        outs.push(t.await);
    }
    let window_end = end.unwrap_or(after.at);
    Ok(collect(
        outs, warm_end, window_end, &exhausted, meter, &before, &after,
    ))
}

pub fn collect(
    outs: Vec<Result<WorkerOut, tokio::task::JoinError>>,
    window_start: Instant,
    window_end: Instant,
    exhausted: &AtomicBool,
    meter: &Meter,
    before: &CpuSnap,
    after: &CpuSnap,
) -> LoadOut {
    let mut out = LoadOut {
        window_start,
        window_end,
        tally: Tally::default(),
        accepted: Vec::new(),
        answers: Vec::new(),
        pool_exhausted: exhausted.load(Ordering::Relaxed),
        gave_up: false,
        cpu: meter.between(before, after),
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
    out
}

// ---------------------------------------------------------------- figures

/// The `p`th percentile (nearest rank) of sorted values.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    nearest_rank(sorted_us, p).map_or(f64::NAN, |us| f64::from(us) / 1000.0)
}

pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

pub fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

// ---------------------------------------------------------------- report

pub fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// "checks: {passed}" when there are no problems, else one line each.
pub fn print_checks(problems: &[String], passed: &str) {
    if problems.is_empty() {
        println!("checks: {passed}");
    } else {
        for p in problems {
            println!("PROBLEM: {p}");
        }
    }
}

/// Writes the JSON report and says so; fails when there were problems.
pub fn write_report(out: &Path, report: &Value, problems: usize) -> Res<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(report)? + "\n")?;
    println!("wrote {}", out.display());
    if problems == 0 {
        Ok(())
    } else {
        Err(format!("{problems} problem(s), see above").into())
    }
}
