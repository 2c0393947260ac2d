//! PostgreSQL backend: a pool shared by reads and writes, concurrent inbound
//! inserts batched into one statement and one commit, claims that lock rows
//! with `FOR UPDATE SKIP LOCKED` so several instances share the queue. The
//! operations (SQL, decoding) are the shared ones in [`super::ops`].
//!
//! Durability: every write commits before it answers, with the server's
//! `synchronous_commit` (on, as PostgreSQL ships), so a 2xx means committed.
//! Batching keeps that cheap: inserts that arrive while a commit is under
//! way wait for the next one and share it.
//!
//! Leases: an instance that dies keeps its claims until `lease_until`; the
//! claim's lease is the store's `lease_timeout`, and a live instance renews
//! the leases it holds (see [`renewer`]), so a slow attempt is never taken
//! over while its instance is alive.

use super::ops::{self, Done, NewEvent, Op};
use super::sql::{Cell, Conn, Dialect, Row, Stmt, Value, placeholders};
use super::{Inserted, StoreError};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Column, Connection, PgConnection, Row as _, TypeInfo, ValueRef};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Bounds the health probe's statements on the server, under
/// [`super::PROBE_TIMEOUT`].
const PROBE_STATEMENT_TIMEOUT: &str = "SET LOCAL statement_timeout = 2000";

/// Most inserts committed together.
const MAX_INSERT_BATCH: usize = 512;

type InsertReply = oneshot::Sender<Result<Inserted, StoreError>>;

/// The channel of wake-ups between instances: `events` after new events,
/// `deliveries` after new or replayed deliveries.
const CHANNEL: &str = "clickup_bridge";

pub(super) struct PgStore {
    pool: PgPool,
    inserts: mpsc::Sender<(NewEvent, InsertReply)>,
    lease_ms: i64,
    held: Arc<Held>,
}

/// The claims this instance holds, with when it took them, renewed while it
/// lives (for at most [`MAX_HOLD`]).
#[derive(Default)]
struct Held {
    events: Mutex<HashMap<String, Instant>>,
    deliveries: Mutex<HashMap<String, Instant>>,
}

/// No attempt or routing takes this long; a claim held longer was lost by
/// a bug in this process, and is left to expire so another instance takes
/// the work.
const MAX_HOLD: Duration = Duration::from_secs(3600);

fn lock(
    set: &Mutex<HashMap<String, Instant>>,
) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
    // A panic while holding the set cannot leave it inconsistent.
    set.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, PgArguments>,
    args: Vec<Value>,
) -> sqlx::query::Query<'q, sqlx::Postgres, PgArguments> {
    args.into_iter().fold(q, |q, v| match v {
        Value::Int(v) => q.bind(v),
        Value::Text(v) => q.bind(v),
        Value::Bytes(v) => q.bind(v),
    })
}

fn row(r: &PgRow, names: &Arc<[String]>) -> Result<Row, sqlx::Error> {
    let mut cells = Vec::with_capacity(names.len());
    for i in 0..names.len() {
        let raw = r.try_get_raw(i)?;
        let cell = if raw.is_null() {
            Cell::Null
        } else {
            match raw.type_info().name() {
                "INT8" => Cell::Int(r.try_get(i)?),
                "INT4" => Cell::Int(i64::from(r.try_get::<i32, _>(i)?)),
                "INT2" => Cell::Int(i64::from(r.try_get::<i16, _>(i)?)),
                "BOOL" => Cell::Int(i64::from(r.try_get::<bool, _>(i)?)),
                "BYTEA" => Cell::Bytes(r.try_get(i)?),
                _ => Cell::Text(r.try_get(i)?),
            }
        };
        cells.push(cell);
    }
    Ok(Row::new(names.clone(), cells))
}

impl Conn for PgConnection {
    const DIALECT: Dialect = Dialect::Postgres;

    async fn execute(&mut self, stmt: Stmt) -> Result<u64, StoreError> {
        let q = bind(sqlx::query(sqlx::AssertSqlSafe(stmt.sql)), stmt.args);
        Ok(q.execute(&mut *self).await?.rows_affected())
    }

