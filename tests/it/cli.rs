//! The admin client commands against a running daemon, and what the logs
//! never contain.

use crate::lifecycle::Daemon;
use crate::support::*;
use std::process::Command;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "cli-admin-token-123";

fn cli(admin: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    // The admin flags belong to `events` / `deliveries`: after the command.
    run_output(
        Command::new(bin())
            .args(&args[..1])
            .args(["--admin", admin, "--token", token])
            .args(&args[1..])
            .env_clear(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_and_replays_through_the_admin_api() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "sources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\ntargets:\n  t:\n    type: http\n    url: {}/in\n    retry: {{attempts: 1}}\nroutes:\n  - name: r\n    source: clickup\n    send:\n      - target: t\n        body: {{}}\n",
        server.uri()
    );
    std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
    let mut d = Daemon::start_on(dir.path(), 0, &[("CLICKUP_BRIDGE_ADMIN_TOKEN", TOKEN)]);
    d.wait_for_log("clickup-bridge serving");
    let port = d.port;
    let admin = format!("http://127.0.0.1:{}", d.admin_port);

    let client = reqwest::Client::new();
    let body = clickup_event(1);
    let mut req = client
        .post(format!("http://127.0.0.1:{port}/hooks/clickup"))
        .body(body.clone());
    for (k, v) in clickup_headers(CLICKUP_SECRET, &body) {
        req = req.header(k, v);
    }
    let event: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
    let event_id = event["event_id"].as_str().unwrap().to_owned();

    let dead: serde_json::Value = wait_for(20, "a dead delivery", || {
        let admin = admin.clone();
        async move {
            let (code, out, _) = cli(
                &admin,
                TOKEN,
                &["deliveries", "list", "--status", "dead", "--json"],
            );
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            (code == 0 && !v["items"].as_array()?.is_empty()).then_some(v)
        }
    })
    .await;
    let delivery_id = dead["items"][0]["id"].as_str().unwrap().to_owned();

    let (code, out, _) = cli(&admin, TOKEN, &["events", "list"]);
    assert_eq!(code, 0);
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("ID"), "{out}");
    assert!(lines.next().unwrap().starts_with(&event_id), "{out}");

    let (code, out, _) = cli(&admin, TOKEN, &["events", "show", &event_id]);
    assert_eq!(code, 0);
    assert!(out.contains("routes    r"), "{out}");
    assert!(out.contains(&delivery_id), "{out}");
    assert!(
        out.contains("\"taskStatusUpdated\""),
        "payload shown: {out}"
    );

    let (code, out, _) = cli(&admin, TOKEN, &["deliveries", "show", &delivery_id]);
    assert_eq!(code, 0);
    assert!(out.contains("status       dead"), "{out}");
    assert!(out.contains("HTTP 500; gave up after 1 attempts"), "{out}");

    let (code, _, err) = cli(&admin, "wrong", &["events", "list"]);
    assert_eq!(code, 2);
    assert!(err.contains("refused the token"), "{err}");

    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    // A bulk replay shows its count and needs a yes; a script says --yes.
    let (code, out, err) = cli(
        &admin,
        TOKEN,
        &["deliveries", "replay", "--all-dead", "--target", "t"],
    );
    assert_eq!(code, 2, "{out}");
    assert_eq!(
        err.trim(),
        "clickup-bridge: 1 dead deliveries match; nothing was replayed (add --yes to replay them without asking)"
    );
    let (code, out, _) = cli(
        &admin,
        TOKEN,
        &["deliveries", "replay", "--status", "delivered", "--yes"],
    );
    assert_eq!(
        (code, out.trim()),
        (0, "no delivered deliveries match; nothing replayed")
    );
    let (code, out, _) = cli(
        &admin,
        TOKEN,
        &[
            "deliveries",
            "replay",
            "--all-dead",
            "--target",
            "t",
            "--yes",
        ],
    );
    assert_eq!((code, out.trim()), (0, "replayed 1"));
    wait_for(20, "the replayed delivery", || {
        let admin = admin.clone();
        let id = delivery_id.clone();
        async move {
            let (_, out, _) = cli(&admin, TOKEN, &["deliveries", "show", &id, "--json"]);
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            (v["status"] == "delivered").then_some(())
        }
    })
    .await;
    let (code, _, err) = cli(&admin, TOKEN, &["deliveries", "replay"]);
    assert_eq!(code, 2, "an id or --all-dead is needed");
    assert!(err.contains("give a delivery id, or --all-dead"), "{err}");
    // The reader of a listing goes away before it is written (`... | head
    // -1`): a quiet exit, no panic. Closing our end of the pipe before the
    // child writes makes its write fail every time.
    let mut child = Command::new(bin())
        .args(["deliveries", "--admin", &admin, "--token", TOKEN, "list"])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    d.signal("-TERM");
    assert_eq!(d.wait_exit(), 0);
}

