//! SQLite backend: WAL, one writer task fed by a channel that commits queued
//! operations together (group commit), and a small pool of readers. The
//! operations themselves (SQL, decoding) are the shared ones in
//! [`super::ops`]; this file only schedules and runs them.
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

use super::StoreError;
use super::ops::{self, Done, INSERT_CHUNK, NewEvent, Op};
use super::sql::{Cell, Conn, Dialect, Row, Stmt, Value};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Column, ConnectOptions, Connection, Row as _, SqliteConnection, TypeInfo, ValueRef};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 512;

/// How long a writer connection waits for SQLite's lock before an
/// operation fails (it fails the whole batch at once, never op by op).
const BUSY_TIMEOUT: Duration = Duration::from_secs(3);

/// How long closing a broken writer connection may take before it is
/// dropped: a wedged connection must not wedge the writer too.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Reply = oneshot::Sender<Result<Done, StoreError>>;

enum Msg {
    Op(Op, Reply),
    Shutdown(oneshot::Sender<()>),
}

pub(super) struct SqliteStore {
    writer: mpsc::Sender<Msg>,
    read: SqlitePool,
}

fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments>,
    args: Vec<Value>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, SqliteArguments> {
    args.into_iter().fold(q, |q, v| match v {
        Value::Int(v) => q.bind(v),
        Value::Text(v) => q.bind(v),
        Value::Bytes(v) => q.bind(v),
    })
}

fn row(r: &SqliteRow, names: &Arc<[String]>) -> Result<Row, sqlx::Error> {
    let mut cells = Vec::with_capacity(names.len());
    for i in 0..names.len() {
        let raw = r.try_get_raw(i)?;
        // SQLite types values, not columns: read each as what it holds.
        let cell = if raw.is_null() {
            Cell::Null
        } else {
            match raw.type_info().name() {
                "INTEGER" | "BOOLEAN" => Cell::Int(r.try_get(i)?),
                "BLOB" => Cell::Bytes(r.try_get(i)?),
                _ => Cell::Text(r.try_get(i)?),
            }
        };
        cells.push(cell);
    }
    Ok(Row::new(names.clone(), cells))
}

impl Conn for SqliteConnection {
    const DIALECT: Dialect = Dialect::Sqlite;

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

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
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
    StoreError::Internal("the store writer has stopped")
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
            return Err(StoreError::NoFolder(dir.to_owned()));
        }
        let mut conn = options(path).connect().await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&mut conn)
            .await
            .map_err(StoreError::migration)?;
        // Whatever a previous (crashed) process had claimed is free again.
        conn.execute(Stmt::new(
            "UPDATE events SET lease_until = NULL WHERE lease_until IS NOT NULL",
        ))
        .await?;
        conn.execute(Stmt::new(
            "UPDATE deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL",
        ))
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
        let conns = Conns {
            path: path.to_path_buf(),
            open: Some((conn, fast)),
        };
        tokio::spawn(writer(conns, rx));
        tokio::spawn(checkpointer(read.clone()));
        Ok(SqliteStore { writer: tx, read })
    }

    /// Queues a write for the writer task and waits for its commit.
    pub(super) async fn run(&self, op: Op) -> Result<Done, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Msg::Op(op, reply))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// A reading connection.
    pub(super) async fn reader(
        &self,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, StoreError> {
        Ok(self.read.acquire().await?)
    }

    pub(super) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Msg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.read.close().await;
    }
}

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
async fn writer(mut conns: Conns, mut rx: mpsc::Receiver<Msg>) {
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
        match conns.get().await {
            Ok((durable, fast)) => {
                let broken = match run_group(durable, inserts).await {
                    // Not tried on a store that just failed: answered now
                    // with its error, retried by their callers after the
                    // reconnect.
                    Some(e) => {
                        answer_all(rest, &e);
                        true
                    }
                    None => run_group(fast, rest).await.is_some(),
                };
                if broken {
                    conns.reset().await;
                }
            }
            Err(e) => {
                // Fail fast: every waiting sender hears at once, and the next
                // batch tries to reopen.
                tracing::error!(error = %e, "cannot reopen the store for writing");
                answer_all(inserts, &e);
                answer_all(rest, &e);
            }
        }
        if shutdown.is_some() {
            break;
        }
    }
    rx.close();
    conns.reset().await;
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

fn answer_all(group: Vec<(Op, Reply)>, e: &StoreError) {
    for (_, reply) in group {
        let _ = reply.send(Err(e.clone()));
    }
}

