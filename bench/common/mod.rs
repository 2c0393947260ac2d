//! What the load runs `ingest.rs` and `e2e/` share: the pool of pre-built
//! signed requests, the signature check of the receivers, actix-web servers,
//! the daemon as a child process (which binary, pinned to which CPUs),
//! SQLite access, a throwaway PostgreSQL cluster (`pg.rs`), CPU and RSS from
//! /proc, the load generator (`load.rs`), percentiles and the report's last
//! steps.
//!
//! Each bench includes it with `#[path = "common/mod.rs"] mod common;`.

// Each bench uses only part of this module; to it the rest is dead code.
#![allow(dead_code)]

pub mod load;
pub mod pg;

#[allow(unused_imports)] // each bench uses part of it
pub use load::{GIVE_UP_AFTER, LoadOut, LoadSpec, Stop, loadgen_runtime, run_load};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{KeyInit, Mac};
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::{BTreeMap, HashSet};
use std::error::Error;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type HmacSha256 = hmac::Hmac<Sha256>;
pub type BoxError = Box<dyn Error + Send + Sync>;
pub type Res<T> = Result<T, BoxError>;

const SECRET: &str = "bench-secret";
/// What the in-process receivers answer: the daemon's answer's shape and size.
const BASELINE_ANSWER: &str =
    r#"{"event_id":"evt_0196a3b2c4d57e8f9a0b1c2d3e4f5a6b","duplicate":false}"#;
/// `history_items[0].id` of pool entry `i` is `ID_BASE + i`; the e2e message
/// carries it as `#N`, so the sink knows which event a message is.
pub const ID_BASE: u64 = 2_800_787_326_392_370_170;

// ---------------------------------------------------------------- requests

/// One pre-built request: exact body bytes and their signature.
pub struct Prebuilt {
    pub body: &'static [u8],
    pub signature: HeaderValue,
}

/// Builds `n` distinct compact bodies shaped like ClickUp's taskStatusUpdated
/// with a status change and a description edit, about 1.5 KB each (entry `i` has `history_items[0].id` = `ID_BASE + i`, so each has its own
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
        }, {
            "id": "2800787326392370171",
            "type": 1,
            "date": "1642736073330",
            "field": "content",
            "parent_id": "162641062",
            "data": {},
            "source": null,
            "user": {
                "id": 183,
                "username": "John",
                "email": "john@company.com",
                "color": "#7b68ee",
                "initials": "J",
                "profilePicture": null
            },
            "before": "Ship the quarterly report to finance. Collect the numbers from the regional leads, reconcile them with the ledger and flag anything that moved by more than five per cent since the last quarter. Ping the regional leads again on Wednesday if their numbers are not in.",
            "after": "Ship the quarterly report to finance. Collect the numbers from the regional leads, reconcile them with the ledger, flag anything that moved by more than five per cent since the last quarter and attach the reconciliation sheet to this task before the review on Friday. Ping the regional leads again on Wednesday if their numbers are not in, and copy the controller on anything above the threshold."
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

/// The verifying handler both benches measure: check `X-Signature`, parse
/// the body, answer like the daemon (nothing stored).
pub async fn verifying(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Some(refusal) = signature_refusal(&req, &body) {
        return refusal;
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) => {
            std::hint::black_box(&v);
            baseline_answer()
        }
        Err(_) => HttpResponse::BadRequest().finish(),
    }
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
    stop_within: Duration,
}

fn free_port() -> Res<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// How a process under test is started: which daemon binary, pinned to
/// which CPUs, at which log level, under which wrapper (valgrind).
#[derive(Clone, Debug)]
pub struct Launch {
    /// The clickup-bridge binary (`--bin`; default: the one cargo built).
    pub bin: PathBuf,
    /// `taskset -c CPUS` for the process under test; `None`: not pinned.
    pub cpus: Option<String>,
    /// The daemon's `RUST_LOG`.
    pub log: String,
    /// A command the daemon runs under (`valgrind --tool=callgrind ...`).
    pub wrapper: Vec<String>,
    /// How long the daemon may take to answer /healthz.
    pub ready_within: Duration,
    /// How long it may take to exit after SIGTERM.
    pub stop_within: Duration,
    /// e2e: the `concurrency` of the routes' sink target.
    pub sink_concurrency: u32,
}

impl Launch {
    pub fn new(bin: Option<PathBuf>, cpus: Option<String>, log: &str) -> Res<Launch> {
        let bin = bin.unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_clickup-bridge")));
        if !bin.is_file() {
            return Err(format!(
                "daemon binary {} not found: build it (cargo build --release) or give --bin PATH",
                bin.display()
            )
            .into());
        }
        Ok(Launch {
            bin,
            cpus,
            log: log.to_owned(),
            wrapper: Vec::new(),
            ready_within: Duration::from_secs(30),
            stop_within: Duration::from_secs(45),
            sink_concurrency: 32,
        })
    }