/// Secrets, tokens and signatures never reach the logs, even at debug level
/// and when a delivery to a secret URL fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_secrets_tokens_or_signatures() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string("bad"))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"id\":\"t1\"}"))
        .mount(&server)
        .await;
    let secrets = [
        CLICKUP_SECRET,
        "whsec_stripe_SECRET_42",
        "SLACKPATHSECRET",
        "pk_CLICKUPTOKENSECRET",
        "JIRATOKENSECRET",
        "ADMINTOKENSECRET",
    ];
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "sources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\n  stripe:\n    verify: stripe\n    secret: whsec_stripe_SECRET_42\ntargets:\n  slack:\n    type: slack\n    webhook_url: http://127.0.0.1:1/services/T0/B0/SLACKPATHSECRET\n    retry: {{attempts: 1}}\n  cu:\n    type: clickup\n    token: pk_CLICKUPTOKENSECRET\n    base_url: {uri}/api/v2\n  jira:\n    type: jira\n    base_url: {uri}\n    email: a@b.c\n    api_token: JIRATOKENSECRET\nroutes:\n  - name: all\n    source: clickup\n    enrich: [task]\n    enrich_via: cu\n    send:\n      - target: slack\n        text: hi\n      - target: jira\n        action: comment\n        issue: OPS-1\n        text: hi\n  - name: paid\n    source: stripe\n    send:\n      - target: cu\n        action: update_task\n        task_id: t1\n        status: paid\n",
        uri = server.uri()
    );
    std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
    let mut d = Daemon::start_on(
        dir.path(),
        0,
        &[
            ("CLICKUP_BRIDGE_ADMIN_TOKEN", "ADMINTOKENSECRET"),
            ("RUST_LOG", "debug"),
        ],
    );
    d.wait_for_log("clickup-bridge serving");
    let port = d.port;
    let client = reqwest::Client::new();
    let body = serde_json::to_vec(
        &serde_json::json!({"event": "taskCreated", "task_id": "t1", "webhook_id": "w"}),
    )
    .unwrap();
    let headers = clickup_headers(CLICKUP_SECRET, &body);
    let mut req = client
        .post(format!("http://127.0.0.1:{port}/hooks/clickup"))
        .body(body.clone());
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status().as_u16(), 200);
    let bad = client
        .post(format!("http://127.0.0.1:{port}/hooks/clickup"))
        .header("X-Signature", "ab".repeat(32))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 403);
    let stripe_body = br#"{"id":"evt_s1","type":"invoice.paid"}"#;
    let stripe = stripe_headers("whsec_stripe_SECRET_42", stripe_body, now());
    let mut req = client
        .post(format!("http://127.0.0.1:{port}/hooks/stripe"))
        .body(stripe_body.to_vec());
    for (k, v) in &stripe {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status().as_u16(), 200);
    // The slack delivery fails on a closed port (its URL is a secret), the
    // Jira one with a 400, the ClickUp one succeeds.
    d.wait_for_all(&["connection failed", "HTTP 400", "\"outcome\":\"delivered\""]);
    d.signal("-TERM");
    assert_eq!(d.wait_exit(), 0);
    let logs = d.seen.join("\n");
    for s in secrets {
        assert!(!logs.contains(s), "{s} appears in the logs:\n{logs}");
    }
    assert!(
        !logs.contains(&headers[0].1),
        "the ClickUp signature appears in the logs"
    );
    assert!(
        !logs.contains(&stripe[0].1),
        "the Stripe signature appears in the logs"
    );
    assert!(
        !logs.contains(&"ab".repeat(32)),
        "a rejected signature appears in the logs"
    );
}

