//! Hostile senders and hostile values: strict JSON at intake, paths that stay
//! inside their target, bounded rendering, bounded senders.

use crate::support::*;

/// A lone surrogate (a JavaScript-truncated emoji), invalid UTF-8 and nesting
/// deeper than the limit are refused 400 before anything is stored, whatever
/// part of the body the source's identity reads.
#[tokio::test]
async fn invalid_json_anywhere_in_the_body_is_400_and_not_stored() {
    let app = spawn_app(ROUTES).await;
    let deep = format!(
        r#"{{"event":"taskCreated","webhook_id":"w","task_id":"t","deep":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let mut bad_utf8 = br#"{"event":"taskCreated","webhook_id":"w","task_id":"caf"#.to_vec();
    bad_utf8.extend_from_slice(&[0xC3, 0x28, b'"', b'}']);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "lone surrogate",
            br#"{"event":"taskCreated","webhook_id":"w","task_id":"t","name":"\ud83d"}"#.to_vec(),
        ),
        ("invalid utf-8", bad_utf8),
        ("too deep", deep.into_bytes()),
    ];
    for (name, body) in cases {
        let (status, json) = app
            .post(
                "clickup",
                body.clone(),
                &clickup_headers(CLICKUP_SECRET, &body),
            )
            .await;
        assert_eq!(status, 400, "{name}: {json}");
        assert!(
            json["error"]
                .as_str()
                .is_some_and(|e| e.contains("not valid JSON")),
            "{name}: {json}"
        );
        let t = now();
        let stripe = String::from_utf8_lossy(&body)
            .replace(r#""event":"taskCreated""#, r#""id":"evt_1","type":"x""#)
            .into_bytes();
        // from_utf8_lossy repaired the UTF-8 case: keep the raw bytes there.
        let stripe = if name == "invalid utf-8" {
            body.clone()
        } else {
            stripe
        };
        let (status, json) = app
            .post(
                "stripe",
                stripe.clone(),
                &stripe_headers("whsec_test_secret", &stripe, t),
            )
            .await;
        assert_eq!(status, 400, "stripe {name}: {json}");
    }
    let good = clickup_event(1);
    let (status, json) = app
        .post(
            "clickup",
            good.clone(),
            &clickup_headers(CLICKUP_SECRET, &good),
        )
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    app.stop().await;
}

/// A task id of `..` would turn `POST .../task/{id}/comment` into `POST
/// /api/v2/comment`, and an http `path` of `/{{id}}` could climb above the
/// target's `url`: both deliveries are dead with the reason and nothing is
/// sent; a value that only looks like a dot segment once decoded stays one
/// encoded segment.
#[tokio::test]
async fn rendered_dot_segments_never_change_the_request_path() {
    use clickup_bridge::store::DeliveryStatus;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": "1"})))
        .mount(&server)
        .await;
    let routes = format!(
        "version: 1\nsources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\n\
targets:\n  cu:\n    type: clickup\n    token: pk_1\n    base_url: {uri}/api/v2\n  \
hook:\n    type: http\n    url: {uri}/base/in\n\
routes:\n  - name: r\n    source: clickup\n    send:\n      - target: cu\n        action: comment\n        task_id: '{{{{event.task_id}}}}'\n        text: hi\n      \
- target: hook\n        path: '/x/{{{{event.task_id}}}}'\n        body: {{a: 1}}\n",
        uri = server.uri()
    );
    let app = spawn_app(&routes).await;
    for bad in ["..", ".", "%2e%2E", ".%2e"] {
        let body = serde_json::to_vec(&serde_json::json!({
            "event": "taskCreated", "webhook_id": "w", "task_id": bad,
            "history_items": [{"id": format!("h-{bad}")}],
        }))
        .unwrap();
        let id = app.post_clickup(&body).await;
        let rows = app.settled(&id, 10).await;
        assert_eq!(rows.len(), 2);
        for d in &rows {
            // "%2e%2E" percent-encodes to "%252e%252E": one harmless segment.
            if bad.contains('%') {
                assert_eq!(d.status, DeliveryStatus::Delivered, "{bad}: {d:?}");
            } else {
                assert_eq!(d.status, DeliveryStatus::Dead, "{bad}: {d:?}");
                assert_eq!(d.attempts, 1);
                let err = d.last_error.clone().unwrap_or_default();
                assert!(
                    err.contains("request path") || err.contains("outside the target"),
                    "{bad}: {err}"
                );
            }
        }
    }
    let paths: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    let mut paths = paths;
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/v2/task/%252e%252E/comment",
            "/api/v2/task/.%252e/comment",
            "/base/in/x/%252e%252E",
            "/base/in/x/.%252e",
        ]
    );
    app.stop().await;
}

