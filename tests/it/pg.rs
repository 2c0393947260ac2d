//! A throwaway PostgreSQL cluster for the tests: `initdb` in a temporary
//! folder, the server on a free loopback port, one fresh database per test.
//!
//! `CLICKUP_BRIDGE_TEST_STORE=postgres` makes [`crate::support::settings`]
//! put every test daemon's store in its own database of the shared cluster,
//! started once per test binary. The binaries come from
//! `CLICKUP_BRIDGE_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else
//! `pg_config --bindir`. initdb refuses root, so as root the cluster runs as
//! `nobody`. The server gets SIGINT (fast shutdown) when the test process
//! ends (`setpriv --pdeathsig`); folders of earlier runs are removed at start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether this run puts test stores in PostgreSQL.
pub fn enabled() -> bool {
    std::env::var("CLICKUP_BRIDGE_TEST_STORE").is_ok_and(|v| v == "postgres")
}

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn pid_alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

/// A running cluster.
pub struct Cluster {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its data folder.
    pub data: PathBuf,
    bin: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The cluster of this test process, started on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| Cluster::start(true))
}

impl Cluster {
    /// Starts a cluster. `tied`: the server stops when this process ends
    /// (else the caller stops it, e.g. to restart it with `pg_ctl`).
    pub fn start(tied: bool) -> Cluster {
        let bin = bin_dir().unwrap_or_else(|| {
            panic!(
                "CLICKUP_BRIDGE_TEST_STORE=postgres needs the PostgreSQL server binaries \
                 (initdb, postgres); install Debian's postgresql package or set CLICKUP_BRIDGE_PG_BIN"
            )
        });
        let root = std::env::temp_dir().join("clickup-bridge-test-pg");
        std::fs::create_dir_all(&root).unwrap();
        for old in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = old.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().unwrap_or_default().to_owned();
            if !pid_alive(&pid) {
                let _ = std::fs::remove_dir_all(old.path());
            }
        }
        let port = free_port();
        let dir = root.join(format!("{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "65534:65534"])
                .arg(&root)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of {} to nobody failed", root.display());
        }
        let data = dir.join("data");
        let out = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             max_connections = 400\nshared_buffers = '32MB'\n",
            dir.display()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
        if tied {
            // The server is a child of a thread that lives as long as the
            // process (PR_SET_PDEATHSIG fires when the spawning thread ends).
            let (program, data2) = (bin.join("postgres"), data.clone());
            std::thread::spawn(move || {
                let mut cmd = Command::new("setpriv");
                cmd.arg("--pdeathsig=INT");
                if is_root() {
                    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
                }
                let child = cmd
                    .arg(program)
                    .arg("-D")
                    .arg(data2)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn();
                if let Ok(mut child) = child {
                    let _ = child.wait();
                }
            });
        } else {
            let cluster = Cluster {
                port,
                data: data.clone(),
                bin: bin.clone(),
            };
            cluster.pg_ctl(&["start", "-w", "-l"], Some(&dir.join("log")));
        }
        let cluster = Cluster { port, data, bin };
        cluster.wait_ready(Duration::from_secs(60));
        cluster
    }

    /// Runs `pg_ctl ARGS [path] -D data` and asserts it succeeded.
    pub fn pg_ctl(&self, args: &[&str], path: Option<&Path>) {
        let mut cmd = as_owner(&self.bin.join("pg_ctl"));
        cmd.args(args);
        if let Some(p) = path {
            cmd.arg(p);
        }
        let out = cmd
            .arg("-D")
            .arg(&self.data)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until the server accepts connections.
    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates a fresh database; returns its URL.
    pub fn new_database(&self) -> String {
        let name = format!("t{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}
