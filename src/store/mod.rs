//! The store: the only module with SQL.
//!
//! Architecture Invariant: nothing outside `store/` writes SQL or knows the
//! backend. Callers get plain Rust types and a [`StoreError`]. A PostgreSQL
//! backend is added as another variant of [`Backend`] without touching callers.

mod sqlite;

use crate::ids::{DeliveryId, EventId};
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

/// An event claimed by the router.
#[derive(Debug, Clone)]
pub struct EventToRoute {
    /// Its id.
    pub id: EventId,
    /// Source name.
    pub source: String,
    /// Event type.
    pub event_type: String,
    /// Exact body bytes.
    pub payload: Vec<u8>,
    /// Acceptance time, Unix ms.
    pub received_at: i64,
    /// Routing attempts made before (enrichment failures).
    pub route_attempts: u32,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The target accepted it.
    Delivered,
    /// Given up; replayable.
    Dead,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "dead" => Some(DeliveryStatus::Dead),
            _ => None,
        }
    }
}

/// A delivery to create while routing.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Its id (the Idempotency-Key).
    pub id: DeliveryId,
    /// Route name.
    pub route: String,
    /// Index of the send step in the route.
    pub step: u32,
    /// Target name.
    pub target: String,
    /// Extracted values (and enrichment) used to render it.
    pub context: serde_json::Value,
    /// Created dead with this reason (e.g. the ClickUp task does not exist).
    pub dead: Option<String>,
}

/// The result of routing one event.
#[derive(Debug, Clone)]
pub struct RoutedEvent {
    /// The event.
    pub event_id: EventId,
    /// Names of the routes that matched.
    pub matched_routes: Vec<String>,
    /// One delivery per send step of each matched route.
    pub deliveries: Vec<NewDelivery>,
}

/// A delivery claimed by a worker, with what it needs to render.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// Its id.
    pub id: DeliveryId,
    /// The event it comes from.
    pub event_id: EventId,
    /// Route name.
    pub route: String,
    /// Send step index.
    pub step: u32,
    /// Target name.
    pub target: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// Attempts made before the last replay (the retry budget starts there).
    pub attempts_base: u32,
    /// Extracted values.
    pub context: serde_json::Value,
    /// The event's source.
    pub source: String,
    /// The event's type.
    pub event_type: String,
    /// The event's body.
    pub payload: Vec<u8>,
    /// The event's acceptance time, Unix ms.
    pub received_at: i64,
}

/// A link to remember: `name` = `value` for ClickUp task `task_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The ClickUp task the event was about.
    pub task_id: String,
    /// The `remember:` name.
    pub name: String,
    /// What the target created (issue key, task id).
    pub value: String,
}

/// What an attempt decided.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// The target accepted.
    Delivered,
    /// Try again at this time (Unix ms).
    Retry {
        /// When.
        at: i64,
    },
    /// Give up.
    Dead,
}

impl AttemptOutcome {
    fn name(&self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry { .. } => "retry",
            AttemptOutcome::Dead => "dead",
        }
    }
}

/// One attempt, as recorded.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Attempt number, from 1.
    pub n: u32,
    /// When it ended, Unix ms.
    pub at: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// HTTP status, when an answer came.
    pub status_code: Option<u16>,
    /// A bounded excerpt of the answer.
    pub response: Option<String>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// The decision.
    pub outcome: AttemptOutcome,
    /// A link to store with a successful attempt.
    pub link: Option<Link>,
}

/// A delivery as read back (admin, tests).
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    /// Its id.
    pub id: DeliveryId,
    /// The event.
    pub event_id: EventId,
    /// Route name.
    pub route: String,
    /// Step index.
    pub step: u32,
    /// Target name.
    pub target: String,
    /// Status.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub last_error: Option<String>,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Delivered, Unix ms.
    pub delivered_at: Option<i64>,
    /// While pending: when its next attempt is due, Unix ms.
    pub next_attempt_at: Option<i64>,
}

