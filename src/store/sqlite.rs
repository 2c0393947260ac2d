//! SQLite backend: WAL, one writer task fed by a channel that commits queued
//! operations together (group commit), and a small pool of readers.
//!
//! Why group commit: SQLite has one writer at a time and each durable commit
//! costs an fsync. Inbound inserts, router results, delivery claims and
//! attempt records all queue on one channel; the writer takes everything
//! queued (up to [`MAX_BATCH`]): the inserts in one statement on a
//! `synchronous=FULL` connection (one fsync acknowledges them all, and every
//! 200 still means "on disk"), the rest in one transaction on a `NORMAL`
//! connection (see [`writer`] for why that is safe). If a group fails, its
//! operations are retried one by one so one bad operation cannot fail its
//! neighbours.
//!
//! Leases: one daemon owns an SQLite file, so leases left by a crashed
//! process are cleared when the store opens.

use super::{
    Activity, ActivityCount, AttemptOutcome, AttemptRecord, AttemptRow, ClaimedDelivery,
    DeliveryFilter, DeliveryRow, DeliveryStatus, EventFilter, EventToRoute, Inserted, Pruned,
    QueueStats, ReplayFilter, RoutedEvent, StoreError, StoredEvent,
};
use crate::ids::{DeliveryId, EventId};
use crate::verify::VerifiedEvent;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 512;

/// An id's time may precede the row's recorded time by a little (the id is
/// made first); a time window's id range starts this much earlier.
const ID_CLOCK_SLACK_MS: i64 = 1_000;

struct NewEvent {
    id: EventId,
    source: String,
    dedupe_key: String,
    event_type: String,
    payload: Vec<u8>,
    received_at: i64,
}

enum Op {
    InsertEvent(NewEvent),
    ClaimEvents {
        limit: u32,
        now: i64,
        lease_ms: i64,
    },
    CompleteRouting {
        routed: Vec<RoutedEvent>,
        now: i64,
    },
    ClaimDeliveries {
        target: String,
        limit: u32,
        now: i64,
        lease_ms: i64,
    },
    RecordAttempt(AttemptRecord),
    Replay {
        filter: ReplayFilter,
        now: i64,
    },
    Prune {
        cutoff: i64,
        batch: u32,
    },
    DeferRouting {
        event: EventId,
        retry_at: i64,
        error: String,
        ready: Vec<super::NewDelivery>,
        now: i64,
    },
}

enum Done {
    Count(u64),
    Pruned(Pruned),
    Inserted(Inserted),
    Events(Vec<EventToRoute>),
    Deliveries(Vec<ClaimedDelivery>),
    Unit,
}

type Reply = oneshot::Sender<Result<Done, StoreError>>;

enum Msg {
    Op(Op, Reply),
    Shutdown(oneshot::Sender<()>),
}

pub(super) struct SqliteStore {
    writer: mpsc::Sender<Msg>,
    read: SqlitePool,
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        // Checkpoints run in the background (see `checkpointer`), not inside
        // a commit on the writer, where they would stall every request
        // waiting on that commit.
        .pragma("wal_autocheckpoint", "0")
        .pragma("journal_size_limit", "67108864")
        .log_statements(tracing::log::LevelFilter::Trace)
}

