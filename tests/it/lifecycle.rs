//! The binary as an operator runs it: start, SIGTERM with a request in
//! flight, exit code, and what the logs contain.

use crate::support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The daemon binary as a child process.
pub struct Daemon {
    child: Child,
    /// Its webhook port.
    pub port: u16,
    /// Its admin port.
    pub admin_port: u16,
    lines: mpsc::Receiver<String>,
    /// Log lines read so far.
    pub seen: Vec<String>,
    /// Lines before this index were matched by `wait_for_log` already.
    matched: usize,
}

/// The port in `"key":"127.0.0.1:PORT"` of a JSON log line.
fn port_in(line: &str, key: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v[key].as_str()?.rsplit(':').next()?.parse().ok()
}

impl Daemon {
    fn start(dir: &std::path::Path, extra: &[(&str, &str)]) -> Daemon {
        std::fs::write(dir.join("routes.yaml"), ROUTES).unwrap();
        Daemon::start_on(dir, 0, extra)
    }

    /// Starts `clickup-bridge serve` in `dir` (which holds routes.yaml) on
    /// `port`; with 0 the daemon picks free ports (no race with other tests)
    /// and `port` / `admin_port` are read from its "serving" log line.
    pub fn start_on(dir: &std::path::Path, port: u16, extra: &[(&str, &str)]) -> Daemon {
        std::fs::create_dir_all(dir.join("templates")).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .current_dir(dir)
            .env_clear()
            .env("CLICKUP_BRIDGE_LISTEN", format!("127.0.0.1:{port}"))
            .env("CLICKUP_BRIDGE_ADMIN_LISTEN", "127.0.0.1:0")
            .env("CLICKUP_BRIDGE_LOG_FORMAT", "json")
            .env("CLICKUP_BRIDGE_SHUTDOWN_TIMEOUT", "10")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Daemon {
            child,
            port,
            admin_port: 0,
            lines,
            seen: Vec::new(),
            matched: 0,
        };
        // Read up to the "serving" line (or the exit) for the bound ports.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match d.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let serving = line.contains("clickup-bridge serving");
                    if serving {
                        d.port = port_in(&line, "listen").unwrap_or(port);
                        d.admin_port = port_in(&line, "admin").unwrap_or(0);
                    }
                    d.seen.push(line);
                    if serving {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        d
    }

    /// Waits (with a deadline) for a log line containing `needle` that no
    /// earlier call matched.
    pub fn wait_for_log(&mut self, needle: &str) {
        if let Some(i) = self.seen[self.matched..]
            .iter()
            .position(|l| l.contains(needle))
        {
            self.matched += i + 1;
            return;
        }
        self.matched = self.seen.len();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    self.matched = self.seen.len();
                    if hit {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "no log line with {needle:?}; saw:\n{}",
            self.seen.join("\n")
        );
    }

    /// Waits (with a deadline) until every needle appears in a log line seen
    /// so far or later, in any order.
    pub fn wait_for_all(&mut self, needles: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if needles
                .iter()
                .all(|n| self.seen.iter().any(|l| l.contains(n)))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not all of {needles:?} in:\n{}",
                self.seen.join("\n")
            );
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line);
            }
        }
    }

    /// Sends a signal (`-TERM`, `-HUP`, `-KILL`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits (with a deadline) for the process to exit; its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(l);
                }
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM stops accepting, lets the request in flight finish with 200 and
/// exits 0; the logs name the event but never the secret or the signature.
#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    d.wait_for_log("clickup-bridge serving");

    let body = clickup_event(5);
    let headers = clickup_headers(CLICKUP_SECRET, &body);
    let signature = headers[0].1.clone();
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let head = format!(
        "POST /hooks/clickup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..10]).unwrap();
    s.flush().unwrap();
    // The handler is running (and waiting for the rest of the body).
    d.wait_for_log("receiving event");

    d.signal("-TERM");
    d.wait_for_log("finishing requests in flight");
    s.write_all(&body[10..]).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    if !resp.starts_with("HTTP/1.1 200") {
        let code = d.wait_exit();
        panic!("answer {resp:?}, exit {code}, logs:\n{}", d.seen.join("\n"));
    }
    assert!(resp.contains("\"duplicate\":false"), "{resp}");

    assert_eq!(d.wait_exit(), 0, "{}", d.seen.join("\n"));
    let logs = d.seen.join("\n");
    assert!(logs.contains("event accepted"), "{logs}");
    assert!(logs.contains("evt_"), "{logs}");
    assert!(!logs.contains(CLICKUP_SECRET), "secret in logs:\n{logs}");
    assert!(!logs.contains(&signature), "signature in logs:\n{logs}");
    assert!(
        TcpStream::connect(("127.0.0.1", d.port)).is_err(),
        "still accepting after exit"
    );
}

