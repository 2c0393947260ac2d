//! Routing and delivery against recording HTTP targets with scripted answers.

use crate::support::*;
use clickup_bridge::store::{DeliveryFilter, DeliveryStatus};
use serde_json::{Value, json};
use std::collections::HashSet;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SOURCE: &str = "sources:\n  clickup:\n    verify: clickup\n    secret: clickup-test-secret\n";

/// An http target `name` at the mock, with fast retries.
fn http_target(name: &str, server: &MockServer, extra: &str) -> String {
    format!(
        "  {name}:\n    type: http\n    url: {}\n    retry: {{attempts: 3, initial: 0.05, max: 0.2}}\n{extra}",
        server.uri()
    )
}

async fn ok_mock(server: &MockServer) {
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(server)
        .await;
}

fn body_json(r: &wiremock::Request) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// Every operator, matching and not matching, through the running daemon:
/// one route per case, each posting to its own path; one event goes in and
/// exactly the matching routes' paths receive a request.
#[tokio::test]
async fn each_operator_fires_exactly_the_routes_whose_conditions_hold() {
    let server = MockServer::start().await;
    ok_mock(&server).await;
    let cases: &[(&str, &str, bool)] = &[
        ("eq-yes", "$.history_items[0].after.status: complete", true),
        ("eq-no", "$.history_items[0].after.status: open", false),
        ("equals-yes", "$.task_id: { equals: t1 }", true),
        ("equals-no", "$.task_id: { equals: t2 }", false),
        ("not-equals-yes", "$.task_id: { not_equals: t2 }", true),
        ("not-equals-no", "$.task_id: { not_equals: t1 }", false),
        (
            "in-yes",
            "$.history_items[0].after.status: { in: [closed, complete] }",
            true,
        ),
        (
            "in-no",
            "$.history_items[0].after.status: { in: [closed] }",
            false,
        ),
        ("regex-yes", "$.title: { regex: '^Fix' }", true),
        ("regex-no", "$.title: { regex: '^Break' }", false),
        ("exists-yes", "$.task_id: { exists: true }", true),
        ("exists-no", "$.nope: { exists: true }", false),
        ("absent-yes", "$.nope: { exists: false }", true),
        ("contains-yes", "$.title: { contains: login }", true),
        ("contains-no", "$.title: { contains: logout }", false),
        (
            "gt-yes",
            "$.history_items[0].date: { gt: 1642736073000 }",
            true,
        ),
        (
            "gt-no",
            "$.history_items[0].date: { gt: 1642736073330 }",
            false,
        ),
        (
            "gte-yes",
            "$.history_items[0].date: { gte: 1642736073330 }",
            true,
        ),
        ("lt-yes", "$.points: { lt: 6 }", true),
        ("lt-no", "$.points: { lt: 5 }", false),
        ("lte-yes", "$.points: { lte: 5 }", true),
        ("lte-no", "$.points: { lte: 4 }", false),
        ("any-node-yes", "$.tags[*].name: bug", true),
        ("any-node-no", "$.tags[*].name: feature", false),
    ];
    let mut routes = String::new();
    for (name, cond, _) in cases {
        routes += &format!(
            "  - name: {name}\n    source: clickup\n    when:\n      match:\n        {cond}\n    send:\n      - target: t\n        path: /{name}\n        body: {{ok: true}}\n"
        );
    }
    routes += "  - name: glob-yes\n    source: clickup\n    when: {event: 'task*'}\n    send:\n      - target: t\n        path: /glob-yes\n        body: {}\n";
    routes += "  - name: glob-no\n    source: clickup\n    when: {event: 'list*'}\n    send:\n      - target: t\n        path: /glob-no\n        body: {}\n";
    routes += "  - name: list-yes\n    source: clickup\n    when: {event: [taskCreated, taskStatusUpdated]}\n    send:\n      - target: t\n        path: /list-yes\n        body: {}\n";
    routes += "  - name: any-yes\n    source: clickup\n    when:\n      any:\n        - $.points: 1\n        - $.title: {contains: Fix}\n    send:\n      - target: t\n        path: /any-yes\n        body: {}\n";
    routes += "  - name: any-no\n    source: clickup\n    when:\n      any:\n        - $.points: 1\n        - $.title: {contains: nope}\n    send:\n      - target: t\n        path: /any-no\n        body: {}\n";
    let text = format!(
        "{SOURCE}targets:\n{}routes:\n{routes}",
        http_target("t", &server, "")
    );
    let app = spawn_app(&text).await;
    let body = br#"{"event":"taskStatusUpdated","task_id":"t1","webhook_id":"w","title":"Fix the login page","points":5,"tags":[{"name":"bug"},{"name":"ui"}],"history_items":[{"id":"h1","date":"1642736073330","after":{"status":"complete"}}]}"#;
    let event_id = app.post_clickup(body).await;
    let rows = app.settled(&event_id, 20).await;
    let got: HashSet<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().trim_start_matches('/').to_owned())
        .collect();
    let mut want: HashSet<String> = cases
        .iter()
        .filter(|c| c.2)
        .map(|c| c.0.to_owned())
        .collect();
    want.extend(["glob-yes", "list-yes", "any-yes"].map(String::from));
    assert_eq!(got, want);
    assert_eq!(rows.len(), want.len(), "one delivery per matched route");
    let matched = app
        .store
        .matched_routes(&clickup_bridge::ids::EventId::from_stored(event_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(matched.len(), want.len());
    app.stop().await;
}

#[tokio::test]
async fn an_event_that_matches_nothing_stays_stored_and_visible_without_deliveries() {
    let server = MockServer::start().await;
    let text = format!(
        "{SOURCE}targets:\n{}routes:\n  - name: r\n    source: clickup\n    when: {{event: taskDeleted}}\n    send:\n      - target: t\n        body: {{}}\n",
        http_target("t", &server, "")
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&clickup_event(1)).await;
    let eid = clickup_bridge::ids::EventId::from_stored(id.clone());
    let matched = wait_for(10, "routing", || {
        let store = app.store.clone();
        let eid = eid.clone();
        async move { store.matched_routes(&eid).await.ok().flatten() }
    })
    .await;
    assert!(matched.is_empty());
    assert!(app.settled(&id, 5).await.is_empty());
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    assert!(server.received_requests().await.unwrap().is_empty());
    app.stop().await;
}

/// Values with quotes, newlines, backslashes and unicode render byte for
/// byte: body leaves stay valid JSON and keep their type; plain strings are
/// not HTML-escaped; template files escape values as JSON strings; path
/// values are percent-encoded.
#[tokio::test]
async fn rendering_edge_cases_arrive_byte_for_byte() {
    let server = MockServer::start().await;
    ok_mock(&server).await;
    let dir_templates = "{\"text\": \"{{name}} <{{event.task_id}}>\", \"n\": {{json count}}, \"all\": {{json event.history_items}}}";
    let text = format!(
        "{SOURCE}targets:\n{}  s:\n    type: slack\n    webhook_url: {}/slack\n    rate_limit: 100/s\nroutes:\n  - name: r\n    source: clickup\n    extract:\n      name: $.name\n      count: $.count\n      items: $.history_items\n    send:\n      - target: t\n        path: /body/{{{{name}}}}\n        query: {{q: '{{{{name}}}}'}}\n        headers: {{X-Name: 'x-{{{{count}}}}'}}\n        body:\n          name: '{{{{name}}}}'\n          count: '{{{{count}}}}'\n          items: '{{{{items}}}}'\n          missing_ok: '{{{{default nothing null}}}}'\n          literal: 42\n          mixed: 'n={{{{count}}}} {{{{upper name}}}}'\n          nested: [ '{{{{count}}}}', {{k: '{{{{name}}}}'}} ]\n      - target: s\n        text: '{{{{name}}}} & <b>{{{{count}}}}</b>'\n      - target: t\n        path: /file\n        template: edge.hbs\n",
        http_target("t", &server, ""),
        server.uri()
    );
    let app = spawn_app_files(&text, &[("edge.hbs", dir_templates)], |_| {}).await;
    let name = "Q\"uote\\ back\nline ünï 日本 /../x?y#z";
    let event = json!({"event": "taskCreated", "webhook_id": "w", "task_id": "t&1", "name": name, "count": 3, "history_items": [{"id": "1", "v": null}]});
    let body = serde_json::to_vec(&event).unwrap();
    let id = app.post_clickup(&body).await;
    let rows = app.settled(&id, 20).await;
    assert!(
        rows.iter().all(|r| r.status == DeliveryStatus::Delivered),
        "{rows:?}"
    );

    let reqs = server.received_requests().await.unwrap();
    let main = reqs
        .iter()
        .find(|r| r.url.path().starts_with("/body/"))
        .unwrap();
    assert_eq!(
        main.url.path(),
        "/body/Q%22uote%5C%20back%0Aline%20%C3%BCn%C3%AF%20%E6%97%A5%E6%9C%AC%20%2F..%2Fx%3Fy%23z"
    );
    assert_eq!(
        main.url
            .query_pairs()
            .find(|(k, _)| k == "q")
            .map(|(_, v)| v.into_owned()),
        Some(name.to_owned())
    );
    assert_eq!(main.headers.get("x-name").unwrap(), "x-3");
    assert_eq!(
        main.headers.get("content-type").unwrap(),
        "application/json; charset=utf-8"
    );
    assert_eq!(
        body_json(main),
        json!({"name": name, "count": 3, "items": [{"id": "1", "v": null}], "missing_ok": null, "literal": 42, "mixed": format!("n=3 {}", name.to_uppercase()), "nested": [3, {"k": name}]})
    );
    let slack = reqs.iter().find(|r| r.url.path() == "/slack").unwrap();
    assert_eq!(
        body_json(slack),
        json!({"text": format!("{name} & <b>3</b>")})
    );
    let file = reqs.iter().find(|r| r.url.path() == "/file").unwrap();
    assert_eq!(
        body_json(file),
        json!({"text": format!("{name} <t&1>"), "n": 3, "all": [{"id": "1", "v": null}]})
    );
    app.stop().await;
}

#[tokio::test]
async fn a_render_error_makes_the_delivery_dead_at_once_with_the_message() {
    let server = MockServer::start().await;
    ok_mock(&server).await;
    let text = format!(
        "{SOURCE}targets:\n{}routes:\n  - name: r\n    source: clickup\n    send:\n      - target: t\n        body: {{v: 'x {{{{event.nope.deeper}}}}'}}\n",
        http_target("t", &server, "")
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&clickup_event(1)).await;
    let rows = app.settled(&id, 10).await;
    assert_eq!(rows[0].status, DeliveryStatus::Dead);
    assert_eq!(rows[0].attempts, 1);
    let err = rows[0].last_error.clone().unwrap();
    assert!(err.contains("event.nope.deeper"), "{err}");
    assert!(server.received_requests().await.unwrap().is_empty());
    app.stop().await;
}

/// "500 twice then 200": one delivered request after three attempts, every
/// attempt with the same Idempotency-Key, every attempt recorded.
#[tokio::test]
async fn failures_are_retried_with_the_same_idempotency_key_until_delivered() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("try later"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    ok_mock(&server).await;
    let text = format!(
        "{SOURCE}targets:\n{}routes:\n  - name: r\n    source: clickup\n    send:\n      - target: t\n        body: {{id: '{{{{event.task_id}}}}'}}\n",
        http_target("t", &server, "")
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&clickup_event(1)).await;
    let rows = app.settled(&id, 20).await;
    assert_eq!(
        (rows[0].status, rows[0].attempts),
        (DeliveryStatus::Delivered, 3)
    );
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 3);
    let keys: HashSet<String> = reqs.iter().map(idempotency_key).collect();
    assert_eq!(keys, HashSet::from([rows[0].id.to_string()]));
    let attempts = app.store.attempts(&rows[0].id).await.unwrap();
    let summary: Vec<(Option<u16>, &str)> = attempts
        .iter()
        .map(|a| (a.status_code, a.outcome.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (Some(500), "retry"),
            (Some(500), "retry"),
            (Some(200), "delivered")
        ]
    );
    assert_eq!(attempts[0].response.as_deref(), Some("try later"));
    app.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "2"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    ok_mock(&server).await;
    let text = format!(
        "{SOURCE}targets:\n{}routes:\n  - name: r\n    source: clickup\n    send:\n      - target: t\n        body: {{}}\n",
        http_target("t", &server, "")
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&clickup_event(1)).await;
    let rows = app.settled(&id, 20).await;
    assert_eq!(rows[0].status, DeliveryStatus::Delivered);
    let a = app.store.attempts(&rows[0].id).await.unwrap();
    assert_eq!(a.len(), 2);
    let second_started = a[1].at - a[1].duration_ms;
    assert!(
        second_started - a[0].at >= 2000,
        "retried {} ms after the 429",
        second_started - a[0].at
    );
    app.stop().await;
}