/// Copies the WAL into the database file every second from a reader
/// connection. PASSIVE never blocks the writer; it copies what no reader
/// still needs, so the WAL is reused instead of growing.
async fn checkpointer(pool: SqlitePool) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !pool.is_closed() {
        tick.tick().await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
            && !pool.is_closed()
        {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store writer has stopped".into())
}

fn unexpected() -> StoreError {
    StoreError::Unavailable("unexpected answer from the store writer".into())
}

impl SqliteStore {
    pub(super) async fn open(path: &Path) -> Result<Self, StoreError> {
        // A missing folder is a mistake (a typo, a volume not mounted):
        // creating it would put the events in a fresh, empty store where the
        // operator is not looking. The file itself is created when missing.
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(StoreError::Unavailable(format!(
                "the folder {} of the SQLite store does not exist; create it (mkdir -p {}) or fix the store setting",
                dir.display(),
                dir.display()
            )));
        }
        let mut conn = options(path).connect().await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        // Whatever a previous (crashed) process had claimed is free again.
        sqlx::query("UPDATE events SET lease_until = NULL WHERE lease_until IS NOT NULL")
            .execute(&mut conn)
            .await?;
        sqlx::query("UPDATE deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL")
            .execute(&mut conn)
            .await?;
        // The second writing connection commits without waiting for fsync
        // (see `Writer`); the writer task uses the two one after the other,
        // so they never contend for SQLite's write lock.
        let fast = options(path)
            .synchronous(SqliteSynchronous::Normal)
            .connect()
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options(path))
            .await?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(writer(conn, fast, rx));
        tokio::spawn(checkpointer(read.clone()));
        Ok(SqliteStore { writer: tx, read })
    }

    async fn run(&self, op: Op) -> Result<Done, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Msg::Op(op, reply))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    pub(super) async fn insert_event(
        &self,
        event: VerifiedEvent,
        received_at: i64,
    ) -> Result<Inserted, StoreError> {
        let (source, identity, payload) = event.into_parts();
        let new = NewEvent {
            id: EventId::generate(),
            source,
            dedupe_key: identity.dedupe_key,
            event_type: identity.event_type,
            payload,
            received_at,
        };
        match self.run(Op::InsertEvent(new)).await? {
            Done::Inserted(i) => Ok(i),
            _ => Err(unexpected()),
        }
    }

    pub(super) async fn claim_events(
        &self,
        limit: u32,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<EventToRoute>, StoreError> {
        match self
            .run(Op::ClaimEvents {
                limit,
                now,
                lease_ms,
            })
            .await?
        {
            Done::Events(e) => Ok(e),
            _ => Err(unexpected()),
        }
    }

    pub(super) async fn complete_routing(
        &self,
        routed: Vec<RoutedEvent>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.run(Op::CompleteRouting { routed, now })
            .await
            .map(|_| ())
    }

    pub(super) async fn claim_deliveries(
        &self,
        target: &str,
        limit: u32,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let op = Op::ClaimDeliveries {
            target: target.to_owned(),
            limit,
            now,
            lease_ms,
        };
        match self.run(op).await? {
            Done::Deliveries(d) => Ok(d),
            _ => Err(unexpected()),
        }
    }

    pub(super) async fn defer_routing(
        &self,
        event: &EventId,
        retry_at: i64,
        error: &str,
        ready: Vec<super::NewDelivery>,
        now: i64,
    ) -> Result<(), StoreError> {
        let op = Op::DeferRouting {
            event: event.clone(),
            retry_at,
            error: error.to_owned(),
            ready,
            now,
        };
        self.run(op).await.map(|_| ())
    }

    pub(super) async fn links(
        &self,
        task_id: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        let rows = sqlx::query("SELECT name, value FROM links WHERE task_id = ?1")
            .bind(task_id)
            .fetch_all(&self.read)
            .await?;
        let mut out = serde_json::Map::new();
        for r in rows {
            let name: String = r.try_get("name")?;
            let value: String = r.try_get("value")?;
            out.insert(name, serde_json::Value::String(value));
        }
        Ok(out)
    }

    pub(super) async fn record_attempt(&self, record: AttemptRecord) -> Result<(), StoreError> {
        self.run(Op::RecordAttempt(record)).await.map(|_| ())
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        if self.writer.is_closed() {
            return Err(stopped());
        }
        Ok(())
    }

    pub(super) async fn events(&self, f: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        // Ids are time-ordered (UUID v7), so a time window is also an id
        // range the primary key serves; received_at keeps it exact.
        let floor = f
            .since
            .map(|t| EventId::floor(t.saturating_sub(ID_CLOCK_SLACK_MS)));
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events \
             WHERE (?1 IS NULL OR source = ?1) AND (?2 IS NULL OR id < ?2) \
             AND (?4 IS NULL OR event_type = ?4) AND (?5 IS NULL OR id >= ?5) \
             AND (?6 IS NULL OR received_at >= ?6) AND (?7 IS NULL OR received_at < ?7) \
             ORDER BY id DESC LIMIT ?3"
        ))
        .bind(f.source.as_deref())
        .bind(f.before.as_deref())
        .bind(i64::from(if f.limit == 0 { 100 } else { f.limit }))
        .bind(f.event_type.as_deref())
        .bind(floor)
        .bind(f.since)
        .bind(f.until)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(stored_event)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn count_deliveries(&self, f: &DeliveryFilter) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE (?1 IS NULL OR status = ?1) \
             AND (?2 IS NULL OR target = ?2) AND (?3 IS NULL OR route = ?3) \
             AND (?4 IS NULL OR event_id = ?4)",
        )
        .bind(f.status.map(DeliveryStatus::as_str))
        .bind(f.target.as_deref())
        .bind(f.route.as_deref())
        .bind(f.event_id.as_ref().map(EventId::as_str))
        .fetch_one(&self.read)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(super) async fn activity(
        &self,
        since: i64,
        bucket_ms: i64,
    ) -> Result<Activity, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        let slack = since.saturating_sub(ID_CLOCK_SLACK_MS);
        let events = sqlx::query(
            "SELECT source AS name, NULL AS status, (received_at - ?1) / ?2 AS bucket, COUNT(*) AS n \
             FROM events WHERE id >= ?3 AND received_at >= ?1 GROUP BY source, bucket",
        )
        .bind(since)
        .bind(bucket_ms)
        .bind(EventId::floor(slack))
        .fetch_all(&self.read)
        .await?;
        let deliveries = sqlx::query(
            "SELECT target AS name, status, (created_at - ?1) / ?2 AS bucket, COUNT(*) AS n \
             FROM deliveries WHERE id >= ?3 AND created_at >= ?1 GROUP BY target, status, bucket",
        )
        .bind(since)
        .bind(bucket_ms)
        .bind(DeliveryId::floor(slack))
        .fetch_all(&self.read)
        .await?;
        let rows = |rows: Vec<SqliteRow>| -> Result<Vec<ActivityCount>, sqlx::Error> {
            rows.iter()
                .map(|r| {
                    let status: Option<String> = r.try_get("status")?;
                    Ok(ActivityCount {
                        name: r.try_get("name")?,
                        status: status.as_deref().and_then(DeliveryStatus::parse),
                        bucket: u32::try_from(r.try_get::<i64, _>("bucket")?).unwrap_or(0),
                        count: u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0),
                    })
                })
                .collect()
        };
        Ok(Activity {
            since,
            bucket_ms,
            events: rows(events)?,
            deliveries: rows(deliveries)?,
        })
    }

    pub(super) async fn event(&self, id: &EventId) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE id = ?1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.read)
        .await?;
        row.as_ref()
            .map(stored_event)
            .transpose()
            .map_err(StoreError::from)
    }

    pub(super) async fn delivery(
        &self,
        id: &DeliveryId,
    ) -> Result<Option<DeliveryRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            delivery_columns!(),
            " \
             FROM deliveries WHERE id = ?1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.read)
        .await?;
        row.as_ref()
            .map(delivery_row)
            .transpose()
            .map_err(StoreError::from)
    }

    pub(super) async fn pending_targets(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT target FROM deliveries WHERE status = 'pending'")
                .fetch_all(&self.read)
                .await?,
        )
    }

    pub(super) async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let unrouted: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE routed_at IS NULL")
                .fetch_one(&self.read)
                .await?;
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'")
                .fetch_one(&self.read)
                .await?;
        let dead: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'")
            .fetch_one(&self.read)
            .await?;
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(e.received_at) FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.status = 'pending'",
        )
        .fetch_one(&self.read)
        .await?;
        Ok(QueueStats {
            unrouted: u64::try_from(unrouted).unwrap_or(0),
            pending: u64::try_from(pending).unwrap_or(0),
            dead: u64::try_from(dead).unwrap_or(0),
            oldest_pending_received_at: oldest,
        })
    }

    pub(super) async fn replay(&self, filter: ReplayFilter, now: i64) -> Result<u64, StoreError> {
        match self.run(Op::Replay { filter, now }).await? {
            Done::Count(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    pub(super) async fn count_replayable(
        &self,
        status: DeliveryStatus,
        target: Option<&str>,
        route: Option<&str>,
    ) -> Result<u64, StoreError> {
        // ?1 is unused here; it keeps the placeholders of the shared clause.
        let n: i64 = sqlx::query_scalar(concat!(
            "SELECT COUNT(*) FROM deliveries WHERE ?1 IS NULL AND ",
            replay_all_where!()
        ))
        .bind(None::<i64>)
        .bind(status.as_str())
        .bind(target)
        .bind(route)
        .fetch_one(&self.read)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(super) async fn prune(&self, cutoff: i64, batch: u32) -> Result<Pruned, StoreError> {
        match self.run(Op::Prune { cutoff, batch }).await? {
            Done::Pruned(p) => Ok(p),
            _ => Err(unexpected()),
        }
    }

    pub(super) async fn count_events(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&self.read)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(super) async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let due: Option<i64> = sqlx::query_scalar(
            // Leased rows count too (their time is past, so the worker falls
            // back to its wake-ups); the partial index makes this O(log n).
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'",
        )
        .fetch_one(&self.read)
        .await?;
        Ok(due)
    }

    pub(super) async fn deliveries(
        &self,
        f: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = sqlx::query(
            concat!(
            "SELECT ",
            delivery_columns!(),
            " \
             FROM deliveries WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR target = ?2) \
             AND (?3 IS NULL OR route = ?3) AND (?4 IS NULL OR event_id = ?4) AND (?6 IS NULL OR id < ?6) \
             ORDER BY id DESC LIMIT ?5"
        ))
        .bind(f.status.map(DeliveryStatus::as_str))
        .bind(f.target.as_deref())
        .bind(f.route.as_deref())
        .bind(f.event_id.as_ref().map(EventId::as_str))
        .bind(i64::from(if f.limit == 0 { 100 } else { f.limit }))
        .bind(f.before.as_deref())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(delivery_row)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn attempts(
        &self,
        delivery: &DeliveryId,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT n, at, duration_ms, status_code, response, error, outcome FROM attempts \
             WHERE delivery_id = ?1 ORDER BY n",
        )
        .bind(delivery.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    n: u32::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0),
                    at: r.try_get("at")?,
                    duration_ms: r.try_get("duration_ms")?,
                    status_code: r
                        .try_get::<Option<i64>, _>("status_code")?
                        .and_then(|c| u16::try_from(c).ok()),
                    response: r.try_get("response")?,
                    error: r.try_get("error")?,
                    outcome: r.try_get("outcome")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn matched_routes(
        &self,
        event: &EventId,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let raw: Option<Option<String>> =
            sqlx::query_scalar("SELECT matched_routes FROM events WHERE id = ?1")
                .bind(event.as_str())
                .fetch_optional(&self.read)
                .await?;
        Ok(raw
            .flatten()
            .and_then(|s| serde_json::from_str::<Vec<String>>(&s).ok()))
    }

    pub(super) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Msg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.read.close().await;
    }
}

/// The columns [`stored_event`] reads.
macro_rules! event_columns {
    () => {
        "id, source, event_type, dedupe_key, payload, received_at, routed_at"
    };
}
use event_columns;

/// The deliveries a bulk replay takes (?2 status, ?3 target, ?4 route):
/// written once for the replay and for its dry run's count.
macro_rules! replay_all_where {
    () => {
        "status = ?2 AND status != 'pending' AND (?3 IS NULL OR target = ?3) AND (?4 IS NULL OR route = ?4)"
    };
}

/// The columns [`delivery_row`] reads.
macro_rules! delivery_columns {
    () => {
        "id, event_id, route, step, target, status, attempts, last_error, created_at, delivered_at, next_attempt_at"
    };
}
use delivery_columns;
use replay_all_where;

fn stored_event(r: &SqliteRow) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        id: EventId::from_stored(r.try_get("id")?),
        source: r.try_get("source")?,
        event_type: r.try_get("event_type")?,
        dedupe_key: r.try_get("dedupe_key")?,
        payload: r.try_get("payload")?,
        received_at: r.try_get("received_at")?,
        routed_at: r.try_get("routed_at")?,
    })
}

