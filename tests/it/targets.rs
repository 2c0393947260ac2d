//! Jira and ClickUp targets, task enrichment, links and the Stripe -> ClickUp
//! path, against mock servers that speak the real request and answer shapes
//! (tests/fixtures/clickup/api, tests/fixtures/jira).

use crate::support::*;
use clickup_bridge::store::DeliveryStatus;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub(crate) fn fixture(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(rel)).unwrap()).unwrap()
}

pub(crate) fn body_json(r: &wiremock::Request) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

fn header(r: &wiremock::Request, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

const FAST_RETRY: &str = "retry: {attempts: 4, initial: 0.05, max: 0.2}";

pub(crate) fn sources() -> String {
    format!(
        "sources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\n  stripe:\n    verify: stripe\n    secret: whsec_test_secret\n"
    )
}

pub(crate) fn clickup_target(name: &str, server: &MockServer, token: &str) -> String {
    format!(
        "  {name}:\n    type: clickup\n    token: {token}\n    base_url: {}/api/v2\n    {FAST_RETRY}\n",
        server.uri()
    )
}

pub(crate) fn jira_target(server: &MockServer, auth: &str) -> String {
    format!(
        "  jira:\n    type: jira\n    base_url: {}\n    {auth}\n    timeout: 1\n    {FAST_RETRY}\n",
        server.uri()
    )
}

pub(crate) async fn mount_ok(server: &MockServer, m: &str, p: &str, answer: Value) {
    Mock::given(method(m))
        .and(path(p))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(server)
        .await;
}

pub(crate) fn task_event(event: &str, task_id: &str, n: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({"event": event, "task_id": task_id, "webhook_id": "w", "history_items": [{"id": n.to_string()}]})).unwrap()
}

/// update_task: one PUT with status/name/priority, one POST per custom field,
/// in order; a personal token goes as is; the task id is percent-encoded.
#[tokio::test]
async fn clickup_update_task_puts_the_task_then_posts_each_custom_field() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        "PUT",
        "/api/v2/task/a%2Fb",
        fixture("clickup/api/update-task-response.json"),
    )
    .await;
    Mock::given(method("POST"))
        .and(path_regex("^/api/v2/task/a%2Fb/field/.*"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&server)
        .await;
    let text = format!(
        "{}targets:\n{}routes:\n  - name: r\n    source: stripe\n    extract:\n      task_id: $.data.object.metadata.clickup_task_id\n    send:\n      - target: cu\n        action: update_task\n        task_id: '{{{{task_id}}}}'\n        status: paid\n        name: 'Paid {{{{event.id}}}}'\n        priority: '2'\n        fields:\n          f-date: 1508369194377\n          f-drop: uuid1234\n",
        sources(),
        clickup_target("cu", &server, "pk_123_ABC")
    );
    let app = spawn_app(&text).await;
    let body = br#"{"id":"evt_1","type":"invoice.paid","data":{"object":{"metadata":{"clickup_task_id":"a/b"}}}}"#;
    let (status, json) = app
        .post(
            "stripe",
            body.to_vec(),
            &stripe_headers("whsec_test_secret", body, now()),
        )
        .await;
    assert_eq!(status, 200, "{json}");
    let rows = app.settled(json["event_id"].as_str().unwrap(), 20).await;
    assert_eq!(rows[0].status, DeliveryStatus::Delivered, "{rows:?}");
    let reqs = server.received_requests().await.unwrap();
    let seen: Vec<(String, String)> = reqs
        .iter()
        .map(|r| (r.method.to_string(), r.url.path().to_owned()))
        .collect();
    assert_eq!(
        seen,
        [
            ("PUT".into(), "/api/v2/task/a%2Fb".into()),
            ("POST".into(), "/api/v2/task/a%2Fb/field/f-date".into()),
            ("POST".into(), "/api/v2/task/a%2Fb/field/f-drop".into()),
        ]
    );
    assert_eq!(
        body_json(&reqs[0]),
        json!({"status": "paid", "name": "Paid evt_1", "priority": 2})
    );
    assert_eq!(body_json(&reqs[1]), json!({"value": 1508369194377u64}));
    assert_eq!(
        body_json(&reqs[2]),
        fixture("clickup/api/set-custom-field-value-dropdown-request.json")
    );
    assert!(
        reqs.iter()
            .all(|r| header(r, "authorization") == "pk_123_ABC")
    );
    app.stop().await;
}