/// Every error a user meets at start is said once, with what to do: a
/// taken port, a bad address, a missing store folder, a missing routes file,
/// an unset secret, a routes file with mistakes.
#[test]
fn startup_errors_are_said_once_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("routes.yaml"),
        "sources:\n  c: {verify: clickup, secret: \"${CLICKUP_WEBHOOK_SECRET}\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "targets:\n  s: {type: slack, webhok_url: https://hooks.slack.com/x}\n",
    )
    .unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let ok_store = format!("sqlite://{d}/x.db");
    // (environment changes, routes file, the one message expected)
    type Case<'a> = (Vec<(&'a str, String)>, &'a str, String);
    let cases: Vec<Case> = vec![
        (
            vec![("CLICKUP_BRIDGE_LISTEN", format!("127.0.0.1:{port}"))],
            "routes.yaml",
            format!("cannot listen on 127.0.0.1:{port} (setting listen): the address is already in use; stop the other process or choose another address"),
        ),
        (
            vec![("CLICKUP_BRIDGE_ADMIN_LISTEN", "nonsense".into())],
            "routes.yaml",
            "cannot listen on nonsense (setting admin_listen): invalid socket address; check the address (host:port)".into(),
        ),
        (
            vec![("CLICKUP_BRIDGE_STORE", format!("sqlite://{d}/nodir/x.db"))],
            "routes.yaml",
            format!("cannot open the store sqlite://{d}/nodir/x.db: the folder {d}/nodir of the SQLite store does not exist; create it (mkdir -p {d}/nodir) or fix the store setting"),
        ),
        (
            vec![],
            "nope.yaml",
            format!("the routes file has errors; fix them and start again:\n{d}/nope.yaml:1:1: cannot read the routes file: No such file or directory (os error 2); pass --routes FILE or set routes in the settings"),
        ),
        (
            vec![("CLICKUP_WEBHOOK_SECRET", String::new())],
            "routes.yaml",
            format!("the routes file has errors; fix them and start again:\n{d}/routes.yaml:2:32: environment variable CLICKUP_WEBHOOK_SECRET is not set; set it, or write ${{CLICKUP_WEBHOOK_SECRET:-default}}"),
        ),
        (
            vec![],
            "bad.yaml",
            format!("the routes file has errors; fix them and start again:\n{d}/bad.yaml:2:20: unknown key \"webhok_url\" in target \"s\"; did you mean \"webhook_url\"?"),
        ),
    ];
    for (env, routes, expected) in cases {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--routes", &format!("{d}/{routes}")])
            .current_dir(dir.path())
            .env_clear()
            .env("CLICKUP_BRIDGE_LISTEN", "127.0.0.1:0")
            .env("CLICKUP_BRIDGE_ADMIN_LISTEN", "127.0.0.1:0")
            .env("CLICKUP_BRIDGE_STORE", &ok_store)
            .env("CLICKUP_BRIDGE_LOG_FORMAT", "json")
            .env("CLICKUP_WEBHOOK_SECRET", "x");
        for (k, v) in &env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let (code, _, err) = run_output(&mut cmd);
        let message: Vec<&str> = err.lines().filter(|l| !l.starts_with('{')).collect();
        assert_eq!(code, 2, "{err}");
        assert_eq!(message.join("\n"), format!("clickup-bridge: {expected}"));
    }
    drop(taken);
}

/// `--help` a person can use: every command shows an example; the admin
/// client commands do not offer --routes; serve names its listeners, the
/// environment overrides and where secrets come from.
#[test]
fn help_has_examples_and_only_the_options_a_command_uses() {
    let help = |args: &[&str]| {
        let (code, out, _) = run_output(Command::new(bin()).args(args).arg("--help").env_clear());
        assert_eq!(code, 0, "{args:?}");
        out
    };
    for args in [
        &["serve"][..],
        &["check"],
        &["sign"],
        &["simulate"],
        &["test"],
        &["events", "list"],
        &["events", "show"],
        &["deliveries", "list"],
        &["deliveries", "show"],
        &["deliveries", "replay"],
        &["clickup", "webhooks"],
        &["store", "copy"],
    ] {
        let out = help(args);
        assert!(out.contains("Example"), "{args:?} has no example:\n{out}");
        let reads_routes = !matches!(args[0], "events" | "deliveries" | "store");
        assert_eq!(out.contains("--routes"), reads_routes, "{args:?}:\n{out}");
    }
    let out = help(&["deliveries", "list"]);
    for heading in ["Filters:", "Connection:", "Output:"] {
        assert!(out.contains(heading), "{out}");
    }
    let out = help(&["serve"]);
    for needle in [
        "listen",
        "admin_listen",
        "CLICKUP_BRIDGE_",
        "environment",
        "/hooks/{source}",
    ] {
        assert!(out.contains(needle), "serve --help lacks {needle}:\n{out}");
    }
}