#[test]
fn serve_refuses_a_public_admin_listener_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[("CLICKUP_BRIDGE_ADMIN_LISTEN", "0.0.0.0:0")]);
    assert_eq!(d.wait_exit(), 2);
    let logs = d.seen.join("\n");
    assert!(logs.contains("admin_token"), "{logs}");
    assert!(
        !dir.path().join("clickup-bridge.db").exists(),
        "nothing is created before refusing"
    );
}

#[test]
fn serve_refuses_a_broken_routes_file_with_its_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[("CLICKUP_BRIDGE_ROUTES", "missing.yaml")]);
    assert_eq!(d.wait_exit(), 2);
    let logs = d.seen.join("\n");
    assert!(
        logs.contains("missing.yaml:1:1: cannot read the routes file"),
        "{logs}"
    );
}

/// With `NOTIFY_SOCKET` (as systemd sets it for `Type=notify`), the daemon
/// sends READY=1 once serving, watchdog pings when `WATCHDOG_USEC` is set,
/// and STOPPING=1 on SIGTERM.
#[test]
fn systemd_notify_reports_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let sock_str = sock_path.display().to_string();
    let mut d = Daemon::start(
        dir.path(),
        &[("NOTIFY_SOCKET", &sock_str), ("WATCHDOG_USEC", "200000")],
    );
    let mut buf = [0u8; 512];
    let mut messages = Vec::new();
    let mut recv = |messages: &mut Vec<String>| {
        let n = sock.recv(&mut buf).unwrap();
        messages.push(String::from_utf8_lossy(&buf[..n]).to_string());
    };
    recv(&mut messages);
    assert!(messages[0].contains("READY=1"), "{messages:?}");
    // At 200 ms, pings come every 100 ms: wait for two.
    while messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() < 2 {
        recv(&mut messages);
    }
    d.signal("-TERM");
    while !messages.iter().any(|m| m.contains("STOPPING=1")) {
        recv(&mut messages);
    }
    assert_eq!(d.wait_exit(), 0);
}

/// SIGHUP loads routes.yaml again: a valid change takes effect (a new source
/// answers), an invalid file is refused with its diagnostics logged and the
/// running routes keep working.
#[test]
fn sighup_reloads_valid_routes_and_keeps_the_old_ones_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    d.wait_for_log("clickup-bridge serving");
    let port = d.port;
    let post = |source: &str| -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let req = format!(
            "POST /hooks/{source} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp.lines().next().unwrap_or_default().to_owned()
    };
    assert_eq!(post("extra"), "HTTP/1.1 404 Not Found");

    let with_extra = format!("{ROUTES}\n").replace(
        "routes: []",
        "  extra:\n    verify: clickup\n    secret: x\nroutes: []",
    );
    std::fs::write(dir.path().join("routes.yaml"), &with_extra).unwrap();
    d.signal("-HUP");
    d.wait_for_log("routes reloaded");
    assert_eq!(
        post("extra"),
        "HTTP/1.1 403 Forbidden",
        "the new source is served"
    );

    std::fs::write(
        dir.path().join("routes.yaml"),
        "sources:\n  extra: {verify: nope, secret: x}\n",
    )
    .unwrap();
    d.signal("-HUP");
    d.wait_for_log("reload rejected");
    assert!(
        d.seen.iter().any(|l| l.contains("unknown verify kind")),
        "{}",
        d.seen.join("\n")
    );
    assert_eq!(
        post("extra"),
        "HTTP/1.1 403 Forbidden",
        "the previous routes stay in force"
    );
    d.signal("-TERM");
    assert_eq!(d.wait_exit(), 0);
}