#[tokio::test]
async fn clickup_comment_and_create_task_with_an_oauth_token() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        "POST",
        "/api/v2/task/t1/comment",
        fixture("clickup/api/create-task-comment-response.json"),
    )
    .await;
    mount_ok(
        &server,
        "POST",
        "/api/v2/list/L9/task",
        json!({"id": "new-task-1", "name": "x"}),
    )
    .await;
    let text = format!(
        "{}targets:\n{}routes:\n  - name: r\n    source: clickup\n    send:\n      - target: cu\n        action: comment\n        task_id: '{{{{event.task_id}}}}'\n        text: 'Seen: {{{{event.event}}}}'\n      - target: cu\n        action: create_task\n        list_id: L9\n        name: 'Follow up {{{{event.task_id}}}}'\n        description: d\n        status: open\n        remember: follow_up\n",
        sources(),
        clickup_target("cu", &server, "oauth-access-token")
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&task_event("taskCreated", "t1", 1)).await;
    let rows = app.settled(&id, 20).await;
    assert!(
        rows.iter().all(|r| r.status == DeliveryStatus::Delivered),
        "{rows:?}"
    );
    let comment = &received_at(&server, "/api/v2/task/t1/comment").await[0];
    assert_eq!(
        body_json(comment),
        json!({"comment_text": "Seen: taskCreated", "notify_all": false})
    );
    assert_eq!(
        header(comment, "authorization"),
        "Bearer oauth-access-token"
    );
    let create = &received_at(&server, "/api/v2/list/L9/task").await[0];
    assert_eq!(
        body_json(create),
        json!({"name": "Follow up t1", "description": "d", "status": "open"})
    );
    let links = app.store.links("t1").await.unwrap();
    assert_eq!(links.get("follow_up"), Some(&json!("new-task-1")));
    app.stop().await;
}