    async fn fetch(&mut self, stmt: Stmt) -> Result<Vec<Row>, StoreError> {
        let q = bind(sqlx::query(sqlx::AssertSqlSafe(stmt.sql)), stmt.args);
        let rows = q.fetch_all(&mut *self).await?;
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let names: Arc<[String]> = first
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        Ok(rows
            .iter()
            .map(|r| row(r, &names))
            .collect::<Result<_, _>>()?)
    }
}

impl PgStore {
    pub(super) async fn open(url: &str, lease_timeout: Duration) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        // One connection first: its error names the cause (refused, bad
        // password, no such database), where a pool only reports a timeout.
        let mut first = PgConnection::connect_with(&options).await?;
        // sqlx's migrator holds a PostgreSQL advisory lock while it runs, so
        // instances that start together migrate one after the other.
        sqlx::migrate!("migrations/postgres")
            .run(&mut first)
            .await
            .map_err(StoreError::migration)?;
        let _ = first.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // While the database is down a request waits this long for a
            // connection, then answers 503; the pool reconnects by itself.
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(inserter(pool.clone(), rx));
        let held = Arc::new(Held::default());
        let lease_ms = i64::try_from(lease_timeout.as_millis()).unwrap_or(i64::MAX);
        tokio::spawn(renewer(pool.clone(), held.clone(), lease_ms));
        Ok(PgStore {
            pool,
            inserts: tx,
            lease_ms,
            held,
        })
    }

    /// Wakes the router and the delivery workers when another instance (or
    /// this one) stores new work; polling remains the fallback.
    pub(super) fn forward_wakeups(
        &self,
        router: Arc<tokio::sync::Notify>,
        deliveries: Arc<tokio::sync::Notify>,
    ) {
        tokio::spawn(listen(self.pool.clone(), router, deliveries));
    }

    /// A reading connection.
    pub(super) async fn reader(
        &self,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    /// Runs a write in its own transaction (inserts: in the next batch).
    pub(super) async fn run(&self, op: Op) -> Result<Done, StoreError> {
        if let Op::InsertEvent(e) = op {
            let (reply, rx) = oneshot::channel();
            self.inserts.send((e, reply)).await.map_err(|_| stopped())?;
            return rx.await.map_err(|_| stopped())?.map(Done::Inserted);
        }
        // Claims take the store's lease, renewed while this instance holds
        // them; finishing work stops the renewal first.
        let op = match op {
            Op::ClaimEvents { limit, now, .. } => Op::ClaimEvents {
                limit,
                now,
                lease_ms: self.lease_ms,
            },
            Op::ClaimDeliveries {
                target, limit, now, ..
            } => Op::ClaimDeliveries {
                target,
                limit,
                now,
                lease_ms: self.lease_ms,
            },
            other => other,
        };
        match &op {
            Op::CompleteRouting { routed, .. } => {
                let mut held = lock(&self.held.events);
                for r in routed.iter() {
                    held.remove(r.event_id.as_str());
                }
            }
            Op::DeferRouting { event, .. } => {
                lock(&self.held.events).remove(event.as_str());
            }
            Op::RecordAttempt(a) => {
                lock(&self.held.deliveries).remove(a.delivery_id.as_str());
            }
            Op::Release(ids) => {
                let mut held = lock(&self.held.deliveries);
                for id in ids {
                    held.remove(id.as_str());
                }
            }
            _ => {}
        }
        let wake = match &op {
            Op::CompleteRouting { .. } | Op::Replay { .. } => true,
            Op::DeferRouting { ready, .. } => !ready.is_empty(),
            _ => false,
        };
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        if matches!(op, Op::Prune { .. }) {
            // One instance prunes at a time; the others find nothing to do.
            let rows = tx
                .fetch(
                    Stmt::new("SELECT pg_try_advisory_xact_lock($1) AS got")
                        .int(super::Exclusive::Retention.key()),
                )
                .await?;
            if rows.first().map(|r| r.int("got")).transpose()? != Some(1) {
                return Ok(Done::Pruned(super::Pruned::default()));
            }
        }
        if matches!(op, Op::Probe { .. }) {
            // The server gives up before the caller does (PROBE_TIMEOUT), so
            // a probe stuck on a lock ends there and its connection goes back
            // to the pool clean instead of cancelled mid-statement.
            tx.execute(Stmt::new(PROBE_STATEMENT_TIMEOUT)).await?;
        }
        let done = ops::run_op(&mut *tx, &op).await?;
        if wake {
            notify(&mut tx, "deliveries").await?;
        }
        tx.commit().await?;
        match &done {
            Done::Events(events) => {
                let at = Instant::now();
                lock(&self.held.events)
                    .extend(events.iter().map(|e| (e.id.as_str().to_owned(), at)));
            }
            Done::Deliveries(d) => {
                let at = Instant::now();
                lock(&self.held.deliveries)
                    .extend(d.iter().map(|d| (d.id.as_str().to_owned(), at)));
            }
            _ => {}
        }
        Ok(done)
    }

    /// A session holding advisory lock `key`, if no other session holds it.
    pub(super) async fn try_lock(&self, key: i64) -> Result<Option<PgConnection>, StoreError> {
        let mut conn = self.pool.acquire().await?.detach();
        let rows = conn
            .fetch(Stmt::new("SELECT pg_try_advisory_lock($1) AS got").int(key))
            .await?;
        let got = rows.first().map(|r| r.int("got")).transpose()? == Some(1);
        Ok(got.then_some(conn))
    }

    /// Takes one request from `target`'s shared budget (GCRA: one request
    /// per `interval_ms`, bursts up to `burst_ms` ahead). `None` when taken;
    /// else how long to wait before asking again.
    pub(super) async fn take_rate(
        &self,
        target: &str,
        interval_ms: i64,
        burst_ms: i64,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let taken = conn
            .fetch(
                Stmt::new(
                    "INSERT INTO rate_limits (target, tat) VALUES ($1, $2 + $3) \
                     ON CONFLICT (target) DO UPDATE SET tat = GREATEST(rate_limits.tat, $2) + $3 \
                     WHERE GREATEST(rate_limits.tat, $2) + $3 - $4 <= $2 RETURNING tat",
                )
                .text(target)
                .int(now)
                .int(interval_ms)
                .int(burst_ms),
            )
            .await?;
        if !taken.is_empty() {
            return Ok(None);
        }
        let rows = conn
            .fetch(Stmt::new("SELECT tat FROM rate_limits WHERE target = $1").text(target))
            .await?;
        let tat = rows
            .first()
            .map(|r| r.int("tat"))
            .transpose()?
            .unwrap_or(now);
        Ok(Some((tat + interval_ms - burst_ms - now).max(1)))
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

fn stopped() -> StoreError {
    StoreError::Internal("the store's insert batcher has stopped")
}

/// Commits inbound inserts in batches: everything queued while the previous
/// commit ran goes in one multi-row INSERT and one commit. A failed batch is
/// retried one by one so one bad event cannot fail its neighbours.
async fn inserter(pool: PgPool, mut rx: mpsc::Receiver<(NewEvent, InsertReply)>) {
    let mut batch: Vec<(NewEvent, InsertReply)> = Vec::with_capacity(MAX_INSERT_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_INSERT_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let events: Vec<&NewEvent> = batch.iter().map(|(e, _)| e).collect();
        match insert_batch(&pool, &events).await {
            Ok(done) => {
                for ((_, reply), d) in batch.drain(..).zip(done) {
                    let _ = reply.send(Ok(d));
                }
            }
            Err(e) if batch.len() > 1 => {
                tracing::warn!(error = %e, batch = batch.len(), "insert batch failed; retrying its events one by one");
                for (event, reply) in batch.drain(..) {
                    let r = insert_batch(&pool, &[&event])
                        .await
                        .and_then(|mut v| v.pop().ok_or_else(ops::unexpected));
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "insert failed");
                if let Some((_, reply)) = batch.pop() {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }
}

async fn insert_batch(pool: &PgPool, events: &[&NewEvent]) -> Result<Vec<Inserted>, StoreError> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let out = ops::insert_events(&mut *tx, events).await?;
    let fresh = || events.iter().zip(&out).filter(|(_, i)| !i.duplicate);
    // Routed at acceptance: nothing for the routers, work for the
    // deliverers of every instance.
    if fresh().any(|(e, _)| e.routing.is_none()) {
        notify(&mut tx, "events").await?;
    }
    if fresh().any(|(e, _)| e.routing.as_ref().is_some_and(|r| !r.deliveries.is_empty())) {
        notify(&mut tx, "deliveries").await?;
    }
    tx.commit().await?;
    Ok(out)
}

/// Queues a wake-up; PostgreSQL sends it to every listener at commit.
async fn notify(tx: &mut PgConnection, what: &'static str) -> Result<(), StoreError> {
    tx.execute(
        Stmt::new("SELECT pg_notify($1, $2)")
            .text(CHANNEL)
            .text(what),
    )
    .await
    .map(|_| ())
}

/// Forwards wake-ups from the database to this instance's workers. When
/// the connection drops it reconnects (PgListener does), pausing a second
/// between failed tries; the workers poll meanwhile.
async fn listen(
    pool: PgPool,
    router: Arc<tokio::sync::Notify>,
    deliveries: Arc<tokio::sync::Notify>,
) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                if pool.is_closed() {
                    return;
                }
                tracing::debug!(error = %e, "wake-up listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::debug!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(n) => match n.payload() {
                    "events" => router.notify_one(),
                    _ => deliveries.notify_one(),
                },
                Err(e) => {
                    if pool.is_closed() {
                        return;
                    }
                    tracing::debug!(error = %e, "wake-up listener lost its connection");
                    // Whatever was announced meanwhile is found by polling;
                    // wake both once so nothing waits for the next poll.
                    router.notify_one();
                    deliveries.notify_one();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// Extends the leases of the claims this instance holds, every third of
/// the lease: a live instance keeps its work however long an attempt takes;
/// a dead one stops renewing and its work is free `lease_timeout` later.
async fn renewer(pool: PgPool, held: Arc<Held>, lease_ms: i64) {
    let every = Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1).max(100));
    loop {
        tokio::time::sleep(every).await;
        if pool.is_closed() {
            return;
        }
        let until = crate::ids::now_millis().saturating_add(lease_ms);
        let current = |set: &Mutex<HashMap<String, Instant>>| -> Vec<String> {
            let mut set = lock(set);
            set.retain(|_, at| at.elapsed() < MAX_HOLD);
            set.keys().cloned().collect()
        };
        let events = current(&held.events);
        let deliveries = current(&held.deliveries);
        let renew = async {
            let mut conn = pool.acquire().await?;
            for chunk in events.chunks(1000) {
                let sql = format!(
                    "UPDATE events SET lease_until = GREATEST(lease_until, $1) \
                     WHERE routed_at IS NULL AND lease_until IS NOT NULL AND id IN ({})",
                    placeholders(2, chunk.len())
                );
                let stmt = chunk
                    .iter()
                    .fold(Stmt::new(sql).int(until), |s, id| s.text(id.as_str()));
                conn.execute(stmt).await?;
            }
            for chunk in deliveries.chunks(1000) {
                let sql = format!(
                    "UPDATE deliveries SET lease_until = GREATEST(lease_until, $1) \
                     WHERE status = 'pending' AND lease_until IS NOT NULL AND id IN ({})",
                    placeholders(2, chunk.len())
                );
                let stmt = chunk
                    .iter()
                    .fold(Stmt::new(sql).int(until), |s, id| s.text(id.as_str()));
                conn.execute(stmt).await?;
            }
            Ok::<(), StoreError>(())
        };
        if let Err(e) = renew.await {
            tracing::warn!(error = %e, "renewing leases failed; retrying");
        }
    }
}
