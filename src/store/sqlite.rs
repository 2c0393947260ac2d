//! SQLite backend: WAL, `synchronous=FULL`, one writer connection fed by a
//! channel that commits queued inserts together (group commit), and a small
//! pool of readers.
//!
//! Why group commit: SQLite has one writer at a time and each durable commit
//! costs an fsync. Concurrent requests queue on the channel; the writer takes
//! everything queued (up to [`MAX_BATCH`]) into one transaction, so one fsync
//! acknowledges many events and every 200 still means "on disk".

use super::{Inserted, StoreError, StoredEvent};
use crate::ids::EventId;
use crate::verify::VerifiedEvent;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};
use std::path::Path;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most inserts committed in one transaction.
const MAX_BATCH: usize = 512;

struct NewEvent {
    id: EventId,
    source: String,
    dedupe_key: String,
    event_type: String,
    payload: Vec<u8>,
    received_at: i64,
}

enum Msg {
    Insert(NewEvent, oneshot::Sender<Result<Inserted, StoreError>>),
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
        .log_statements(tracing::log::LevelFilter::Trace)
}

impl SqliteStore {
    pub(super) async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut conn = options(path).connect().await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options(path))
            .await?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(writer(conn, rx));
        Ok(SqliteStore { writer: tx, read })
    }

    pub(super) async fn insert_event(
        &self,
        event: &VerifiedEvent,
        received_at: i64,
    ) -> Result<Inserted, StoreError> {
        let new = NewEvent {
            id: EventId::generate(),
            source: event.source().to_owned(),
            dedupe_key: event.identity().dedupe_key.clone(),
            event_type: event.identity().event_type.clone(),
            payload: event.body().to_vec(),
            received_at,
        };
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Msg::Insert(new, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        if self.writer.is_closed() {
            return Err(StoreError::Unavailable(
                "the store writer has stopped".into(),
            ));
        }
        Ok(())
    }

    pub(super) async fn recent_events(
        &self,
        source: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, source, event_type, dedupe_key, payload, received_at, routed_at FROM events \
             WHERE (?1 IS NULL OR source = ?1) ORDER BY received_at DESC, id DESC LIMIT ?2",
        )
        .bind(source)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    id: EventId::from_stored(r.try_get("id")?),
                    source: r.try_get("source")?,
                    event_type: r.try_get("event_type")?,
                    dedupe_key: r.try_get("dedupe_key")?,
                    payload: r.try_get("payload")?,
                    received_at: r.try_get("received_at")?,
                    routed_at: r.try_get("routed_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    pub(super) async fn count_events(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&self.read)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(super) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writer.send(Msg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.read.close().await;
    }
}

/// The single writer: drains the queue into one transaction per batch.
async fn writer(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Msg>) {
    let mut batch: Vec<(NewEvent, oneshot::Sender<Result<Inserted, StoreError>>)> =
        Vec::with_capacity(MAX_BATCH);
    let mut shutdown: Option<oneshot::Sender<()>> = None;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Insert(e, reply) => batch.push((e, reply)),
                Msg::Shutdown(done) => {
                    shutdown = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let events: Vec<&NewEvent> = batch.iter().map(|(e, _)| e).collect();
            match write_batch(&mut conn, &events).await {
                Ok(results) => {
                    for ((_, reply), r) in batch.drain(..).zip(results) {
                        let _ = reply.send(Ok(r));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, batch = batch.len(), "store write failed");
                    for (_, reply) in batch.drain(..) {
                        let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
                    }
                }
            }
        }
        if shutdown.is_some() {
            break;
        }
    }
    rx.close();
    let _ = conn.close().await;
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

async fn write_batch(
    conn: &mut SqliteConnection,
    events: &[&NewEvent],
) -> Result<Vec<Inserted>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
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
    tx.commit().await?;
    Ok(out)
}