/// ClickUp's 429 carries X-RateLimit-Reset (Unix seconds): the retry waits
/// for it; the error body is recorded on the attempt.
#[tokio::test]
async fn clickup_429_waits_for_the_rate_limit_reset() {
    let server = MockServer::start().await;
    let reset = now() + 2;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("X-RateLimit-Reset", reset.to_string().as_str())
                .set_body_json(json!({"err": "Rate limit reached", "ECODE": "APP_002"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    mount_ok(
        &server,
        "POST",
        "/api/v2/task/t1/comment",
        json!({"id": "c1"}),
    )
    .await;
    let text = format!(
        "{}targets:\n{}routes:\n  - name: r\n    source: clickup\n    send:\n      - target: cu\n        action: comment\n        task_id: t1\n        text: hi\n",
        sources(),
        clickup_target("cu", &server, "pk_1")
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&task_event("taskCreated", "t1", 1)).await;
    let rows = app.settled(&id, 20).await;
    assert_eq!(
        (rows[0].status, rows[0].attempts),
        (DeliveryStatus::Delivered, 2)
    );
    let a = app.store.attempts(&rows[0].id).await.unwrap();
    assert_eq!(a[0].status_code, Some(429));
    assert_eq!(
        a[0].error.as_deref(),
        Some("HTTP 429: Rate limit reached (APP_002)")
    );
    let second_started = a[1].at - a[1].duration_ms;
    assert!(
        second_started >= (reset - 1) * 1000,
        "retried before the reset"
    );
    app.stop().await;
}

/// create_issue: project key, issue type name, ADF description, labels with
/// the delivery label, extra fields; Basic auth from e-mail and API token.
#[tokio::test]
async fn jira_create_issue_sends_adf_and_the_delivery_label() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(fixture("jira/create_issue_response_201.json")),
        )
        .mount(&server)
        .await;
    let text = format!(
        "{}targets:\n{}routes:\n  - name: r\n    source: clickup\n    send:\n      - target: jira\n        action: create_issue\n        project: OPS\n        issue_type: Bug\n        summary: 'Bug {{{{event.task_id}}}}'\n        description: \"first line\\nsecond line\\n\\nhttps://app.clickup.com/t/{{{{event.task_id}}}}\"\n        labels: [clickup, '{{{{event.event}}}}']\n        fields: {{priority: {{name: High}}}}\n        remember: jira_issue\n",
        sources(),
        jira_target(&server, "email: ops@example.com\n    api_token: tok")
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&task_event("taskCreated", "t7", 1)).await;
    let rows = app.settled(&id, 20).await;
    assert_eq!(rows[0].status, DeliveryStatus::Delivered, "{rows:?}");
    let req = &received_at(&server, "/rest/api/3/issue").await[0];
    assert_eq!(
        header(req, "authorization"),
        "Basic b3BzQGV4YW1wbGUuY29tOnRvaw=="
    );
    assert_eq!(
        body_json(req),
        json!({"fields": {
            "project": {"key": "OPS"},
            "issuetype": {"name": "Bug"},
            "summary": "Bug t7",
            "description": {"type": "doc", "version": 1, "content": [
                {"type": "paragraph", "content": [{"type": "text", "text": "first line"}, {"type": "hardBreak"}, {"type": "text", "text": "second line"}]},
                {"type": "paragraph", "content": [{"type": "text", "text": "https://app.clickup.com/t/t7"}]}
            ]},
            "labels": ["clickup", "taskCreated", format!("clickup-bridge-{}", rows[0].id)],
            "priority": {"name": "High"}
        }})
    );
    assert_eq!(
        app.store.links("t7").await.unwrap().get("jira_issue"),
        Some(&json!("ED-24"))
    );
    app.stop().await;
}

/// The first create times out after Jira created the issue; the retry finds
/// it by its label and does not create a second one.
#[tokio::test]
async fn a_jira_create_that_timed_out_is_found_by_label_instead_of_created_twice() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"id": "1", "key": "OPS-7"}))
                .set_delay(std::time::Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/rest/api/3/search/jql"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"issues": [{"id": "1", "key": "OPS-7"}], "isLast": true})),
        )
        .mount(&server)
        .await;
    let text = format!(
        "{}targets:\n{}routes:\n  - name: r\n    source: clickup\n    send:\n      - target: jira\n        action: create_issue\n        project: OPS\n        issue_type: Bug\n        summary: s\n        remember: jira_issue\n",
        sources(),
        jira_target(&server, "token: pat-123")
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&task_event("taskCreated", "t8", 1)).await;
    let rows = app.settled(&id, 30).await;
    assert_eq!(
        (rows[0].status, rows[0].attempts),
        (DeliveryStatus::Delivered, 2),
        "{rows:?}"
    );
    let a = app.store.attempts(&rows[0].id).await.unwrap();
    assert!(
        a[0].error
            .as_deref()
            .unwrap_or_default()
            .starts_with("timeout"),
        "{a:?}"
    );
    assert_eq!(
        received_at(&server, "/rest/api/3/issue").await.len(),
        1,
        "exactly one create"
    );
    let search = &received_at(&server, "/rest/api/3/search/jql").await[0];
    let jql: String = search
        .url
        .query_pairs()
        .find(|(k, _)| k == "jql")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(jql, format!("labels = \"clickup-bridge-{}\"", rows[0].id));
    assert_eq!(header(search, "authorization"), "Bearer pat-123");
    assert_eq!(
        app.store.links("t8").await.unwrap().get("jira_issue"),
        Some(&json!("OPS-7"))
    );
    app.stop().await;
}

/// transition: GET the transitions, POST the one whose target status is
/// named `to`; no such transition is dead, naming the reachable statuses.
#[tokio::test]
async fn jira_transitions_go_by_status_name_and_a_missing_one_is_dead() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        "GET",
        "/rest/api/3/issue/OPS-1/transitions",
        fixture("jira/get_transitions_response_200.json"),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue/OPS-1/transitions"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let text = format!(
        "{}targets:\n{}routes:\n  - name: r\n    source: clickup\n    send:\n      - target: jira\n        action: transition\n        issue: OPS-1\n        to: in progress\n      - target: jira\n        action: transition\n        issue: OPS-1\n        to: Done\n",
        sources(),
        jira_target(&server, "token: t")
    );
    let app = spawn_app(&text).await;
    let id = app
        .post_clickup(&task_event("taskStatusUpdated", "t1", 1))
        .await;
    let rows = app.settled(&id, 20).await;
    let by_step = |s: u32| rows.iter().find(|r| r.step == s).unwrap();
    assert_eq!(by_step(0).status, DeliveryStatus::Delivered);
    let posts: Vec<Value> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(body_json)
        .collect();
    assert_eq!(posts, [json!({"transition": {"id": "2"}})]);
    assert_eq!(
        (by_step(1).status, by_step(1).attempts),
        (DeliveryStatus::Dead, 1)
    );
    let err = by_step(1).last_error.clone().unwrap();
    assert!(err.starts_with("no transition leads to status \"Done\"; available: \"In Progress\" (via \"Close Issue\")"), "{err}");
    app.stop().await;
}

