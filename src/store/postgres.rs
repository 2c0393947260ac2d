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
use super::sql::{Cell, Conn, Dialect, Row, Stmt, Value};
use super::{Inserted, StoreError};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Column, Connection, PgConnection, Row as _, TypeInfo, ValueRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most inserts committed together.
const MAX_INSERT_BATCH: usize = 512;

type InsertReply = oneshot::Sender<Result<Inserted, StoreError>>;

pub(super) struct PgStore {
    pool: PgPool,
    inserts: mpsc::Sender<(NewEvent, InsertReply)>,
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
    pub(super) async fn open(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            // While the database is down a request waits this long for a
            // connection, then answers 503; the pool reconnects by itself.
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        // sqlx's migrator holds a PostgreSQL advisory lock while it runs, so
        // instances that start together migrate one after the other.
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(StoreError::migration)?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(inserter(pool.clone(), rx));
        Ok(PgStore { pool, inserts: tx })
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
            self.inserts
                .send((e, reply))
                .await
                .map_err(|_| stopped())?;
            return rx.await.map_err(|_| stopped())?.map(Done::Inserted);
        }
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let done = ops::run_op(&mut *tx, &op).await?;
        tx.commit().await?;
        Ok(done)
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        ops::ping(&mut *self.reader().await?).await
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
    tx.commit().await?;
    Ok(out)
}