#[tokio::test]
async fn a_400_is_dead_after_one_attempt_and_exhausted_retries_are_dead() {
    let server = MockServer::start().await;
    Mock::given(path("/bad"))
        .respond_with(ResponseTemplate::new(400).set_body_string("{\"error\":\"nope\"}"))
        .mount(&server)
        .await;
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let text = format!(
        "{SOURCE}targets:\n{}routes:\n  - name: r\n    source: clickup\n    send:\n      - target: t\n        path: /bad\n        body: {{}}\n      - target: t\n        path: /down\n        body: {{}}\n",
        http_target("t", &server, "")
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&clickup_event(1)).await;
    let rows = app.settled(&id, 20).await;
    let by_step = |s: u32| rows.iter().find(|r| r.step == s).unwrap();
    assert_eq!(
        (by_step(0).status, by_step(0).attempts),
        (DeliveryStatus::Dead, 1)
    );
    assert_eq!(by_step(0).last_error.as_deref(), Some("HTTP 400"));
    let a = app.store.attempts(&by_step(0).id).await.unwrap();
    assert_eq!(a[0].response.as_deref(), Some("{\"error\":\"nope\"}"));
    assert_eq!(
        (by_step(1).status, by_step(1).attempts),
        (DeliveryStatus::Dead, 3)
    );
    assert_eq!(
        by_step(1).last_error.as_deref(),
        Some("HTTP 503; gave up after 3 attempts")
    );
    app.stop().await;
}