/// The poison template of the security probe (a partial that calls itself)
/// is refused by `check` with the cycle named, instead of overflowing the
/// stack when the first event arrives.
#[test]
fn check_refuses_a_self_recursive_partial() {
    let dir = tempfile::tempdir().unwrap();
    let routes = "version: 1\nsources:\n  s:\n    verify: header\n    header: X-T\n    secret: t\n\
targets:\n  h:\n    type: http\n    url: http://127.0.0.1:9/in\n\
routes:\n  - name: r\n    source: s\n    send:\n      - target: h\n        body:\n          text: '{{#*inline \"p\"}}a{{> p}}{{/inline}}{{> p}}'\n";
    std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    let (code, out, err) = run_output(
        std::process::Command::new(bin())
            .args(["check", "--routes", "routes.yaml"])
            .current_dir(dir.path())
            .env_clear(),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        (out.clone() + &err).contains("partial \"p\" calls itself (p -> p)"),
        "{out}{err}"
    );
}

/// A delivery during which the process was killed three times (what a
/// template that crashes the daemon does) is made dead with the reason on
/// the next start instead of being tried into the same crash again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_stopped_the_process_three_times_is_dead_not_retried() {
    use crate::lifecycle::Daemon;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // A target that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().map_while(Result::ok) {
                held.push(s);
                accepted.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "version: 1\nsources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\n\
targets:\n  t:\n    type: http\n    url: http://{target}/in\n    timeout: 60\n\
routes:\n  - name: r\n    source: clickup\n    send:\n      - target: t\n        body: {{a: 1}}\n"
    );
    std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
    let mut d = Daemon::start_on(dir.path(), 0, &[("RUST_LOG", "info")]);
    d.wait_for_log("clickup-bridge serving");
    let body = clickup_event(7);
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/hooks/clickup", d.port))
        .body(body.clone());
    for (k, v) in clickup_headers(CLICKUP_SECRET, &body) {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
    for kill in 1..=3 {
        wait_for(20, "the delivery in flight", || {
            let n = accepted.load(Ordering::SeqCst);
            async move { (n >= kill).then_some(()) }
        })
        .await;
        d.signal("-KILL");
        d.wait_exit();
        if kill < 3 {
            d = Daemon::start_on(dir.path(), 0, &[("RUST_LOG", "info")]);
            d.wait_for_log("clickup-bridge serving");
        }
    }
    let mut d = Daemon::start_on(dir.path(), 0, &[("RUST_LOG", "info")]);
    d.wait_for_log("the process stopped 3 times while this delivery was being rendered or sent");
    d.signal("-TERM");
    assert_eq!(d.wait_exit(), 0);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "tried again after the third stop"
    );
    let store = clickup_bridge::store::Store::open(
        &clickup_bridge::settings::StoreLocation::Sqlite(dir.path().join("clickup-bridge.db")),
    )
    .await
    .unwrap();
    let rows = store
        .deliveries(&clickup_bridge::store::DeliveryFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, clickup_bridge::store::DeliveryStatus::Dead);
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("replay it"),
        "{:?}",
        rows[0].last_error
    );
}

/// Opens a connection that declares a body of `len` bytes, sends `sent` of
/// them and then nothing.
fn stalled_request(url: &str, len: usize, sent: &[u8]) -> std::net::TcpStream {
    use std::io::Write;
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /hooks/clickup HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    s.write_all(sent).unwrap();
    s
}

