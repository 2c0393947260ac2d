//! clickup-bridge as the system under test: the routes.yaml the bench
//! writes (one route `taskStatusUpdated` to the sink, the target's limits
//! lifted), starting it, and what its store says afterwards.

use crate::common::{Daemon, Launch, Res, open_db, start_daemon};
use serde_json::{Value, json};
use std::path::Path;

const SINK_MARK: &str = "@@SINK@@";
const CONCURRENCY_MARK: &str = "@@CONCURRENCY@@";
pub const ROUTES_TEMPLATE: &str = r#"version: 1
sources:
  clickup:
    verify: clickup
    secret: bench-secret
targets:
  sink:
    type: slack
    webhook_url: @@SINK@@
    rate_limit: 100000/s
    concurrency: @@CONCURRENCY@@
    timeout: 10
    retry: { attempts: 1000000, initial: 0.2, max: 2 }
routes:
  - name: to-sink
    source: clickup
    # Every bench event is about one task: not ordered, to measure throughput.
    order_by: none
    when:
      event: taskStatusUpdated
    extract:
      by: $.history_items[0].user.username
      n: $.history_items[0].id
    send:
      - target: sink
        text: "{{by}} moved task {{event.task_id}} (#{{n}})"
"#;

/// The daemon, routing every taskStatusUpdated to the sink; `store` as
/// `start_daemon` takes it.
pub async fn start_bridge(launch: &Launch, sink_url: &str, store: Option<&str>) -> Res<Daemon> {
    start_daemon(
        launch,
        "clickup-bridge-e2e-",
        &ROUTES_TEMPLATE
            .replace(SINK_MARK, sink_url)
            .replace(CONCURRENCY_MARK, &launch.sink_concurrency.to_string()),
        store,
        // Settings and proxies from the caller's environment must not leak
        // into the run (the sink is on loopback).
        |name| {
            let name = name.to_ascii_uppercase();
            name.starts_with("CLICKUP_BRIDGE_") || name.ends_with("_PROXY")
        },
    )
    .await
}

/// What the daemon's SQLite file says.
#[derive(Clone, Copy, Debug, Default)]
pub struct DbCounts {
    pub events: i64,
    pub unrouted: i64,
    pub pending: i64,
    pub delivered: i64,
    pub dead: i64,
    pub attempts: i64,
    /// PostgreSQL: transactions committed in the database over the run
    /// (`pg_stat_database.xact_commit`; the database is fresh per run).
    pub commits: Option<i64>,
}

impl DbCounts {
    pub fn json(&self) -> Value {
        json!({
            "events": self.events,
            "unrouted_events": self.unrouted,
            "deliveries_pending": self.pending,
            "deliveries_delivered": self.delivered,
            "deliveries_dead": self.dead,
            "attempts": self.attempts,
            "postgres_commits": self.commits,
        })
    }
}

/// Unrouted events and pending deliveries (cheap enough to poll while the
/// daemon runs; WAL readers do not block its writer).
pub async fn db_backlog(conn: &mut sqlx::SqliteConnection) -> Res<(i64, i64)> {
    let unrouted: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE routed_at IS NULL")
        .fetch_one(&mut *conn)
        .await?;
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'pending'")
            .fetch_one(&mut *conn)
            .await?;
    Ok((unrouted, pending))
}

/// The same counts from a PostgreSQL database (the schema is the same).
pub async fn pg_counts(url: &str) -> Res<DbCounts> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let mut count = async |sql: &'static str| -> Res<i64> {
        Ok(sqlx::query_scalar(sql).fetch_one(&mut conn).await?)
    };
    let c = DbCounts {
        events: count("SELECT count(*) FROM events").await?,
        unrouted: count("SELECT count(*) FROM events WHERE routed_at IS NULL").await?,
        pending: count("SELECT count(*) FROM deliveries WHERE status = 'pending'").await?,
        delivered: count("SELECT count(*) FROM deliveries WHERE status = 'delivered'").await?,
        dead: count("SELECT count(*) FROM deliveries WHERE status = 'dead'").await?,
        attempts: count("SELECT count(*) FROM attempts").await?,
        commits: Some(
            count("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
                .await?,
        ),
    };
    conn.close().await?;
    Ok(c)
}

pub async fn db_counts(db: &Path) -> Res<DbCounts> {
    let mut conn = open_db(db).await?;
    let mut c = DbCounts {
        events: sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&mut conn)
            .await?,
        attempts: sqlx::query_scalar("SELECT count(*) FROM attempts")
            .fetch_one(&mut conn)
            .await?,
        ..DbCounts::default()
    };
    (c.unrouted, c.pending) = db_backlog(&mut conn).await?;
    c.delivered = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
        .fetch_one(&mut conn)
        .await?;
    c.dead = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'dead'")
        .fetch_one(&mut conn)
        .await?;
    sqlx::Connection::close(conn).await?;
    Ok(c)
}