#[tokio::test]
async fn slack_api_ok_false_is_dead_but_ratelimited_is_retried() {
    let server = MockServer::start().await;
    Mock::given(path("/api/chat.postMessage"))
        .and(wiremock::matchers::body_partial_json(
            json!({"text": "dead"}),
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": false, "error": "channel_not_found"})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/api/chat.postMessage"))
        .and(wiremock::matchers::body_partial_json(
            json!({"text": "later"}),
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"ok": false, "error": "ratelimited"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/api/chat.postMessage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true, "ts": "1.2"})))
        .mount(&server)
        .await;
    let text = format!(
        "{SOURCE}targets:\n  s:\n    type: slack\n    token: xoxb-test\n    channel: C123\n    base_url: {}/api\n    rate_limit: 100/s\n    retry: {{attempts: 3, initial: 0.05, max: 0.1}}\nroutes:\n  - name: r\n    source: clickup\n    send:\n      - target: s\n        text: dead\n      - target: s\n        text: later\n",
        server.uri()
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&clickup_event(1)).await;
    let rows = app.settled(&id, 20).await;
    let by_step = |s: u32| rows.iter().find(|r| r.step == s).unwrap();
    assert_eq!(
        (by_step(0).status, by_step(0).attempts),
        (DeliveryStatus::Dead, 1)
    );
    assert_eq!(
        by_step(0).last_error.as_deref(),
        Some("slack error: channel_not_found")
    );
    assert_eq!(
        (by_step(1).status, by_step(1).attempts),
        (DeliveryStatus::Delivered, 2)
    );
    let reqs = received_at(&server, "/api/chat.postMessage").await;
    assert!(
        reqs.iter()
            .all(|r| r.headers.get("authorization").unwrap() == "Bearer xoxb-test")
    );
    assert!(reqs.iter().all(|r| body_json(r)["channel"] == "C123"));
    app.stop().await;
}