/// Reads the status line of the answer (or "" when the connection closes
/// without one).
fn status_line(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A sender that declares Content-Length 1048576 and sends nothing is cut
/// with 408 within `body_timeout`; a hundred of them at once do not keep
/// the admin listener (or the webhook listener's own probe) from answering;
/// a body cut short is never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_are_cut_with_408_and_the_admin_listener_keeps_answering() {
    let app = spawn_app_with(ROUTES, |s| {
        s.max_body = 2 * 1024 * 1024;
        s.http.body_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let url = app.url.clone();
    let started = std::time::Instant::now();
    let flood = tokio::task::spawn_blocking(move || {
        let mut conns: Vec<_> = (0..100)
            .map(|_| stalled_request(&url, 1_048_576, b""))
            .collect();
        for c in &mut conns {
            c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
        }
        conns.iter_mut().map(status_line).collect::<Vec<_>>()
    });
    // While the flood holds its connections, both probes answer at once.
    for probe in [
        format!("{}/healthz", app.admin_url),
        format!("{}/readyz", app.admin_url),
        format!("{}/healthz", app.url),
    ] {
        let r = app
            .client
            .get(&probe)
            .timeout(std::time::Duration::from_millis(900))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{probe}: {e}"));
        assert_eq!(r.status(), 200, "{probe}");
    }
    let answers = flood.await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        answers.iter().all(|l| l.starts_with("HTTP/1.1 408")),
        "{answers:?}"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(5),
        "cut after {elapsed:?}"
    );

    // Half a signed body, then the sender goes away: nothing is stored.
    let body = clickup_event(1);
    let (half, _) = body.split_at(body.len() / 2);
    let mut s = stalled_request(&app.url, body.len(), half);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let line = status_line(&mut s);
    assert!(line.is_empty() || line.starts_with("HTTP/1.1 4"), "{line}");
    assert_eq!(app.store.count_events().await.unwrap(), 0);
    let id = app.post_clickup(&body).await;
    assert!(id.starts_with("evt_"));
    app.stop().await;
}

/// The bearer scheme is case-insensitive; a malformed cursor and a limit
/// above the maximum are 400s that say what is expected; an admin token of
/// only whitespace is refused before anything listens.
#[tokio::test]
async fn admin_small_ones_scheme_cursor_limit_and_blank_token() {
    let app = spawn_app_with(ROUTES, |s| s.admin_token = Some("t0k".into())).await;
    let get = |path: &str, auth: &str| {
        let req = app
            .client
            .get(format!("{}{path}", app.admin_url))
            .header("Authorization", auth);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    for auth in ["Bearer t0k", "bearer t0k", "BEARER  t0k"] {
        assert_eq!(get("/api/v1/events", auth).await.0, 200, "{auth}");
    }
    for auth in ["Basic t0k", "t0k", "Bearer", "Bearer t0", "Bearert0k"] {
        assert_eq!(get("/api/v1/events", auth).await.0, 401, "{auth}");
    }
    for (path, needle) in [
        ("/api/v1/events?cursor=nope", "cursor"),
        ("/api/v1/events?cursor=dlv_0123", "(evt_...)"),
        ("/api/v1/deliveries?cursor=evt_0123", "(dlv_...)"),
        ("/api/v1/deliveries?cursor=dlv_' OR 1=1", "cursor"),
        ("/api/v1/events?limit=1001", "1 to 1000"),
        ("/api/v1/deliveries?limit=0", "1 to 1000"),
    ] {
        let (status, json) = get(path, "Bearer t0k").await;
        assert_eq!(status, 400, "{path}: {json}");
        assert!(
            json["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{path}: {json}"
        );
    }
    let (status, json) = get("/api/v1/events?limit=1000&cursor=evt_01a2", "Bearer t0k").await;
    assert_eq!(status, 200, "{json}");
    app.stop().await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("routes.yaml"), ROUTES).unwrap();
    let (code, out, err) = run_output(
        std::process::Command::new(bin())
            .arg("serve")
            .current_dir(dir.path())
            .env_clear()
            .env("CLICKUP_BRIDGE_ADMIN_TOKEN", " \t ")
            .env("CLICKUP_BRIDGE_LISTEN", "127.0.0.1:0")
            .env("CLICKUP_BRIDGE_ADMIN_LISTEN", "127.0.0.1:0"),
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("admin_token: it is only whitespace"), "{err}");
}

/// The new settings: body_timeout and max_connections at least 1, tls_cert
/// and tls_key together, paths resolved like the others.
#[test]
fn hardening_settings_are_checked_when_loaded() {
    use clickup_bridge::settings::Settings;
    use std::path::Path;
    let load = |vars: &[(&str, &str)]| {
        let env = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load(None, env, Path::new("/srv"))
    };
    let s = load(&[]).unwrap();
    assert_eq!(s.http.body_timeout, std::time::Duration::from_secs(5));
    assert_eq!(s.http.max_connections, 4096);
    assert_eq!(s.http.tls, None);
    for (k, v, needle) in [
        (
            "CLICKUP_BRIDGE_BODY_TIMEOUT",
            "0",
            "body_timeout must be at least 1",
        ),
        (
            "CLICKUP_BRIDGE_MAX_CONNECTIONS",
            "0",
            "max_connections must be at least 1",
        ),
        (
            "CLICKUP_BRIDGE_TLS_CERT",
            "cert.pem",
            "tls_cert and tls_key go together",
        ),
        (
            "CLICKUP_BRIDGE_TLS_KEY",
            "key.pem",
            "tls_cert and tls_key go together",
        ),
    ] {
        let e = load(&[(k, v)]).unwrap_err().to_string();
        assert!(e.contains(needle), "{k}={v}: {e}");
    }
    let s = load(&[
        ("CLICKUP_BRIDGE_BODY_TIMEOUT", "2"),
        ("CLICKUP_BRIDGE_TLS_CERT", "tls/fullchain.pem"),
        ("CLICKUP_BRIDGE_TLS_KEY", "/etc/key.pem"),
    ])
    .unwrap();
    assert_eq!(s.http.body_timeout, std::time::Duration::from_secs(2));
    let tls = s.http.tls.unwrap();
    assert_eq!(tls.cert, Path::new("/srv/tls/fullchain.pem"));
    assert_eq!(tls.key, Path::new("/etc/key.pem"));
}