    /// `program` under `taskset -c CPUS` (when pinned) and the wrapper.
    pub fn command(&self, program: &Path) -> Command {
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(cpus) = &self.cpus {
            argv.extend(["taskset".into(), "-c".into(), cpus.into()]);
        }
        argv.extend(self.wrapper.iter().map(Into::into));
        argv.push(program.into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }
}

/// Pins this process (every thread it has and will have) to `cpus` with
/// `taskset -a -p -c`; call it before any thread is started.
pub fn pin_self(cpus: &str) -> Res<()> {
    let pid = std::process::id().to_string();
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!("cannot run taskset (util-linux) to pin the bench to CPU {cpus}: {e}")
        })?;
    if !out.status.success() {
        return Err(format!(
            "taskset -p -c {cpus} failed ({}): {}; give --no-pin to run unpinned",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

/// The CPUs this process may run on (`Cpus_allowed_list` of /proc/self/status).
pub fn allowed_cpus() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// Starts the daemon in a fresh temp dir named `tmp_prefix...` with this
/// routes.yaml and `store` (a `postgres://` URL; `None` is a SQLite file in
/// the temp dir), as `launch` says, without the caller's environment
/// variables for which `drop_env(name)` is true. Waits until it is healthy
/// (killing it if it does not get there), then gives it 300 ms to settle
/// before idle RSS is read.
pub async fn start_daemon(
    launch: &Launch,
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
    let mut cmd = launch.command(&launch.bin);
    cmd.arg("serve")
        .arg("-c")
        .arg(&settings)
        .current_dir(dir.path())
        .env("RUST_LOG", &launch.log)
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
        .map_err(|e| format!("cannot start {}: {e}", launch.bin.display()))?;
    let mut daemon = Daemon {
        child,
        addr,
        dir,
        stop_within: launch.stop_within,
    };
    if let Err(e) = daemon.wait_healthy(launch.ready_within).await {
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

    /// The log's lines at warn or above (the log is JSON).
    fn warnings(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("daemon.log"))
            .map(|t| {
                t.lines()
                    .filter(|l| {
                        !l.contains(r#""level":"INFO""#)
                            && !l.contains(r#""level":"DEBUG""#)
                            && !l.contains(r#""level":"TRACE""#)
                            // The bench's sink is on loopback on purpose.
                            && !l.contains("sends to this machine")
                    })
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A note quoting the last of them when the daemon logged a warning or
    /// an error.
    pub fn log_note(&self) -> Option<String> {
        let lines = self.warnings();
        (!lines.is_empty()).then(|| {
            format!(
                "daemon logged {} line(s) at warn or above; last:\n{}",
                lines.len(),
                lines[lines.len().saturating_sub(10)..].join("\n")
            )
        })
    }

    async fn wait_healthy(&mut self, within: Duration) -> Res<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("http://{}/healthz", self.addr);
        let deadline = Instant::now() + within;
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
                return Err(format!(
                    "daemon not healthy after {} s:\n{}",
                    within.as_secs(),
                    self.log_tail()
                )
                .into());
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
        let deadline = Instant::now() + self.stop_within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill_now();
                return Err(format!(
                    "daemon did not exit within {} s of SIGTERM:\n{}",
                    self.stop_within.as_secs(),
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

/// (utime + stime, stime) in ticks of process `pid`: all its threads, the
/// live ones and those that ended; one read of its stat file.
fn process_ticks(pid: u32) -> Option<(u64, u64)> {
    let f = stat_fields(Path::new(&format!("/proc/{pid}/stat")))?;
    let (user, sys) = (*f.get(11)?, *f.get(12)?);
    Some((user + sys, sys))
}

/// Context switches (voluntary + involuntary) of the live threads of `pid`.
fn switches(pid: u32) -> u64 {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            for l in text.lines() {
                if let Some(v) = l
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    n += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    n
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
    /// Of which in the kernel (stime).
    child_sys: u64,
    /// The children's context switches.
    child_switches: u64,
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
    /// Of `server`, the cores spent in the kernel (stime: system calls,
    /// page faults, the scheduler); 0 for an in-process server.
    pub server_sys: f64,
    /// The daemon's context switches (all threads, voluntary and not).
    pub server_switches: u64,
    /// The daemon's cores by thread name, busiest first.
    pub server_threads: Vec<(String, f64)>,
}

impl CpuUse {
    pub fn json(&self) -> Value {
        json!({
            "client_cores": self.client,
            "server_cores": self.server,
            "server_kernel_cores": self.server_sys,
            "server_context_switches": self.server_switches,
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
        let times: Vec<(u64, u64)> = children.iter().filter_map(|p| process_ticks(*p)).collect();
        let child = (!children.is_empty()).then(|| times.iter().map(|t| t.0).sum());
        let child_sys = times.iter().map(|t| t.1).sum();
        let child_switches = children.iter().map(|pid| switches(*pid)).sum();
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
            child_sys,
            child_switches,
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
            server_sys: after.child_sys.saturating_sub(before.child_sys) as f64 / ticks,
            server_switches: after.child_switches.saturating_sub(before.child_switches),
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