/// One recorded attempt as read back.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    /// Attempt number.
    pub n: u32,
    /// When, Unix ms.
    pub at: i64,
    /// Duration.
    pub duration_ms: i64,
    /// HTTP status.
    pub status_code: Option<u16>,
    /// Answer excerpt.
    pub response: Option<String>,
    /// Error.
    pub error: Option<String>,
    /// delivered, retry or dead.
    pub outcome: String,
}

/// Counts for the queue-depth metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Events not yet routed.
    pub unrouted: u64,
    /// Deliveries waiting for an attempt.
    pub pending: u64,
    /// Deliveries given up.
    pub dead: u64,
    /// Acceptance time of the oldest pending delivery's event, Unix ms.
    pub oldest_pending_received_at: Option<i64>,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Delivered or dead deliveries (with their attempts).
    pub deliveries: u64,
    /// Events with no delivery left to make.
    pub events: u64,
}

/// Filters for listing deliveries.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this status.
    pub status: Option<DeliveryStatus>,
    /// Only this target.
    pub target: Option<String>,
    /// Only this route.
    pub route: Option<String>,
    /// Only this event.
    pub event_id: Option<EventId>,
    /// At most this many (newest first).
    pub limit: u32,
    /// Only ids older than this one (the cursor of the previous page).
    pub before: Option<String>,
}

/// Filters for listing events.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this source.
    pub source: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only events accepted at or after this time (Unix ms).
    pub since: Option<i64>,
    /// Only events accepted before this time (Unix ms).
    pub until: Option<i64>,
    /// At most this many (newest first).
    pub limit: u32,
    /// Only ids older than this one (the cursor of the previous page).
    pub before: Option<String>,
}

/// How many events (per source) or deliveries (per target and status) fell
/// in one time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityCount {
    /// The source (events) or target (deliveries).
    pub name: String,
    /// The delivery's status now (`None` for events).
    pub status: Option<DeliveryStatus>,
    /// Bucket number: 0 starts at [`Activity::since`].
    pub bucket: u32,
    /// How many.
    pub count: u64,
}

/// Events and deliveries since a time, counted per bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// Start of bucket 0, Unix ms.
    pub since: i64,
    /// Width of a bucket, ms.
    pub bucket_ms: i64,
    /// Events accepted, per source and bucket.
    pub events: Vec<ActivityCount>,
    /// Deliveries created, per target, status and bucket.
    pub deliveries: Vec<ActivityCount>,
}

