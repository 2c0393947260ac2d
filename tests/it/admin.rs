//! The admin listener: auth, every endpoint's shape, replay, metrics,
//! reload, retention.

use crate::support::*;
use clickup_bridge::store::{DeliveryFilter, DeliveryStatus};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "admin-secret-token";

fn routes(server: &MockServer) -> String {
    format!(
        "sources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\ntargets:\n  t:\n    type: http\n    url: {}/in\n    retry: {{attempts: 2, initial: 0.05, max: 0.1}}\nroutes:\n  - name: r\n    source: clickup\n    send:\n      - target: t\n        body: {{n: '{{{{event.history_items.[0].id}}}}'}}\n",
        server.uri()
    )
}

async fn app_with_token(server: &MockServer) -> TestApp {
    spawn_app_with(&routes(server), |s| s.admin_token = Some(TOKEN.into())).await
}

impl TestApp {
    async fn admin(&self, m: &str, path: &str) -> (u16, Value) {
        let req = self
            .client
            .request(m.parse().unwrap(), format!("{}{path}", self.admin_url))
            .bearer_auth(TOKEN);
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

#[tokio::test]
async fn the_token_guards_the_api_and_metrics_but_not_the_probes() {
    let server = MockServer::start().await;
    let app = app_with_token(&server).await;
    for path in ["/api/v1/events", "/api/v1/deliveries", "/metrics"] {
        let r = app
            .client
            .get(format!("{}{path}", app.admin_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} without a token");
        assert_eq!(r.headers().get("www-authenticate").unwrap(), "Bearer");
        let r = app
            .client
            .get(format!("{}{path}", app.admin_url))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} with a wrong token");
        let r = app
            .client
            .get(format!("{}{path}", app.admin_url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path} with the token");
    }
    let r = app
        .client
        .post(format!("{}/api/v1/reload", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    for path in ["/healthz", "/readyz"] {
        let r = app
            .client
            .get(format!("{}{path}", app.admin_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn events_and_deliveries_are_listed_newest_first_in_pages_and_shown_whole() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let app = app_with_token(&server).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = app.post_clickup(&clickup_event(n)).await;
        app.settled(&id, 20).await;
        ids.push(id);
    }
    let (status, page1) = app.admin("GET", "/api/v1/events?limit=2").await;
    assert_eq!(status, 200);
    let got: Vec<&str> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()]);
    let cursor = page1["next"].as_str().unwrap();
    let (_, page2) = app
        .admin("GET", &format!("/api/v1/events?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(page2["items"][0]["id"], ids[0]);
    assert_eq!(page2["next"], Value::Null);
    assert_eq!(page2["items"][0]["source"], "clickup");
    assert_eq!(page2["items"][0]["event_type"], "taskStatusUpdated");

    let (_, event) = app
        .admin("GET", &format!("/api/v1/events/{}", ids[0]))
        .await;
    assert_eq!(event["payload"]["history_items"][0]["id"], "0");
    assert_eq!(event["matched_routes"], json!(["r"]));
    assert_eq!(event["deliveries"][0]["status"], "delivered");
    let delivery_id = event["deliveries"][0]["id"].as_str().unwrap().to_owned();

    let (_, list) = app
        .admin(
            "GET",
            "/api/v1/deliveries?status=delivered&target=t&route=r",
        )
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    let (_, none) = app.admin("GET", "/api/v1/deliveries?status=dead").await;
    assert_eq!(none, json!({"items": [], "next": null}));
    let (status, bad) = app.admin("GET", "/api/v1/deliveries?status=lost").await;
    assert_eq!(status, 400, "{bad}");
    let (status, bad) = app.admin("GET", "/api/v1/events?limit=abc").await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().contains("limit"), "{bad}");

    let (_, d) = app
        .admin("GET", &format!("/api/v1/deliveries/{delivery_id}"))
        .await;
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["attempts_list"][0]["status_code"], 200);
    assert_eq!(d["attempts_list"][0]["outcome"], "delivered");
    let (status, _) = app.admin("GET", "/api/v1/deliveries/dlv_nope").await;
    assert_eq!(status, 404);
    let (status, _) = app.admin("GET", "/api/v1/events/evt_nope").await;
    assert_eq!(status, 404);
    app.stop().await;
}

/// A delivery dead while the target failed is replayed once it recovers:
/// same Idempotency-Key, a fresh retry budget, the history kept.
#[tokio::test]
async fn dead_deliveries_are_replayed_one_by_one_and_in_bulk() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let app = app_with_token(&server).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(app.post_clickup(&clickup_event(n)).await);
    }
    let mut dead = Vec::new();
    for id in &ids {
        let rows = app.settled(id, 20).await;
        assert_eq!(
            (rows[0].status, rows[0].attempts),
            (DeliveryStatus::Dead, 2)
        );
        dead.push(rows[0].id.to_string());
    }
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    let (status, r) = app
        .admin("POST", &format!("/api/v1/deliveries/{}/replay", dead[0]))
        .await;
    assert_eq!((status, r), (200, json!({"replayed": 1})));
    let rows = app.settled(&ids[0], 20).await;
    assert_eq!(
        (rows[0].status, rows[0].attempts),
        (DeliveryStatus::Delivered, 3)
    );
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(idempotency_key(&reqs[0]), dead[0]);
    let (status, _) = app
        .admin("POST", "/api/v1/deliveries/dlv_nope/replay")
        .await;
    assert_eq!(status, 404);

    // A dry run answers the count and queues nothing.
    let (status, r) = app
        .admin(
            "POST",
            "/api/v1/deliveries/replay?status=dead&target=t&route=r&dry_run=true",
        )
        .await;
    assert_eq!((status, r), (200, json!({"dry_run": true, "matched": 2})));
    let (status, _) = app
        .admin(
            "POST",
            "/api/v1/deliveries/replay?status=dead&dry_run=maybe",
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        app.settled(&ids[1], 1).await[0].status,
        DeliveryStatus::Dead,
        "the dry run changed nothing"
    );
    let (status, r) = app
        .admin(
            "POST",
            "/api/v1/deliveries/replay?status=dead&target=t&route=r",
        )
        .await;
    assert_eq!((status, r), (200, json!({"replayed": 2})));
    for id in &ids[1..] {
        let rows = app.settled(id, 20).await;
        assert_eq!(rows[0].status, DeliveryStatus::Delivered);
    }
    let (_, r) = app
        .admin("POST", "/api/v1/deliveries/replay?status=dead")
        .await;
    assert_eq!(r, json!({"replayed": 0}));
    app.stop().await;
}

/// Replaying a pending delivery that waits for its next retry means "try
/// now": it is attempted at once, with the retry budget it has.
#[tokio::test]
async fn replaying_a_pending_delivery_makes_it_due_now() {
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
    let routes = format!(
        "sources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\ntargets:\n  t:\n    type: http\n    url: {}/in\n    retry: {{attempts: 5, initial: 3600, max: 3600}}\nroutes:\n  - name: r\n    source: clickup\n    send:\n      - target: t\n        body: {{}}\n",
        server.uri()
    );
    let app = spawn_app(&routes).await;
    let id = app.post_clickup(&clickup_event(1)).await;
    let rows = app
        .wait_deliveries(&id, 20, "the first attempt", |r| {
            r.first().is_some_and(|d| d.attempts == 1)
        })
        .await;
    assert_eq!(rows[0].status, DeliveryStatus::Pending, "waits an hour");
    let (status, r) = app
        .admin("POST", &format!("/api/v1/deliveries/{}/replay", rows[0].id))
        .await;
    assert_eq!((status, r), (200, json!({"replayed": 1})));
    let rows = app.settled(&id, 20).await;
    assert_eq!(
        (rows[0].status, rows[0].attempts),
        (DeliveryStatus::Delivered, 2)
    );
    app.stop().await;
}

impl TestApp {
    /// The value of the metric line starting with `prefix`, scraped now.
    async fn metric(&self, prefix: &str) -> f64 {
        let (_, text) = self.admin("GET", "/metrics").await;
        metric(text.as_str().unwrap(), prefix)
    }
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {prefix} in:\n{text}"))
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let app = app_with_token(&server).await;
    let id = app.post_clickup(&clickup_event(1)).await;
    app.settled(&id, 20).await;
    let body = clickup_event(1);
    app.post(
        "clickup",
        body.clone(),
        &clickup_headers(CLICKUP_SECRET, &body),
    )
    .await;
    app.post("clickup", body.clone(), &clickup_headers("wrong", &body))
        .await;
    app.post("nope", body.clone(), &[]).await;
    let (_, text) = app.admin("GET", "/metrics").await;
    let text = text.as_str().unwrap().to_owned();
    let m = |p: &str| metric(&text, p);
    assert_eq!(
        m(
            "clickup_bridge_events_received_total{source=\"clickup\",outcome=\"accepted\",reason=\"\"}"
        ),
        1.0
    );
    assert_eq!(
        m(
            "clickup_bridge_events_received_total{source=\"clickup\",outcome=\"duplicate\",reason=\"\"}"
        ),
        1.0
    );
    assert_eq!(
        m(
            "clickup_bridge_events_received_total{source=\"clickup\",outcome=\"rejected\",reason=\"signature_mismatch\"}"
        ),
        1.0
    );
    assert_eq!(
        m(
            "clickup_bridge_events_received_total{source=\"_unknown\",outcome=\"rejected\",reason=\"unknown_source\"}"
        ),
        1.0
    );
    assert_eq!(
        m("clickup_bridge_deliveries_total{target=\"t\",outcome=\"delivered\"}"),
        1.0
    );
    assert_eq!(
        m("clickup_bridge_delivery_attempts_total{target=\"t\",outcome=\"delivered\"}"),
        1.0
    );
    assert_eq!(m("clickup_bridge_delivery_latency_seconds_count"), 1.0);
    assert_eq!(m("clickup_bridge_queue_depth{state=\"pending\"}"), 0.0);
    assert_eq!(m("clickup_bridge_queue_depth{state=\"dead\"}"), 0.0);
    assert!(text.contains("clickup_bridge_oldest_pending_age_seconds"));
    app.admin("POST", "/api/v1/reload").await;
    assert_eq!(
        app.metric("clickup_bridge_config_reloads_total{result=\"success\"}")
            .await,
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn reload_through_the_api_activates_a_valid_file_and_refuses_an_invalid_one() {
    let server = MockServer::start().await;
    let app = app_with_token(&server).await;
    let path = app.dir.path().join("routes.yaml");
    let extra = routes(&server).replace(
        "targets:",
        "  extra:\n    verify: clickup\n    secret: x\ntargets:",
    );
    std::fs::write(&path, extra).unwrap();
    let (status, r) = app.admin("POST", "/api/v1/reload").await;
    assert_eq!(status, 200, "{r}");
    let (status, _) = app.post("extra", b"{}".to_vec(), &[]).await;
    assert_eq!(status, 403, "the new source is served");

    std::fs::write(&path, "sources:\n  extra: {verify: clickupp, secret: x}\n").unwrap();
    let (status, r) = app.admin("POST", "/api/v1/reload").await;
    assert_eq!(status, 400);
    let diag = r["diagnostics"][0].as_str().unwrap();
    assert!(diag.ends_with("routes.yaml:2:19: unknown verify kind \"clickupp\"; did you mean \"clickup\"? (clickup, stripe, hmac, standard-webhooks or header)"), "{diag}");
    let (status, _) = app.post("extra", b"{}".to_vec(), &[]).await;
    assert_eq!(status, 403, "the previous routes stay in force");
    assert_eq!(
        app.metric("clickup_bridge_config_reloads_total{result=\"failure\"}")
            .await,
        1.0
    );
    app.stop().await;
}

/// Pruning removes finished history older than the cutoff, never pending
/// work, and an event only once nothing is left to deliver for it.
#[tokio::test]
async fn retention_prunes_finished_history_and_keeps_pending_work() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::body_partial_json(json!({"n": "1"})))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let text = routes(&server).replace(
        "attempts: 2, initial: 0.05, max: 0.1",
        "attempts: 1000, initial: 60, max: 60",
    );
    let app = spawn_app(&text).await;
    let done = app.post_clickup(&clickup_event(1)).await;
    assert_eq!(
        app.settled(&done, 20).await[0].status,
        DeliveryStatus::Delivered
    );
    let waiting = app.post_clickup(&clickup_event(2)).await;
    app.wait_deliveries(&waiting, 20, "the failing attempt", |rows| {
        rows.first().is_some_and(|d| d.attempts == 1)
    })
    .await;

    // Everything is "older" than a cutoff in the future.
    let pruned = app
        .store
        .prune(clickup_bridge::ids::now_millis() + 60_000, 500)
        .await
        .unwrap();
    assert_eq!((pruned.deliveries, pruned.events), (1, 1));
    let events = app.store.recent_events(None, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id.as_str(), waiting);
    let rows = app
        .store
        .deliveries(&DeliveryFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, DeliveryStatus::Pending);
    // Nothing more to prune; a retention pass with the real cutoff keeps all.
    let again = clickup_bridge::retention::prune_once(&app.store, 7).await;
    assert_eq!((again.deliveries, again.events), (0, 0));
    app.stop().await;
}

/// Deliveries whose target a reload removed do not wait for ever: they
/// become dead with the reason, and can be replayed once the target is back.
#[tokio::test]
async fn deliveries_of_a_removed_target_become_dead() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let text = routes(&server).replace(
        "attempts: 2, initial: 0.05, max: 0.1",
        "attempts: 1000, initial: 60, max: 60",
    );
    let app = spawn_app_with(&text, |s| s.admin_token = Some(TOKEN.into())).await;
    let id = app.post_clickup(&clickup_event(1)).await;
    app.wait_deliveries(&id, 20, "a first failed attempt", |rows| {
        rows.first().is_some_and(|d| d.attempts == 1)
    })
    .await;
    let without = format!(
        "sources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\nroutes: []\n"
    );
    std::fs::write(app.dir.path().join("routes.yaml"), without).unwrap();
    let (status, _) = app.admin("POST", "/api/v1/reload").await;
    assert_eq!(status, 200);
    let rows = app.settled(&id, 30).await;
    assert_eq!(rows[0].status, DeliveryStatus::Dead);
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some("target \"t\" is no longer in routes.yaml")
    );
    app.stop().await;
}