#[tokio::test]
async fn jira_error_bodies_are_recorded_on_the_attempt() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue/OPS-1/comment"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(fixture("jira/create_issue_response_400.json")),
        )
        .mount(&server)
        .await;
    let text = format!(
        "{}targets:\n{}routes:\n  - name: r\n    source: clickup\n    send:\n      - target: jira\n        action: comment\n        issue: OPS-1\n        text: hi\n",
        sources(),
        jira_target(&server, "token: t")
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&task_event("taskCreated", "t1", 1)).await;
    let rows = app.settled(&id, 20).await;
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some("HTTP 400: Field 'priority' is required")
    );
    let req = &received_at(&server, "/rest/api/3/issue/OPS-1/comment").await[0];
    assert_eq!(
        body_json(req),
        json!({"body": {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [{"type": "text", "text": "hi"}]}]}})
    );
    app.stop().await;
}

/// A task tagged bug opens a Jira issue (remembered); a later comment on the
/// same task is posted on that issue.
#[tokio::test]
async fn the_link_flow_comments_on_the_issue_created_for_the_task() {
    let server = MockServer::start().await;
    mount_ok(&server, "GET", "/api/v2/task/t5", json!({"id": "t5", "name": "Login broken", "url": "https://app.clickup.com/t/t5", "tags": [{"name": "bug"}], "text_content": "Steps"})).await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"id": "10", "key": "OPS-42"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue/OPS-42/comment"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(fixture("jira/add_comment_response_201.json")),
        )
        .mount(&server)
        .await;
    let text = format!(
        "{}targets:\n{}{}routes:\n  - name: bug-to-jira\n    source: clickup\n    when:\n      event: taskCreated\n      task:\n        $.tags[*].name: bug\n    send:\n      - target: jira\n        action: create_issue\n        project: OPS\n        issue_type: Bug\n        summary: '{{{{task.name}}}}'\n        description: \"{{{{task.text_content}}}}\\n\\n{{{{task.url}}}}\"\n        remember: jira_issue\n  - name: comment-to-jira\n    source: clickup\n    when:\n      event: taskCommentPosted\n    send:\n      - target: jira\n        action: comment\n        issue: '{{{{links.jira_issue}}}}'\n        text: 'New comment on {{{{event.task_id}}}}'\n",
        sources(),
        clickup_target("cu", &server, "pk_1"),
        jira_target(&server, "token: t")
    );
    let app = spawn_app(&text).await;
    let first = app.post_clickup(&task_event("taskCreated", "t5", 1)).await;
    app.settled(&first, 20).await;
    let second = app
        .post_clickup(&task_event("taskCommentPosted", "t5", 2))
        .await;
    let rows = app.settled(&second, 20).await;
    assert_eq!(rows[0].status, DeliveryStatus::Delivered, "{rows:?}");
    let create = &received_at(&server, "/rest/api/3/issue").await[0];
    assert_eq!(body_json(create)["fields"]["summary"], "Login broken");
    let comment = &received_at(&server, "/rest/api/3/issue/OPS-42/comment").await[0];
    assert_eq!(
        body_json(comment)["body"]["content"][0]["content"][0]["text"],
        "New comment on t5"
    );
    app.stop().await;
}

