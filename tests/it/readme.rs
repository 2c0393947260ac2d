//! The README's sample outputs are what a user sees: its `console` blocks
//! marked `<!-- readme-test: console -->` are run (each `$ clickup-bridge
//! ...` line, from the repository root, with examples/demo.env loaded) and
//! compared with the output shown; the worked example runs for real (the
//! sink, the daemon, the four signed events) and the sink's output must
//! contain the blocks marked `sink-completed` and `sink-paid`. `[..]` in a
//! shown line stands for any text.
//!
//! Why not trycmd: its markdown mode runs every `console` block of a file,
//! including the ones that need a running daemon and curl, and sets no
//! environment per block; the README needs both kinds side by side.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The fenced blocks following `<!-- readme-test: KIND -->` markers: the
/// next block, or for `sink-*` markers the next blocks up to the next
/// marker or heading, so one marker can cover a few output snippets.
fn marked_blocks(text: &str, kind: &str) -> Vec<String> {
    let marker = format!("<!-- readme-test: {kind} -->");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(&marker) {
        rest = &rest[i + marker.len()..];
        let Some(open) = rest.find("```") else { break };
        let body_start = rest[open..]
            .find('\n')
            .map(|n| open + n + 1)
            .unwrap_or(rest.len());
        let Some(close) = rest[body_start..].find("\n```") else {
            break;
        };
        out.push(rest[body_start..body_start + close].to_owned());
        rest = &rest[body_start + close + 4..];
    }
    out
}

/// Whether `got` matches the shown line, where `[..]` is any text.
fn line_matches(shown: &str, got: &str) -> bool {
    let parts: Vec<&str> = shown.split("[..]").collect();
    if parts.len() == 1 {
        return shown == got;
    }
    let mut at = 0;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            if !got.starts_with(p) {
                return false;
            }
            at = p.len();
        } else if i == parts.len() - 1 {
            return got.len() >= at + p.len() && got.ends_with(p);
        } else {
            match got[at..].find(p) {
                Some(j) => at += j + p.len(),
                None => return false,
            }
        }
    }
    true
}

fn lines_match(shown: &str, got: &str) -> bool {
    let shown: Vec<&str> = shown.lines().collect();
    let got: Vec<&str> = got.lines().collect();
    shown.len() == got.len() && shown.iter().zip(&got).all(|(s, g)| line_matches(s, g))
}

#[test]
fn the_readme_console_examples_print_what_they_show() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks = marked_blocks(&readme, "console");
    assert!(blocks.len() >= 2, "marked console blocks: {}", blocks.len());
    for block in blocks {
        let mut commands: Vec<(String, String)> = Vec::new();
        for line in block.lines() {
            match line.strip_prefix("$ ") {
                Some(cmd) => commands.push((cmd.to_owned(), String::new())),
                None => {
                    let (_, out) = commands.last_mut().expect("output before a command");
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        for (cmd, shown) in commands {
            let args: Vec<&str> = cmd.split_whitespace().collect();
            assert_eq!(args[0], "clickup-bridge", "only our commands run: {cmd}");
            let (_, out, err) = run_output(
                Command::new(bin())
                    .args(&args[1..])
                    .current_dir(root())
                    .env_clear()
                    .envs(demo_env()),
            );
            let got = format!("{out}{err}");
            assert!(
                lines_match(&shown, &got),
                "README shows for `{cmd}`:\n{shown}\nbut it prints:\n{got}"
            );
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a child's stdout lines into a shared buffer from a thread.
fn collect(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let out = child.stdout.take().unwrap();
    let b = buf.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let mut b = b.lock().unwrap();
            b.push_str(&line);
            b.push('\n');
        }
    });
    buf
}

/// Whether `haystack` holds the shown lines, consecutively.
fn contains_block(haystack: &str, shown: &str) -> bool {
    let hay: Vec<&str> = haystack.lines().collect();
    let want: Vec<&str> = shown.lines().collect();
    hay.windows(want.len())
        .any(|w| w.iter().zip(&want).all(|(g, s)| line_matches(s, g)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_worked_example_sends_what_it_shows() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut shown = marked_blocks(&readme, "sink-completed");
    shown.extend(marked_blocks(&readme, "sink-paid"));
    assert_eq!(shown.len(), 3, "the marked sink blocks");

    // The sink on a free port; the demo env pointed at it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut sink = Killed(
        Command::new("python3")
            .arg("-u")
            .arg(root().join("examples/sink.py"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs examples/sink.py"),
    );
    let sink_out = collect(&mut sink.0);
    let env: Vec<(String, String)> = demo_env()
        .into_iter()
        .map(|(k, v)| (k, v.replace("127.0.0.1:9999", &format!("127.0.0.1:{port}"))))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("routes.yaml"),
        std::fs::read_to_string(root().join("routes.yaml")).unwrap(),
    )
    .unwrap();
    let mut daemon = crate::lifecycle::Daemon::start_on(
        dir.path(),
        0,
        &env.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([
                (
                    "CLICKUP_BRIDGE_TEMPLATES",
                    root().join("templates").to_str().unwrap(),
                ),
                ("RUST_LOG", "info"),
            ])
            .collect::<Vec<_>>(),
    );
    daemon.wait_for_log("clickup-bridge serving");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sink_out.lock().unwrap().contains("sink listening") {
        assert!(Instant::now() < deadline, "the sink did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let client = reqwest::Client::new();
    for (source, file) in [
        ("clickup", "examples/events/clickup-task-completed.json"),
        ("clickup", "examples/events/clickup-task-created.json"),
        ("clickup", "examples/events/clickup-comment-posted.json"),
        ("stripe", "examples/events/stripe-invoice-paid.json"),
    ] {
        let (code, header, err) = run_output(
            Command::new(bin())
                .args(["sign", "--source", source, "--event", file])
                .current_dir(root())
                .env_clear()
                .envs(env.clone()),
        );
        assert_eq!(code, 0, "{err}");
        let body = std::fs::read(root().join(file)).unwrap();
        let (name, value) = header.trim().split_once(": ").unwrap();
        let answer: serde_json::Value = client
            .post(format!("http://127.0.0.1:{}/hooks/{source}", daemon.port))
            .header(name, value)
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["duplicate"], false, "{file}: {answer}");
        // The comment goes to the issue the bug created: wait until that
        // delivery is recorded (with its link), as a person would.
        if file.ends_with("created.json") {
            let admin = format!(
                "http://127.0.0.1:{}/api/v1/deliveries?route=bug-to-jira&status=delivered",
                daemon.admin_port
            );
            wait_for(20, "the Jira issue to be created", || {
                let client = client.clone();
                let admin = admin.clone();
                async move {
                    let v: serde_json::Value =
                        client.get(&admin).send().await.ok()?.json().await.ok()?;
                    (!v["items"].as_array()?.is_empty()).then_some(())
                }
            })
            .await;
        }
    }
    let out = wait_for(20, "every documented request at the sink", || {
        let out = sink_out.clone();
        let shown = shown.clone();
        async move {
            let text = out.lock().unwrap().clone();
            let all = shown.iter().all(|s| contains_block(&text, s))
                && text.contains("POST /jira/rest/api/3/issue/OPS-1/comment");
            all.then_some(text)
        }
    })
    .await;
    assert!(out.contains("POST /audit"), "{out}");
    daemon.signal("-TERM");
    assert_eq!(daemon.wait_exit(), 0);
}