/// The writer's two connections, reopened after a store-level failure.
///
/// After a failed commit (disk full, I/O error, a lock that timed out) a
/// connection may still hold SQLite's write lock or a half-open transaction,
/// and every later write by the other connection would wait on it (the
/// "database is locked by the daemon itself" of a full disk). Closing both
/// and opening fresh ones is the one state known to be clean.
struct Conns {
    path: std::path::PathBuf,
    open: Option<(SqliteConnection, SqliteConnection)>,
}

impl Conns {
    async fn get(&mut self) -> Result<(&mut SqliteConnection, &mut SqliteConnection), StoreError> {
        let (durable, fast) = match self.open.take() {
            Some(open) => open,
            None => {
                let durable = options(&self.path).connect().await?;
                let fast = options(&self.path)
                    .synchronous(SqliteSynchronous::Normal)
                    .connect()
                    .await?;
                tracing::info!("store writer reconnected");
                (durable, fast)
            }
        };
        let (d, f) = self.open.insert((durable, fast));
        Ok((d, f))
    }

    async fn reset(&mut self) {
        if let Some((d, f)) = self.open.take() {
            // Closing rolls back whatever the connection still held; bounded,
            // since a wedged connection must not wedge the writer too.
            let close = async {
                let _ = d.close().await;
                let _ = f.close().await;
            };
            if tokio::time::timeout(CLOSE_TIMEOUT, close).await.is_err() {
                tracing::warn!(
                    "store connections did not close within {} s; dropped",
                    CLOSE_TIMEOUT.as_secs()
                );
            }
        }
    }
}

/// Whether an error is about the database as a whole (lock, disk, file
/// system, connection) rather than one operation's data: then retrying the
/// batch's operations one by one would only wait the lock timeout once per
/// operation, and the connections are reopened.
fn store_level(e: &StoreError) -> bool {
    let StoreError::Unavailable { source } = e else {
        return false;
    };
    match source.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Database(d)) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            // Primary result codes: BUSY 5, LOCKED 6, NOMEM 7, READONLY 8,
            // IOERR 10, CORRUPT 11, FULL 13, CANTOPEN 14, PROTOCOL 15, NOTADB 26.
            .is_some_and(|c| matches!(c & 0xff, 5..=8 | 10 | 11 | 13..=15 | 26)),
        Some(
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_),
        ) => true,
        Some(_) => false,
        // Not the driver's: the store's own (a stall), about the store.
        None => true,
    }
}

/// Runs a group of operations together and answers each; when the group
/// fails, its operations are retried one by one so one bad operation cannot
/// fail its neighbours. Returns the store-level error after which the
/// connections must be reopened, if there was one.
async fn run_group(conn: &mut SqliteConnection, mut group: Vec<(Op, Reply)>) -> Option<StoreError> {
    if group.is_empty() {
        return None;
    }
    let ops: Vec<&Op> = group.iter().map(|(op, _)| op).collect();
    match run_batch(conn, &ops).await {
        Ok(results) => {
            for ((_, reply), r) in group.drain(..).zip(results) {
                let _ = reply.send(Ok(r));
            }
            None
        }
        Err(e) if group.len() > 1 && !store_level(&e) => {
            tracing::warn!(error = %e, batch = group.len(), "store batch failed; retrying its operations one by one");
            let mut broken: Option<StoreError> = None;
            for (op, reply) in group.drain(..) {
                let r = match &broken {
                    // Not tried on a store that just failed.
                    Some(e) => Err(e.clone()),
                    None => match run_batch(conn, &[&op]).await {
                        Ok(mut v) => v.pop().ok_or_else(ops::unexpected),
                        Err(e) => {
                            if store_level(&e) {
                                broken = Some(e.clone());
                            }
                            Err(e)
                        }
                    },
                };
                let _ = reply.send(r);
            }
            broken
        }
        Err(e) => {
            tracing::error!(error = %e, batch = group.len(), "store write failed; nothing of this batch was committed");
            answer_all(group, &e);
            store_level(&e).then_some(e)
        }
    }
}

async fn run_batch(conn: &mut SqliteConnection, batch: &[&Op]) -> Result<Vec<Done>, StoreError> {
    let inserts: Vec<&NewEvent> = batch
        .iter()
        .filter_map(|op| match op {
            Op::InsertEvent(e) => Some(e),
            _ => None,
        })
        .collect();
    if inserts.len() == batch.len() && inserts.len() <= INSERT_CHUNK {
        // Inserts only, one statement: it is its own transaction, so the
        // BEGIN and COMMIT round trips are saved (the common case under load).
        return Ok(ops::insert_events(conn, &inserts)
            .await?
            .into_iter()
            .map(Done::Inserted)
            .collect());
    }
    let mut tx = conn.begin().await?;
    let out = ops::run_ops(&mut *tx, batch).await?;
    tx.commit().await?;
    Ok(out)
}