/// Enrichment puts the task's name and link into the Slack message, and a
/// burst of 10 events about one task costs one GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_makes_messages_readable_and_a_burst_costs_one_get() {
    let server = MockServer::start().await;
    mount_ok(&server, "GET", "/api/v2/task/1vj38vv", json!({"id": "1vj38vv", "name": "Ship v2", "url": "https://app.clickup.com/t/1vj38vv", "status": {"status": "complete"}})).await;
    Mock::given(method("POST"))
        .and(path("/slack"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&server)
        .await;
    let text = format!(
        "{}targets:\n{}  slack:\n    type: slack\n    webhook_url: {}/slack\n    rate_limit: 100/s\nroutes:\n  - name: done\n    source: clickup\n    when:\n      event: taskStatusUpdated\n    enrich: [task]\n    extract:\n      by: $.history_items[0].user.username\n    send:\n      - target: slack\n        text: '<{{{{task.url}}}}|{{{{task.name}}}}> is {{{{task.status.status}}}} ({{{{by}}}})'\n",
        sources(),
        clickup_target("cu", &server, "pk_1"),
        server.uri()
    );
    let app = spawn_app(&text).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(app.post_clickup(&clickup_event(n)).await);
    }
    for id in &ids {
        let rows = app.settled(id, 20).await;
        assert_eq!(rows[0].status, DeliveryStatus::Delivered, "{rows:?}");
    }
    let slack = received_at(&server, "/slack").await;
    assert_eq!(slack.len(), 10);
    assert_eq!(
        body_json(&slack[0]),
        json!({"text": "<https://app.clickup.com/t/1vj38vv|Ship v2> is complete (John)"})
    );
    let gets = received_at(&server, "/api/v2/task/1vj38vv").await;
    assert_eq!(gets.len(), 1, "one GET for the burst");
    assert_eq!(header(&gets[0], "authorization"), "pk_1");
    app.stop().await;
}

/// A task ClickUp answers 404 for makes the route's deliveries dead with that
/// reason; a task condition that does not hold means no delivery at all.
#[tokio::test]
async fn a_missing_task_makes_the_route_dead_and_a_failing_task_condition_matches_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/task/gone"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"err": "Task not found", "ECODE": "ITEM_013"})),
        )
        .mount(&server)
        .await;
    mount_ok(
        &server,
        "GET",
        "/api/v2/task/feature",
        json!({"id": "feature", "tags": [{"name": "feature"}]}),
    )
    .await;
    let text = format!(
        "{}targets:\n{}routes:\n  - name: bugs\n    source: clickup\n    when:\n      task:\n        $.tags[*].name: bug\n    send:\n      - target: cu\n        action: comment\n        task_id: '{{{{event.task_id}}}}'\n        text: bug\n",
        sources(),
        clickup_target("cu", &server, "pk_1")
    );
    let app = spawn_app(&text).await;
    let gone = app
        .post_clickup(&task_event("taskCreated", "gone", 1))
        .await;
    let rows = app.settled(&gone, 20).await;
    assert_eq!((rows.len(), rows[0].status), (1, DeliveryStatus::Dead));
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some("task gone not found: ClickUp answered 404: Task not found")
    );
    let feature = app
        .post_clickup(&task_event("taskCreated", "feature", 2))
        .await;
    assert!(app.settled(&feature, 20).await.is_empty());
    let matched = app
        .store
        .matched_routes(&clickup_bridge::ids::EventId::from_stored(feature))
        .await
        .unwrap();
    assert_eq!(matched, Some(vec![]));
    app.stop().await;
}