/// Which deliveries to replay.
#[derive(Debug, Clone)]
pub enum ReplayFilter {
    /// One delivery: a dead or delivered one is queued again with a fresh
    /// retry budget; a pending one is made due now.
    One(DeliveryId),
    /// Every delivery in this state, optionally of one target and route.
    All {
        /// dead (or delivered).
        status: DeliveryStatus,
        /// Only this target.
        target: Option<String>,
        /// Only this route.
        route: Option<String>,
    },
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
        event: VerifiedEvent,
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
        self.events_page(source, limit, None).await
    }

    /// Events matching `filter`, newest first.
    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.events(filter).await,
        }
    }

    /// How many deliveries match `filter` (its `limit` and `before` aside).
    pub async fn count_deliveries(&self, filter: &DeliveryFilter) -> Result<u64, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.count_deliveries(filter).await,
        }
    }

    /// Events accepted and deliveries created since `since` (Unix ms), per
    /// bucket of `bucket_ms`.
    pub async fn activity(&self, since: i64, bucket_ms: i64) -> Result<Activity, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.activity(since, bucket_ms).await,
        }
    }

    /// Number of stored events.
    pub async fn count_events(&self) -> Result<u64, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.count_events().await,
        }
    }

    /// Claims up to `limit` unrouted events for `lease_ms`.
    pub async fn claim_events(
        &self,
        limit: u32,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<EventToRoute>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.claim_events(limit, now, lease_ms).await,
        }
    }

    /// Stores routing results: inserts each event's deliveries and marks it
    /// routed, in one transaction per call.
    pub async fn complete_routing(
        &self,
        routed: Vec<RoutedEvent>,
        now: i64,
    ) -> Result<(), StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.complete_routing(routed, now).await,
        }
    }

    /// Claims up to `limit` due deliveries of `target` for `lease_ms`.
    pub async fn claim_deliveries(
        &self,
        target: &str,
        limit: u32,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.claim_deliveries(target, limit, now, lease_ms).await,
        }
    }

    /// Leaves an event unrouted until `retry_at` (its enrichment failed),
    /// storing in the same transaction the deliveries of its routes that did
    /// not need the failed fetch (`ready`), so they go out meanwhile. When the
    /// event is routed again, the same deliveries (same ids) are not created
    /// twice.
    pub async fn defer_routing(
        &self,
        event: &EventId,
        retry_at: i64,
        error: &str,
        ready: Vec<NewDelivery>,
        now: i64,
    ) -> Result<(), StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.defer_routing(event, retry_at, error, ready, now).await,
        }
    }

    /// The links remembered for a ClickUp task.
    pub async fn links(
        &self,
        task_id: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.links(task_id).await,
        }
    }

    /// Records an attempt and applies its outcome to the delivery.
    pub async fn record_attempt(&self, record: AttemptRecord) -> Result<(), StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.record_attempt(record).await,
        }
    }

    /// The earliest time a pending, unleased delivery becomes due.
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.next_due().await,
        }
    }

    /// Deliveries matching `filter`, newest first.
    pub async fn deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.deliveries(filter).await,
        }
    }

    /// The attempts of one delivery, in order.
    pub async fn attempts(&self, delivery: &DeliveryId) -> Result<Vec<AttemptRow>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.attempts(delivery).await,
        }
    }

    /// Routes matched by an event (`None` while unrouted).
    pub async fn matched_routes(&self, event: &EventId) -> Result<Option<Vec<String>>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.matched_routes(event).await,
        }
    }

    /// Events, newest first, at most `limit`, older than `before` (a cursor).
    pub async fn events_page(
        &self,
        source: Option<&str>,
        limit: u32,
        before: Option<&str>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.events(&EventFilter {
            source: source.map(str::to_owned),
            limit,
            before: before.map(str::to_owned),
            ..Default::default()
        })
        .await
    }

    /// One event.
    pub async fn event(&self, id: &EventId) -> Result<Option<StoredEvent>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.event(id).await,
        }
    }

    /// One delivery.
    pub async fn delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRow>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.delivery(id).await,
        }
    }

    /// Targets that have pending deliveries.
    pub async fn pending_targets(&self) -> Result<Vec<String>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.pending_targets().await,
        }
    }

    /// Queues deliveries again (dead or delivered ones matching `filter`, or
    /// the one named): pending, due now, with a fresh retry budget. Returns
    /// how many.
    pub async fn replay(&self, filter: ReplayFilter, now: i64) -> Result<u64, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.replay(filter, now).await,
        }
    }

    /// How many deliveries a bulk replay with this filter would queue (its
    /// dry run).
    pub async fn count_replayable(
        &self,
        status: DeliveryStatus,
        target: Option<&str>,
        route: Option<&str>,
    ) -> Result<u64, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.count_replayable(status, target, route).await,
        }
    }

    /// Counts for metrics.
    pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.queue_stats().await,
        }
    }

    /// Deletes up to `batch` delivered or dead deliveries last updated before
    /// `cutoff` (Unix ms), then events older than `cutoff` with nothing left
    /// to deliver. Pending work is never pruned.
    pub async fn prune(&self, cutoff: i64, batch: u32) -> Result<Pruned, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.prune(cutoff, batch).await,
        }
    }

    /// Finishes pending writes and closes connections.
    pub async fn close(&self) {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.close().await,
        }
    }
}