/// Rejects a JSON object with a key twice (serde_json keeps the last).
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<UniqueKeys, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(k) = m.next_key::<String>()? {
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate key {k}")));
                    }
                    m.next_value::<UniqueKeys>()?;
                }
                Ok(UniqueKeys)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<UniqueKeys, A::Error> {
                while s.next_element::<UniqueKeys>()?.is_some() {}
                Ok(UniqueKeys)
            }
            fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
        }
        d.deserialize_any(V)
    }
}

/// Every log line is one JSON object with unique keys, so `jq` sees the
/// delivery's target (once tracing's module path, also called `target`,
/// shadowed it), and a list of routes is a JSON array.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_is_json_with_unique_keys() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "sources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\ntargets:\n  hook:\n    type: http\n    url: {}/in\n    retry: {{attempts: 3, initial: 0.05, max: 0.1}}\nroutes:\n  - name: first\n    source: clickup\n    send:\n      - target: hook\n        body: {{n: 1}}\n  - name: second\n    source: clickup\n    send:\n      - target: hook\n        body: {{n: 2}}\n",
        server.uri()
    );
    std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
    // `event routed` (with its list of routes) is at debug.
    let mut d = Daemon::start_on(
        dir.path(),
        0,
        &[("RUST_LOG", "info,clickup_bridge::route=debug")],
    );
    d.wait_for_log("clickup-bridge serving");
    let body = clickup_event(5);
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/hooks/clickup", d.port))
        .body(body.clone());
    for (k, v) in clickup_headers(CLICKUP_SECRET, &body) {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
    d.wait_for_all(&["\"outcome\":\"retry\"", "\"outcome\":\"delivered\""]);
    d.signal("-TERM");
    assert_eq!(d.wait_exit(), 0);
    for line in &d.seen {
        if let Err(e) = serde_json::from_str::<UniqueKeys>(line) {
            panic!("not one JSON object with unique keys ({e}): {line}");
        }
    }
    let lines: Vec<serde_json::Value> = d
        .seen
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let attempt = lines
        .iter()
        .find(|l| l["message"] == "delivery attempt")
        .unwrap();
    assert_eq!(attempt["target"], "hook", "{attempt}");
    assert_eq!(attempt["module"], "clickup_bridge::deliver", "{attempt}");
    let routed = lines
        .iter()
        .find(|l| l["message"] == "event routed")
        .unwrap();
    assert_eq!(
        routed["routes"],
        serde_json::json!(["first", "second"]),
        "{routed}"
    );
    let opened = lines
        .iter()
        .find(|l| l["message"] == "store opened")
        .unwrap();
    let store = opened["store"].as_str().unwrap();
    assert!(
        store.starts_with("sqlite:///") && store.ends_with("/clickup-bridge.db"),
        "the absolute path of the store: {store}"
    );
}

/// The commands' own errors are said once with what to do: an admin API
/// that does not answer, and `clickup webhooks` whose token comes from a
/// routes.yaml that needs a variable (only the token's: it uses nothing
/// else).
#[test]
fn command_errors_name_the_cause_once_with_what_to_do() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, err) = run_output(
        Command::new(bin())
            .args([
                "deliveries",
                "list",
                "--admin",
                &format!("http://127.0.0.1:{port}"),
            ])
            .env_clear(),
    );
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        format!(
            "clickup-bridge: cannot reach the admin API at http://127.0.0.1:{port}: Connection refused (os error 111); is the daemon running there? pass --admin URL or set admin_listen"
        )
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, _, err) = run_output(
        Command::new(bin())
            .args(["clickup", "webhooks", "list", "--team", "1"])
            .current_dir(root)
            .env_clear(),
    );
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        format!(
            "clickup-bridge: the ClickUp token comes from routes.yaml, which does not load: {}/routes.yaml:41:12: environment variable CLICKUP_API_TOKEN is not set; set it, or write ${{CLICKUP_API_TOKEN:-default}}; fix it, or pass --token",
            root.display()
        )
    );
}