/// The reverse path: a signed Stripe invoice.paid whose metadata names a
/// ClickUp task marks it paid and comments with the amount; the same event
/// without the metadata matches nothing and stays visible.
#[tokio::test]
async fn stripe_invoice_paid_updates_the_clickup_task() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        "PUT",
        "/api/v2/task/86abc",
        fixture("clickup/api/update-task-response.json"),
    )
    .await;
    mount_ok(
        &server,
        "POST",
        "/api/v2/task/86abc/comment",
        fixture("clickup/api/create-task-comment-response.json"),
    )
    .await;
    let text = format!(
        "{}targets:\n{}routes:\n  - name: invoice-paid-updates-task\n    source: stripe\n    when:\n      event: invoice.paid\n      match:\n        $.data.object.metadata.clickup_task_id: {{ exists: true }}\n    extract:\n      task_id: $.data.object.metadata.clickup_task_id\n      amount: $.data.object.amount_paid\n      currency: $.data.object.currency\n    send:\n      - target: clickup-api\n        action: update_task\n        task_id: '{{{{task_id}}}}'\n        status: paid\n      - target: clickup-api\n        action: comment\n        task_id: '{{{{task_id}}}}'\n        text: 'Invoice paid: {{{{money amount currency}}}}'\n",
        sources(),
        clickup_target("clickup-api", &server, "pk_1")
    );
    let app = spawn_app(&text).await;
    let mut invoice = fixture("stripe/openapi-fixture_invoice.json");
    invoice["amount_paid"] = json!(12345);
    invoice["metadata"] = json!({"clickup_task_id": "86abc"});
    let event = json!({"id": "evt_paid_1", "object": "event", "type": "invoice.paid", "data": {"object": invoice}});
    let body = serde_json::to_vec(&event).unwrap();
    let (status, json) = app
        .post(
            "stripe",
            body.clone(),
            &stripe_headers("whsec_test_secret", &body, now()),
        )
        .await;
    assert_eq!(status, 200, "{json}");
    let rows = app.settled(json["event_id"].as_str().unwrap(), 20).await;
    assert!(
        rows.iter().all(|r| r.status == DeliveryStatus::Delivered),
        "{rows:?}"
    );
    let put = &received_at(&server, "/api/v2/task/86abc").await[0];
    assert_eq!(put.method.as_str(), "PUT");
    assert_eq!(body_json(put), json!({"status": "paid"}));
    let comment = &received_at(&server, "/api/v2/task/86abc/comment").await[0];
    assert_eq!(
        body_json(comment)["comment_text"],
        "Invoice paid: 123.45 USD"
    );

    let mut no_meta = event.clone();
    no_meta["id"] = json!("evt_paid_2");
    no_meta["data"]["object"]["metadata"] = json!({});
    let body = serde_json::to_vec(&no_meta).unwrap();
    let (_, json) = app
        .post(
            "stripe",
            body.clone(),
            &stripe_headers("whsec_test_secret", &body, now()),
        )
        .await;
    let id = json["event_id"].as_str().unwrap().to_owned();
    assert!(app.settled(&id, 20).await.is_empty());
    let matched = app
        .store
        .matched_routes(&clickup_bridge::ids::EventId::from_stored(id))
        .await
        .unwrap();
    assert_eq!(matched, Some(vec![]), "visible as unmatched");
    app.stop().await;
}

/// A ClickUp API outage holds only the routes that need the task: a route
/// that needs none delivers at once, and when the fetch works again the
/// held route delivers, while the first route's delivery is not made twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_fetch_holds_only_the_routes_that_need_the_task() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/task/t1"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    mount_ok(
        &server,
        "GET",
        "/api/v2/task/t1",
        json!({"id": "t1", "name": "Ship"}),
    )
    .await;
    for p in ["/audit", "/slack"] {
        Mock::given(method("POST"))
            .and(path(p))
            .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
            .mount(&server)
            .await;
    }
    let text = format!(
        "{}targets:\n  cu:\n    type: clickup\n    token: pk_1\n    base_url: {uri}/api/v2\n    retry: {{attempts: 4, initial: 1, max: 1}}\n  slack:\n    type: slack\n    webhook_url: {uri}/slack\n    rate_limit: 100/s\n  audit:\n    type: http\n    url: {uri}/audit\nroutes:\n  - name: needs-task\n    source: clickup\n    enrich: [task]\n    send:\n      - target: slack\n        text: '{{{{task.name}}}}'\n  - name: no-task\n    source: clickup\n    send:\n      - target: audit\n        body: {{event: '{{{{event.event}}}}'}}\n",
        sources(),
        uri = server.uri()
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&task_event("taskCreated", "t1", 1)).await;
    let rows = app.settled(&id, 20).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.status == DeliveryStatus::Delivered),
        "{rows:?}"
    );
    let order: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    assert_eq!(
        order,
        [
            "GET /api/v2/task/t1",
            "POST /audit",
            "GET /api/v2/task/t1",
            "POST /slack"
        ],
        "the audit went out while the task fetch was failing, once"
    );
    app.stop().await;
}
