//! A throwaway PostgreSQL cluster for the benches: `initdb` in a temporary
//! folder, the server on a free loopback port, one fresh database per run of
//! the daemon. The server settings are PostgreSQL's defaults (fsync on,
//! `synchronous_commit = on`) but for where it listens.
//!
//! The binaries come from `CLICKUP_BRIDGE_PG_BIN`, else the newest
//! `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`. initdb refuses
//! root, so as root the cluster runs as `nobody`. The server gets SIGINT
//! (fast shutdown) when the bench process ends (`setpriv --pdeathsig`), and
//! `Drop` stops it with `pg_ctl stop -m fast` before that.
//!
//! Included by `common.rs` (`#[path = "pg.rs"] pub mod pg;`).

use super::{BoxError, Res};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The PostgreSQL binaries folder, if there is one.
pub fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("CLICKUP_BRIDGE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(dir) = versions.pop() {
        return Some(dir);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir.join("initdb").is_file().then_some(dir)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A command of the cluster, run as its owner (`nobody` under root).
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs `cmd` and fails with its stderr unless it exits 0.
fn run(mut cmd: Command, what: &str) -> Res<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into())
    }
}

/// A running cluster; stopped on drop.
pub struct Cluster {
    /// Its port on 127.0.0.1.
    pub port: u16,
    data: PathBuf,
    bin: PathBuf,
    server: Child,
    next_db: std::sync::atomic::AtomicU32,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// initdb, start the server, wait until it accepts connections.
    pub fn start() -> Res<Cluster> {
        let bin = bin_dir().ok_or(
            "--store postgres needs the PostgreSQL server binaries (initdb, postgres): \
             install Debian's postgresql package or set CLICKUP_BRIDGE_PG_BIN",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("clickup-bridge-bench-pg-")
            .tempdir()?;
        if is_root() {
            let mut chown = Command::new("chown");
            chown.args(["-R", "65534:65534"]).arg(dir.path());
            run(chown, "chown of the cluster folder to nobody")?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let data = dir.path().join("data");
        let mut initdb = as_owner(&bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]);
        run(initdb, "initdb")?;
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n",
            dir.path().display()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        std::io::Write::write_all(&mut f, conf.as_bytes())?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut cmd = Command::new("setpriv");
        cmd.arg("--pdeathsig=INT");
        if is_root() {
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        }
        // setpriv execs postgres: the child is the postmaster.
        let server = cmd
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.join("postgres").display()))?;
        let mut cluster = Cluster {
            port,
            data,
            bin,
            server,
            next_db: std::sync::atomic::AtomicU32::new(0),
            dir,
        };
        cluster.wait_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    fn wait_ready(&mut self, within: Duration) -> Res<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.server.try_wait()? {
                return Err(format!(
                    "PostgreSQL exited at start ({status}):\n{}",
                    self.log_tail()
                )
                .into());
            }
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "PostgreSQL on port {} not ready after {} s:\n{}",
                    self.port,
                    within.as_secs(),
                    self.log_tail()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The postmaster's pid (its children are the backends and the
    /// background processes).
    pub fn postmaster_pid(&self) -> u32 {
        self.server.id()
    }

    /// Creates a fresh database; returns its URL.
    pub fn new_database(&self) -> Res<String> {
        let n = self
            .next_db
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("bench{n}");
        let mut createdb = Command::new(self.bin.join("createdb"));
        createdb
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", &name]);
        run(createdb, "createdb")?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// Stops the server (fast shutdown) and waits for it.
    pub fn stop(&mut self) -> Result<(), BoxError> {
        if self.server.try_wait()?.is_some() {
            return Ok(());
        }
        let mut pg_ctl = as_owner(&self.bin.join("pg_ctl"));
        pg_ctl
            .args(["stop", "-m", "fast", "-w", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null());
        let stopped = run(pg_ctl, "pg_ctl stop");
        if stopped.is_err() {
            let _ = self.server.kill();
        }
        let _ = self.server.wait();
        stopped
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