/// A target that answers after 5 s holds only its own slots: the other
/// target's delivery (of another route: one route's steps go in order) is
/// done while the slow one is still waiting.
#[tokio::test]
async fn a_slow_target_does_not_delay_another_target() {
    let slow = slow_target(std::time::Duration::from_secs(5)).await;
    let fast = MockServer::start().await;
    ok_mock(&fast).await;
    let text = format!(
        "{SOURCE}targets:\n{}{}routes:\n  - name: r\n    source: clickup\n    send:\n      - target: slow\n        body: {{}}\n  - name: r2\n    source: clickup\n    send:\n      - target: fast\n        body: {{}}\n",
        http_target("slow", &slow, "    concurrency: 1\n    timeout: 30\n"),
        http_target("fast", &fast, "")
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&clickup_event(1)).await;
    let rows = app
        .wait_deliveries(&id, 10, "the fast delivery", |rows| {
            rows.iter()
                .any(|r| r.target == "fast" && r.status == DeliveryStatus::Delivered)
        })
        .await;
    let slow_row = rows.iter().find(|r| r.target == "slow").unwrap();
    assert_eq!(
        (slow_row.status, slow_row.attempts),
        (DeliveryStatus::Pending, 0),
        "the slow one is still in flight"
    );
    // On a loaded machine the slow request may reach its mock a moment
    // after the fast one was delivered: wait for it, with a deadline.
    wait_for(10, "the slow target to have the request", || {
        let slow = &slow;
        async move { (slow.received_requests().await?.len() == 1).then_some(()) }
    })
    .await;
    let rows = app.settled(&id, 20).await;
    assert!(rows.iter().all(|r| r.status == DeliveryStatus::Delivered));
    app.stop().await;
}

