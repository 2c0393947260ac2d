//! `clickup webhooks ...` against a mock ClickUp API with the documented
//! answer shapes, and the webhook health watch in the daemon.

use crate::support::*;
use serde_json::{Value, json};
use std::process::Command;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn fixture(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(rel)).unwrap()).unwrap()
}

fn webhooks(server: &MockServer, args: &[&str]) -> (i32, String, String) {
    let base = format!("{}/api/v2", server.uri());
    run_output(
        Command::new(bin())
            .args(["clickup", "webhooks"])
            .args(args)
            .args(["--routes", "/nonexistent.yaml"])
            .args(["--token", "pk_42_TOKEN", "--base-url", &base])
            .env_clear(),
    )
}

/// Team 108's webhook list (the documented answer) with `health` replaced,
/// and, with `reactivate`, the documented answer to PUT /webhook/{id}.
async fn mount_suspended(server: &MockServer, health: Value, reactivate: bool) {
    let mut listed = fixture("clickup/api/get-webhooks-response.json");
    listed["webhooks"][0]["health"] = health;
    Mock::given(method("GET"))
        .and(path("/api/v2/team/108/webhook"))
        .respond_with(ResponseTemplate::new(200).set_body_json(listed))
        .mount(server)
        .await;
    if reactivate {
        Mock::given(method("PUT"))
            .and(path("/api/v2/webhook/4b67ac88-e506-4a29-9d42-26e504e3435e"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(fixture("clickup/api/update-webhook-response.json")),
            )
            .mount(server)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_health_and_fail_count() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/team/108/webhook"))
        .and(header("authorization", "pk_42_TOKEN"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(fixture("clickup/api/get-webhooks-response.json")),
        )
        .mount(&server)
        .await;
    let (code, out, err) = webhooks(&server, &["list", "--team", "108"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID"), "{out}");
    assert!(
        lines[1]
            == "4b67ac88-e506-4a29-9d42-26e504e3435e    failing         5  28      https://yourdomain.com/webhook",
        "{out}"
    );
    assert!(out.contains("1 webhook(s) not active"), "{out}");
    let (_, out, _) = webhooks(&server, &["list", "--team", "108", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v[0]["status"].clone(), v[0]["fail_count"].clone()),
        (json!("failing"), json!(5))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_prints_the_secret_and_writes_a_private_env_file() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/team/108/webhook"))
        .and(body_json(json!({"endpoint": "https://bridge.example.com/hooks/clickup", "events": ["taskCreated", "taskStatusUpdated"], "space_id": 1234})))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("clickup/api/create-webhook-response.json")))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("clickup.env");
    let (code, out, err) = webhooks(
        &server,
        &[
            "create",
            "--team",
            "108",
            "--endpoint",
            "https://bridge.example.com/hooks/clickup",
            "--events",
            "taskCreated,taskStatusUpdated",
            "--space",
            "1234",
            "--env-file",
            env_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("webhook  4b67ac88-e506-4a29-9d42-26e504e3435e\nsecret   O94IM25S7PXBPYTMNXLLET230SRP0S89COR7B1YOJ2ZIE8WQNK5UUKEF26W0Z5GA\n"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        "CLICKUP_WEBHOOK_SECRET=O94IM25S7PXBPYTMNXLLET230SRP0S89COR7B1YOJ2ZIE8WQNK5UUKEF26W0Z5GA\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_webhook_gets_a_clear_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(fixture("clickup/api/error-OAUTH_171-webhook-exists.json")),
        )
        .mount(&server)
        .await;
    let (code, _, err) = webhooks(
        &server,
        &[
            "create",
            "--team",
            "108",
            "--endpoint",
            "https://x/hooks/clickup",
        ],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "ClickUp already has a webhook for this endpoint, events and location (OAUTH_171)"
        ),
        "{err}"
    );
    assert!(err.contains("clickup webhooks list --team ID"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_reactivate() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/api/v2/webhook/wh-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&server)
        .await;
    mount_suspended(
        &server,
        json!({"status": "suspended", "fail_count": 5}),
        true,
    )
    .await;
    let (code, out, err) = webhooks(&server, &["delete", "wh-1"]);
    assert_eq!((code, out.trim()), (0, "deleted wh-1"), "{err}");
    let (code, out, err) = webhooks(
        &server,
        &[
            "reactivate",
            "--team",
            "108",
            "4b67ac88-e506-4a29-9d42-26e504e3435e",
        ],
    );
    assert_eq!(
        (code, out.trim()),
        (0, "4b67ac88-e506-4a29-9d42-26e504e3435e is active"),
        "{err}"
    );
    let put = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.method.as_str() == "PUT")
        .unwrap();
    let body: Value = serde_json::from_slice(&put.body).unwrap();
    assert_eq!(body["status"], "active");
    assert_eq!(body["endpoint"], "https://yourdomain.com/webhook");
}

/// The daemon's watch turns a suspended webhook into a metric and a log
/// line, and with auto_reactivate sets it back to active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_watch_reports_and_reactivates_a_suspended_webhook() {
    let server = MockServer::start().await;
    mount_suspended(
        &server,
        json!({"status": "suspended", "fail_count": 100}),
        true,
    )
    .await;
    for auto in [false, true] {
        let routes = format!(
            "sources:\n  clickup:\n    verify: clickup\n    secret: s\n    watch:\n      team_id: '108'\n      via: cu\n      auto_reactivate: {auto}\ntargets:\n  cu:\n    type: clickup\n    token: pk_1\n    base_url: {}/api/v2\nroutes: []\n",
            server.uri()
        );
        let app = spawn_app(&routes).await;
        let metrics = wait_for(20, "the watch to poll", || {
            let (client, url) = (app.client.clone(), format!("{}/metrics", app.admin_url));
            async move {
                let text = client.get(url).send().await.ok()?.text().await.ok()?;
                text.contains("clickup_bridge_clickup_webhook_fail_count")
                    .then_some(text)
            }
        })
        .await;
        let labels = "{source=\"clickup\",webhook_id=\"4b67ac88-e506-4a29-9d42-26e504e3435e\"}";
        if auto {
            let puts = server
                .received_requests()
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.method.as_str() == "PUT")
                .count();
            assert_eq!(puts, 1, "one reactivation");
        } else {
            assert!(
                metrics.contains(&format!("clickup_bridge_clickup_webhook_healthy{labels} 0")),
                "{metrics}"
            );
            assert!(
                metrics.contains(&format!(
                    "clickup_bridge_clickup_webhook_fail_count{labels} 100"
                )),
                "{metrics}"
            );
            let puts = server
                .received_requests()
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.method.as_str() == "PUT")
                .count();
            assert_eq!(puts, 0, "no reactivation without auto_reactivate");
        }
        app.stop().await;
    }
}

/// The warning reaches the daemon's log, once per change of status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_leaving_active_is_logged() {
    use crate::lifecycle::Daemon;
    let server = MockServer::start().await;
    mount_suspended(
        &server,
        json!({"status": "suspended", "fail_count": 100}),
        false,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "sources:\n  clickup:\n    verify: clickup\n    secret: s\n    watch: {{team_id: '108', via: cu, interval: 1}}\ntargets:\n  cu:\n    type: clickup\n    token: pk_1\n    base_url: {}/api/v2\nroutes: []\n",
        server.uri()
    );
    std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
    let mut d = Daemon::start_on(dir.path(), 0, &[("RUST_LOG", "info")]);
    d.wait_for_log("ClickUp webhook is not active");
    let line = d.seen.last().unwrap().clone();
    assert!(line.contains("\"status\":\"suspended\""), "{line}");
    assert!(line.contains("\"fail_count\":100"), "{line}");
    // Polled again a second later: the unchanged status is not logged again.
    wait_for(10, "a second poll", || {
        let server = &server;
        async move { (server.received_requests().await.unwrap_or_default().len() >= 2).then_some(()) }
    })
    .await;
    d.signal("-TERM");
    assert_eq!(d.wait_exit(), 0);
    assert_eq!(
        d.seen
            .iter()
            .filter(|l| l.contains("ClickUp webhook is not active"))
            .count(),
        1
    );
}
