//! The store: the only module with SQL.
//!
//! Architecture Invariant: nothing outside `store/` writes SQL or knows the
//! backend. Callers get plain Rust types and a [`StoreError`]. A PostgreSQL
//! backend is added as another variant of [`Backend`] without touching callers.

mod sqlite;

use crate::ids::EventId;
use crate::settings::StoreLocation;
use crate::verify::VerifiedEvent;

/// A store failure. Inbound answers 503 for any of them (the sender retries).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Migrations failed at open.
    #[error("store migration failed: {0}")]
    Migration(String),
    /// This build cannot open that kind of store.
    #[error("unsupported store: {0}")]
    Unsupported(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// The result of storing an inbound event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// The event's id (the first one's, for a duplicate).
    pub id: EventId,
    /// Whether an event with this dedupe key was already stored.
    pub duplicate: bool,
}

/// A stored event, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its id.
    pub id: EventId,
    /// Source name.
    pub source: String,
    /// Event type.
    pub event_type: String,
    /// Dedupe key.
    pub dedupe_key: String,
    /// Exact body bytes.
    pub payload: Vec<u8>,
    /// Acceptance time, Unix milliseconds.
    pub received_at: i64,
    /// When it was routed, if it was.
    pub routed_at: Option<i64>,
}

enum Backend {
    Sqlite(sqlite::SqliteStore),
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: std::sync::Arc<Backend>,
}

impl Store {
    /// Opens (creating when missing) and migrates the store.
    pub async fn open(location: &StoreLocation) -> Result<Store, StoreError> {
        let backend = match location {
            StoreLocation::Sqlite(path) => Backend::Sqlite(sqlite::SqliteStore::open(path).await?),
            StoreLocation::Postgres(_) => {
                return Err(StoreError::Unsupported(
                    "postgres:// is not supported by this version yet; use sqlite://PATH".into(),
                ));
            }
        };
        Ok(Store {
            backend: std::sync::Arc::new(backend),
        })
    }

    /// Durably stores a verified event, or finds the earlier one with the same
    /// dedupe key. Returns only after the row is committed.
    pub async fn insert_event(
        &self,
        event: &VerifiedEvent,
        received_at: i64,
    ) -> Result<Inserted, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.insert_event(event, received_at).await,
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.ping().await,
        }
    }

    /// Recent events, newest first.
    pub async fn recent_events(
        &self,
        source: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.recent_events(source, limit).await,
        }
    }

    /// Number of stored events.
    pub async fn count_events(&self) -> Result<u64, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.count_events().await,
        }
    }

    /// Finishes pending writes and closes connections.
    pub async fn close(&self) {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.close().await,
        }
    }
}