/// 1,000 events from 16 clients, a healthy target: every event delivered
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_from_sixteen_clients_are_each_delivered_exactly_once() {
    let server = MockServer::start().await;
    ok_mock(&server).await;
    let text = format!(
        // Every event is about one task: order_by none lets them go side
        // by side (ordering has its own tests in ordering.rs).
        "{SOURCE}targets:\n{}routes:\n  - name: r\n    source: clickup\n    order_by: none\n    send:\n      - target: t\n        body: {{n: '{{{{event.history_items.[0].id}}}}'}}\n",
        http_target("t", &server, "    concurrency: 16\n")
    );
    let app = spawn_app(&text).await;
    let url = format!("{}/hooks/clickup", app.url);
    let mut tasks = Vec::new();
    for c in 0..16u64 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = c;
            while n < 1000 {
                let body = clickup_event(n);
                let mut req = client.post(&url).body(body.clone());
                for (k, v) in clickup_headers(CLICKUP_SECRET, &body) {
                    req = req.header(k, v);
                }
                assert_eq!(req.send().await.unwrap().status().as_u16(), 200);
                n += 16;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let reqs = wait_for(60, "1000 deliveries", || {
        let server = &server;
        async move {
            let r = server.received_requests().await.unwrap_or_default();
            (r.len() >= 1000).then_some(r)
        }
    })
    .await;
    let delivered = wait_for(30, "all recorded", || {
        let store = app.store.clone();
        async move {
            let rows = store
                .deliveries(&DeliveryFilter {
                    status: Some(DeliveryStatus::Delivered),
                    limit: 2000,
                    ..Default::default()
                })
                .await
                .ok()?;
            (rows.len() == 1000).then_some(rows.len())
        }
    })
    .await;
    assert_eq!(delivered, 1000);
    let reqs_now = server.received_requests().await.unwrap();
    assert_eq!(reqs_now.len(), 1000, "no event was delivered twice");
    let keys: HashSet<String> = reqs.iter().map(idempotency_key).collect();
    assert_eq!(keys.len(), 1000);
    let ns: HashSet<String> = reqs
        .iter()
        .map(|r| body_json(r)["n"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ns.len(), 1000, "every event's own delivery");
    app.stop().await;
}

/// A target's `concurrency` counts its requests in flight, not the store's
/// time to record them: once the target has answered, the slot is free
/// while the attempt record still waits for the store (here, SQLite's
/// write lock held from outside). The delivery stays leased meanwhile, so
/// it is sent once, and it is recorded once the lock goes. Driven through
/// the delivery worker's step function on a store of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_slot_is_free_once_answered_while_the_attempt_waits_for_the_store() {
    use clickup_bridge::ids::{EventId, now_millis};
    use clickup_bridge::route;

    let server = slow_target(std::time::Duration::from_millis(800)).await;
    let text = format!(
        "sources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\ntargets:\n  t:\n    type: http\n    url: {}/in\n    allow_http: true\n    concurrency: 1\nroutes:\n  - name: r\n    source: clickup\n    order_by: none\n    send:\n      - target: t\n        body: {{}}\n",
        server.uri()
    );
    let WorkerRig {
        store,
        db,
        live,
        limits,
        mut worker,
        // Held: the folder of the store goes with it.
        _dir,
        ..
    } = worker_rig(&text).await;

    // An event accepted and routed as the inbound does it, stored
    // unclaimed (the worker claims it).
    let ev = verified(1);
    let id = EventId::generate();
    let head = route::EventHead {
        id: &id,
        source: "clickup",
        event_type: &ev.identity().event_type,
    };
    let routing = route::at_acceptance(&live.load(), &head, ev.payload()).expect("needs no task");
    let delivery = routing.deliveries[0].id.clone();
    store
        .insert_routed_event(ev, id, now_millis(), Some(routing))
        .await
        .unwrap();

    assert_eq!(
        worker.step().await,
        1,
        "the delivery is claimed and started"
    );
    let slots = limits.of(&live.load().targets["t"]).slots.clone();
    assert_eq!(slots.available_permits(), 0, "its request holds the slot");
    wait_for(5, "the target to have the request", || {
        let server = &server;
        async move { (server.received_requests().await?.len() == 1).then_some(()) }
    })
    .await;

    // The target answers 0.8 s after the request; the record then waits
    // for this lock (the store's busy timeout is 3 s, then it retries).
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    wait_for(3, "the slot to be free while the record waits", || {
        let slots = slots.clone();
        async move { (slots.available_permits() == 1).then_some(()) }
    })
    .await;
    drop(lock);

    let row = wait_for(15, "the attempt to be recorded", || {
        let (store, delivery) = (&store, &delivery);
        async move {
            let row = store.delivery(delivery).await.ok()??;
            (row.status == DeliveryStatus::Delivered).then_some(row)
        }
    })
    .await;
    assert_eq!(row.attempts, 1);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    store.close().await;
}
