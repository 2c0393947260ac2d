//! A step whose templates read `links`, when the store cannot read them:
//! the delivery waits and is tried again, past its retry budget, and is
//! never made dead for it (rendering with no links would fail for good).

use crate::support::*;
use crate::targets::{mount_ok, sources, task_event};
use clickup_bridge::store::DeliveryStatus;
use serde_json::json;
use wiremock::MockServer;

/// SQLite whatever `CLICKUP_BRIDGE_TEST_STORE` says: the test breaks the
/// table from a second SQLite connection.
fn on_sqlite(s: &mut clickup_bridge::settings::Settings) {
    let dir = s.routes.parent().unwrap().to_path_buf();
    s.store = clickup_bridge::settings::StoreLocation::Sqlite(dir.join("data/bridge.db"));
}

async fn run_sql(app: &TestApp, statement: &'static str) {
    use sqlx::Connection;
    let db = app.dir.path().join("data/bridge.db");
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(statement).execute(&mut other).await.unwrap();
    other.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_links_read_that_fails_is_retried_and_never_dead() {
    let server = MockServer::start().await;
    mount_ok(&server, "POST", "/create", json!({"id": "ISS-1"})).await;
    mount_ok(&server, "POST", "/comment", json!({})).await;
    let uri = server.uri();
    let targets = format!(
        "targets:\n  t:\n    type: http\n    url: {uri}/create\n  u:\n    type: http\n    url: {uri}/comment\n    retry: {{attempts: 2, initial: 0.05, max: 0.1}}\n"
    );
    let create = "  - name: create\n    source: clickup\n    when:\n      event: taskCreated\n    send:\n      - target: t\n        body: {}\n        remember: issue\n";
    let comment = "  - name: comment\n    source: clickup\n    when:\n      event: taskCommentPosted\n    send:\n      - target: u\n        body: {on: '{{links.issue}}'}\n";
    let routes = format!("{}{targets}routes:\n{create}{comment}", sources());
    let app = spawn_app_with(&routes, on_sqlite).await;
    let created = app.post_clickup(&task_event("taskCreated", "A", 1)).await;
    assert_eq!(
        app.settled(&created, 20).await[0].status,
        DeliveryStatus::Delivered
    );

    // Every read of the links fails from now on.
    run_sql(&app, "ALTER TABLE links RENAME TO links_away").await;
    let comment = app
        .post_clickup(&task_event("taskCommentPosted", "A", 2))
        .await;
    let rows = app
        .wait_deliveries(&comment, 20, "attempts past the budget of 2", |rows| {
            rows.len() == 1 && (rows[0].attempts >= 3 || rows[0].status != DeliveryStatus::Pending)
        })
        .await;
    assert_eq!(
        rows[0].status,
        DeliveryStatus::Pending,
        "{:?}",
        rows[0].last_error
    );
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(
        error.starts_with("cannot read the task's links from the store: "),
        "{error}"
    );
    assert!(received_at(&server, "/comment").await.is_empty());

    // The store reads again: the delivery goes out with the link.
    run_sql(&app, "ALTER TABLE links_away RENAME TO links").await;
    let rows = app.settled(&comment, 20).await;
    assert_eq!(
        rows[0].status,
        DeliveryStatus::Delivered,
        "{:?}",
        rows[0].last_error
    );
    let sent = received_at(&server, "/comment").await;
    assert_eq!(sent.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body, json!({"on": "ISS-1"}));
    app.stop().await;
}