fn delivery_row(r: &SqliteRow) -> Result<DeliveryRow, sqlx::Error> {
    let status: String = r.try_get("status")?;
    Ok(DeliveryRow {
        id: DeliveryId::from_stored(r.try_get("id")?),
        event_id: EventId::from_stored(r.try_get("event_id")?),
        route: r.try_get("route")?,
        step: u32::try_from(r.try_get::<i64, _>("step")?).unwrap_or(0),
        target: r.try_get("target")?,
        status: DeliveryStatus::parse(&status).unwrap_or(DeliveryStatus::Pending),
        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        delivered_at: r.try_get("delivered_at")?,
        next_attempt_at: if status == "pending" {
            r.try_get("next_attempt_at")?
        } else {
            None
        },
    })
}

/// The single writer: drains the queue into one transaction per batch.
/// The single writer: drains the queue, then commits in two groups.
///
/// Inbound inserts go first, through the FULL connection: one autocommit
/// statement whose commit fsyncs the WAL, after which their senders get their
/// 200 at once. Everything else (routing results, claims, attempt records,
/// replays, pruning) follows in one transaction on the NORMAL connection: it
/// is written to the WAL before its answer, so it survives a crash of the
/// process, and a power cut can lose at most the last moments of it, until
/// the next FULL commit or the checkpoint a second later. What such a loss
/// costs: an event routed again gets the same delivery ids
/// (`DeliveryId::for_step`), and a lost attempt record sends that delivery
/// again with the same Idempotency-Key: at least once, as promised.
async fn writer(
    mut durable: SqliteConnection,
    mut fast: SqliteConnection,
    mut rx: mpsc::Receiver<Msg>,
) {
    let mut batch: Vec<(Op, Reply)> = Vec::with_capacity(MAX_BATCH);
    let mut shutdown: Option<oneshot::Sender<()>> = None;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Op(op, reply) => batch.push((op, reply)),
                Msg::Shutdown(done) => {
                    shutdown = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let (inserts, rest): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .partition(|(op, _)| matches!(op, Op::InsertEvent(_)));
        run_group(&mut durable, inserts).await;
        run_group(&mut fast, rest).await;
        if shutdown.is_some() {
            break;
        }
    }
    rx.close();
    let _ = durable.close().await;
    let _ = fast.close().await;
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

/// Runs a group of operations together and answers each; when the group
/// fails, its operations are retried one by one so one bad operation cannot
/// fail its neighbours.
async fn run_group(conn: &mut SqliteConnection, mut group: Vec<(Op, Reply)>) {
    if group.is_empty() {
        return;
    }
    let ops: Vec<&Op> = group.iter().map(|(op, _)| op).collect();
    match run_batch(conn, &ops).await {
        Ok(results) => {
            for ((_, reply), r) in group.drain(..).zip(results) {
                let _ = reply.send(Ok(r));
            }
        }
        Err(e) if group.len() > 1 => {
            tracing::warn!(error = %e, batch = group.len(), "store batch failed; retrying its operations one by one");
            for (op, reply) in group.drain(..) {
                let r = run_batch(conn, &[&op]).await;
                let _ = reply.send(
                    r.map_err(|e| StoreError::Unavailable(e.to_string()))
                        .and_then(|mut v| v.pop().ok_or_else(unexpected)),
                );
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "store write failed");
            for (_, reply) in group.drain(..) {
                let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
            }
        }
    }
}

async fn run_batch(conn: &mut SqliteConnection, ops: &[&Op]) -> Result<Vec<Done>, sqlx::Error> {
    let inserts: Vec<&NewEvent> = ops
        .iter()
        .filter_map(|op| match op {
            Op::InsertEvent(e) => Some(e),
            _ => None,
        })
        .collect();
    if inserts.len() == ops.len() && inserts.len() <= INSERT_CHUNK {
        // Inserts only, one statement: it is its own transaction, so the
        // BEGIN and COMMIT round trips are saved (the common case under load).
        return Ok(insert_events(conn, &inserts)
            .await?
            .into_iter()
            .map(Done::Inserted)
            .collect());
    }
    let mut tx = conn.begin().await?;
    let mut out = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
        // Runs of the same operation go in multi-row statements: one round
        // trip to SQLite's thread instead of one per row.
        let same = ops[i..]
            .iter()
            .take_while(|op| std::mem::discriminant(**op) == std::mem::discriminant(ops[i]))
            .count();
        match ops[i] {
            Op::InsertEvent(_) if same > 1 => {
                let events: Vec<&NewEvent> = ops[i..i + same]
                    .iter()
                    .filter_map(|op| match op {
                        Op::InsertEvent(e) => Some(e),
                        _ => None,
                    })
                    .collect();
                for ins in insert_events(&mut tx, &events).await? {
                    out.push(Done::Inserted(ins));
                }
                i += same;
            }
            Op::RecordAttempt(_) if same > 1 => {
                let records: Vec<&AttemptRecord> = ops[i..i + same]
                    .iter()
                    .filter_map(|op| match op {
                        Op::RecordAttempt(a) => Some(a),
                        _ => None,
                    })
                    .collect();
                record_attempts(&mut tx, &records).await?;
                out.extend((0..same).map(|_| Done::Unit));
                i += same;
            }
            op => {
                out.push(run_op(&mut tx, op).await?);
                i += 1;
            }
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Rows per multi-row INSERT of deliveries (10 values each).
const DELIVERY_CHUNK: usize = 256;

/// Inserts deliveries (one multi-row INSERT per chunk); a delivery that
/// exists already (same event, route and step) is left as it is.
async fn insert_deliveries(
    tx: &mut SqliteConnection,
    all: &[(&EventId, &super::NewDelivery)],
    now: i64,
) -> Result<(), sqlx::Error> {
    for chunk in all.chunks(DELIVERY_CHUNK) {
        let rows = (0..chunk.len())
            .map(|r| {
                let b = r * 9;
                format!(
                    "(?{}, ?{}, ?{}, ?{}, ?{}, ?{}, 0, ?{n}, ?{}, ?{}, ?{n}, ?{n})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    n = b + 9
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        // Only placeholders are formatted in; every value is bound.
        let sql = format!(
            "INSERT INTO deliveries (id, event_id, route, step, target, status, attempts, next_attempt_at, \
             context, last_error, created_at, updated_at) VALUES {rows} ON CONFLICT (event_id, route, step) DO NOTHING"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (event_id, d) in chunk {
            q = q
                .bind(d.id.as_str())
                .bind(event_id.as_str())
                .bind(&d.route)
                .bind(i64::from(d.step))
                .bind(&d.target)
                .bind(if d.dead.is_some() { "dead" } else { "pending" })
                .bind(d.context.to_string())
                .bind(d.dead.as_deref())
                .bind(now);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Inserts the deliveries of routed events and marks the events routed: one
/// multi-row INSERT per chunk of deliveries, one UPDATE ... FROM (VALUES ...)
/// per chunk of events.
async fn complete_routing(
    tx: &mut SqliteConnection,
    routed: &[RoutedEvent],
    now: i64,
) -> Result<(), sqlx::Error> {
    let all: Vec<(&EventId, &super::NewDelivery)> = routed
        .iter()
        .flat_map(|ev| ev.deliveries.iter().map(move |d| (&ev.event_id, d)))
        .collect();
    insert_deliveries(tx, &all, now).await?;
    for chunk in routed.chunks(DELIVERY_CHUNK) {
        let rows = (0..chunk.len())
            .map(|r| format!("(?{}, ?{})", r * 2 + 2, r * 2 + 3))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE events SET routed_at = ?1, lease_until = NULL, matched_routes = v.column2 \
             FROM (VALUES {rows}) AS v WHERE events.id = v.column1"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
        for ev in chunk {
            q = q
                .bind(ev.event_id.as_str())
                .bind(serde_json::to_string(&ev.matched_routes).unwrap_or_else(|_| "[]".into()));
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Rows per multi-row statement of attempt records (8 values each).
const RECORD_CHUNK: usize = 256;

fn attempt_status(a: &AttemptRecord) -> (&'static str, i64, Option<i64>) {
    match a.outcome {
        AttemptOutcome::Delivered => ("delivered", a.at, Some(a.at)),
        AttemptOutcome::Retry { at } => ("pending", at, None),
        AttemptOutcome::Dead => ("dead", a.at, None),
    }
}

/// Records many attempts: one INSERT and one UPDATE ... FROM (VALUES ...)
/// per chunk, then the links, if any.
async fn record_attempts(
    tx: &mut SqliteConnection,
    records: &[&AttemptRecord],
) -> Result<(), sqlx::Error> {
    for chunk in records.chunks(RECORD_CHUNK) {
        let rows = |width: usize| {
            (0..chunk.len())
                .map(|r| {
                    let cols: Vec<String> =
                        (1..=width).map(|c| format!("?{}", r * width + c)).collect();
                    format!("({})", cols.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Only placeholders are formatted in; every value is bound.
        let insert = format!(
            "INSERT INTO attempts (delivery_id, n, at, duration_ms, status_code, response, error, outcome) VALUES {} \
             ON CONFLICT (delivery_id, n) DO NOTHING",
            rows(8)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(insert));
        for a in chunk {
            q = q
                .bind(a.delivery_id.as_str())
                .bind(i64::from(a.n))
                .bind(a.at)
                .bind(a.duration_ms)
                .bind(a.status_code.map(i64::from))
                .bind(a.response.as_deref())
                .bind(a.error.as_deref())
                .bind(a.outcome.name());
        }
        q.execute(&mut *tx).await?;
        let update = format!(
            "UPDATE deliveries SET status = v.column2, attempts = v.column3, next_attempt_at = v.column4, \
             lease_until = NULL, last_error = v.column5, updated_at = v.column6, delivered_at = v.column7 \
             FROM (VALUES {}) AS v WHERE deliveries.id = v.column1",
            rows(7)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(update));
        for a in chunk {
            let (status, next, delivered_at) = attempt_status(a);
            q = q
                .bind(a.delivery_id.as_str())
                .bind(status)
                .bind(i64::from(a.n))
                .bind(next)
                .bind(a.error.as_deref())
                .bind(a.at)
                .bind(delivered_at);
        }
        q.execute(&mut *tx).await?;
    }
    for a in records {
        if let Some(link) = &a.link {
            store_link(tx, link, a.at).await?;
        }
    }
    Ok(())
}

async fn store_link(
    tx: &mut SqliteConnection,
    link: &super::Link,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO links (task_id, name, value, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (task_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )
    .bind(&link.task_id)
    .bind(&link.name)
    .bind(&link.value)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Rows per multi-row INSERT (6 bound values each, well under SQLite's
/// limit): a whole batch fits in one statement.
const INSERT_CHUNK: usize = MAX_BATCH;

/// Inserts many events; the ones that conflict on (source, dedupe_key), with
/// a stored event or an earlier one of the same batch, are duplicates.
async fn insert_events(
    tx: &mut SqliteConnection,
    events: &[&NewEvent],
) -> Result<Vec<Inserted>, sqlx::Error> {
    let mut inserted_ids: std::collections::HashSet<String> = std::collections::HashSet::new();
    for chunk in events.chunks(INSERT_CHUNK) {
        let rows = (0..chunk.len())
            .map(|r| {
                let b = r * 6;
                format!(
                    "(?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO events (id, source, dedupe_key, event_type, payload, received_at) VALUES {rows} \
             ON CONFLICT (source, dedupe_key) DO NOTHING RETURNING id"
        );
        // Only placeholders are formatted in; every value is bound.
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for e in chunk {
            q = q
                .bind(e.id.as_str())
                .bind(&e.source)
                .bind(&e.dedupe_key)
                .bind(&e.event_type)
                .bind(&e.payload)
                .bind(e.received_at);
        }
        inserted_ids.extend(q.fetch_all(&mut *tx).await?);
    }
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        if inserted_ids.contains(e.id.as_str()) {
            out.push(Inserted {
                id: e.id.clone(),
                duplicate: false,
            });
        } else {
            let id: String =
                sqlx::query_scalar("SELECT id FROM events WHERE source = ?1 AND dedupe_key = ?2")
                    .bind(&e.source)
                    .bind(&e.dedupe_key)
                    .fetch_one(&mut *tx)
                    .await?;
            out.push(Inserted {
                id: EventId::from_stored(id),
                duplicate: true,
            });
        }
    }
    Ok(out)
}

fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn run_op(tx: &mut SqliteConnection, op: &Op) -> Result<Done, sqlx::Error> {
    match op {
        Op::InsertEvent(e) => insert_event(tx, e).await.map(Done::Inserted),
        Op::ClaimEvents {
            limit,
            now,
            lease_ms,
        } => {
            let rows = sqlx::query(
                "UPDATE events SET lease_until = ?1 WHERE id IN ( \
                   SELECT id FROM events WHERE routed_at IS NULL AND (lease_until IS NULL OR lease_until < ?2) \
                   ORDER BY received_at LIMIT ?3) \
                 RETURNING id, source, event_type, payload, received_at, route_attempts",
            )
            .bind(now.saturating_add(*lease_ms))
            .bind(now)
            .bind(i64::from(*limit))
            .fetch_all(&mut *tx)
            .await?;
            let mut events = rows
                .iter()
                .map(|r| {
                    Ok(EventToRoute {
                        id: EventId::from_stored(r.try_get("id")?),
                        source: r.try_get("source")?,
                        event_type: r.try_get("event_type")?,
                        payload: r.try_get("payload")?,
                        received_at: r.try_get("received_at")?,
                        route_attempts: u32::try_from(r.try_get::<i64, _>("route_attempts")?)
                            .unwrap_or(0),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            events.sort_by(|a, b| {
                (a.received_at, a.id.as_str()).cmp(&(b.received_at, b.id.as_str()))
            });
            Ok(Done::Events(events))
        }
        Op::CompleteRouting { routed, now } => {
            complete_routing(tx, routed, *now).await?;
            Ok(Done::Unit)
        }
        Op::ClaimDeliveries {
            target,
            limit,
            now,
            lease_ms,
        } => {
            let rows = sqlx::query(
                "SELECT d.id, d.event_id, d.route, d.step, d.target, d.attempts, d.attempts_base, d.context, \
                        e.source, e.event_type, e.payload, e.received_at \
                 FROM deliveries d JOIN events e ON e.id = d.event_id \
                 WHERE d.status = 'pending' AND d.target = ?1 AND d.next_attempt_at <= ?2 \
                   AND (d.lease_until IS NULL OR d.lease_until < ?2) \
                 ORDER BY d.next_attempt_at, d.id LIMIT ?3",
            )
            .bind(target)
            .bind(*now)
            .bind(i64::from(*limit))
            .fetch_all(&mut *tx)
            .await?;
            let claimed = rows
                .iter()
                .map(|r| {
                    let context: String = r.try_get("context")?;
                    Ok(ClaimedDelivery {
                        id: DeliveryId::from_stored(r.try_get("id")?),
                        event_id: EventId::from_stored(r.try_get("event_id")?),
                        route: r.try_get("route")?,
                        step: u32::try_from(r.try_get::<i64, _>("step")?).unwrap_or(0),
                        target: r.try_get("target")?,
                        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
                        attempts_base: u32::try_from(r.try_get::<i64, _>("attempts_base")?)
                            .unwrap_or(0),
                        context: serde_json::from_str(&context).unwrap_or(serde_json::Value::Null),
                        source: r.try_get("source")?,
                        event_type: r.try_get("event_type")?,
                        payload: r.try_get("payload")?,
                        received_at: r.try_get("received_at")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            if !claimed.is_empty() {
                let sql = format!(
                    "UPDATE deliveries SET lease_until = ?1 WHERE id IN ({})",
                    placeholders(2, claimed.len())
                );
                // Only placeholders are formatted in; the ids are bound.
                let mut q =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now.saturating_add(*lease_ms));
                for c in &claimed {
                    q = q.bind(c.id.as_str());
                }
                q.execute(&mut *tx).await?;
            }
            Ok(Done::Deliveries(claimed))
        }
        Op::RecordAttempt(a) => {
            record_attempts(tx, &[a]).await?;
            Ok(Done::Unit)
        }
        Op::Replay { filter, now } => {
            let done = match filter {
                ReplayFilter::One(id) => {
                    // A finished one is queued with a fresh retry budget; a
                    // pending one waiting for its retry is made due now with
                    // the budget it has. One in flight (leased) is left alone.
                    sqlx::query(
                        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?1, lease_until = NULL, \
                         attempts_base = CASE WHEN status = 'pending' THEN attempts_base ELSE attempts END, updated_at = ?1 \
                         WHERE id = ?2 AND (status IN ('dead', 'delivered') \
                         OR (status = 'pending' AND (lease_until IS NULL OR lease_until <= ?1)))",
                    )
                    .bind(*now)
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?
                }
                ReplayFilter::All { status, target, route } => {
                    sqlx::query(
                        concat!(
                            "UPDATE deliveries SET status = 'pending', next_attempt_at = ?1, lease_until = NULL, \
                             attempts_base = attempts, updated_at = ?1 WHERE ",
                            replay_all_where!()
                        ),
                    )
                    .bind(*now)
                    .bind(status.as_str())
                    .bind(target.as_deref())
                    .bind(route.as_deref())
                    .execute(&mut *tx)
                    .await?
                }
            };
            Ok(Done::Count(done.rows_affected()))
        }
        Op::Prune { cutoff, batch } => {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM deliveries WHERE status IN ('delivered', 'dead') AND updated_at < ?1 LIMIT ?2",
            )
            .bind(*cutoff)
            .bind(i64::from(*batch))
            .fetch_all(&mut *tx)
            .await?;
            let mut pruned = Pruned::default();
            if !ids.is_empty() {
                let list = placeholders(1, ids.len());
                // Only placeholders are formatted in; the ids are bound.
                let mut del_attempts = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM attempts WHERE delivery_id IN ({list})"
                )));
                let mut del_deliveries = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM deliveries WHERE id IN ({list})"
                )));
                for id in &ids {
                    del_attempts = del_attempts.bind(id.as_str());
                    del_deliveries = del_deliveries.bind(id.as_str());
                }
                del_attempts.execute(&mut *tx).await?;
                pruned.deliveries = del_deliveries.execute(&mut *tx).await?.rows_affected();
            }
            // An event goes when it is old, routed, and has no delivery left
            // (pending ones are never pruned, so it has none pending).
            pruned.events = sqlx::query(
                "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.received_at < ?1 \
                 AND e.routed_at IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) LIMIT ?2)",
            )
            .bind(*cutoff)
            .bind(i64::from(*batch))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            Ok(Done::Pruned(pruned))
        }
        Op::DeferRouting {
            event,
            retry_at,
            error,
            ready,
            now,
        } => {
            let ready: Vec<(&EventId, &super::NewDelivery)> =
                ready.iter().map(|d| (event, d)).collect();
            insert_deliveries(tx, &ready, *now).await?;
            sqlx::query(
                "UPDATE events SET lease_until = ?1, route_attempts = route_attempts + 1, route_error = ?2 WHERE id = ?3",
            )
            .bind(*retry_at)
            .bind(error)
            .bind(event.as_str())
            .execute(&mut *tx)
            .await?;
            Ok(Done::Unit)
        }
    }
}

async fn insert_event(tx: &mut SqliteConnection, e: &NewEvent) -> Result<Inserted, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO events (id, source, dedupe_key, event_type, payload, received_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (source, dedupe_key) DO NOTHING",
    )
    .bind(e.id.as_str())
    .bind(&e.source)
    .bind(&e.dedupe_key)
    .bind(&e.event_type)
    .bind(&e.payload)
    .bind(e.received_at)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(Inserted {
            id: e.id.clone(),
            duplicate: false,
        });
    }
    let id: String =
        sqlx::query_scalar("SELECT id FROM events WHERE source = ?1 AND dedupe_key = ?2")
            .bind(&e.source)
            .bind(&e.dedupe_key)
            .fetch_one(&mut *tx)
            .await?;
    Ok(Inserted {
        id: EventId::from_stored(id),
        duplicate: true,
    })
}
