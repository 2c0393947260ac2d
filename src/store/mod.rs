//! The store: the only module with SQL.
//!
//! Architecture Invariant: nothing outside `store/` writes SQL or knows the
//! backend. Callers get plain Rust types and a [`StoreError`]. A PostgreSQL
//! backend is added as another variant of [`Backend`] without touching callers.

mod copy;
mod migrate;
mod ops;
mod postgres;
mod sql;
mod sqlite;

use crate::ids::{DeliveryId, EventId};
use crate::settings::StoreLocation;
use crate::verify::VerifiedEvent;
use std::sync::Arc;

pub use copy::Copied;

/// The database driver's error, shared by every operation of a failed batch.
pub type DbError = Arc<dyn std::error::Error + Send + Sync>;

/// A store failure. Inbound answers 503 for any of them (the sender retries).
/// Cloneable: every operation of a batch that failed gets the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or written.
    #[error("store unavailable: {source}; check that the database is up and reachable")]
    Unavailable {
        /// The driver's error.
        #[source]
        source: DbError,
    },
    /// Migrations failed at open.
    #[error(
        "store migration failed: {source}; restore the database from a backup or use the version that created it"
    )]
    Migration {
        /// The migrator's error.
        #[source]
        source: DbError,
    },
    /// The folder of an SQLite store does not exist.
    #[error("the folder {} of the SQLite store does not exist; create it (mkdir -p {}) or fix the store setting", .0.display(), .0.display())]
    NoFolder(std::path::PathBuf),
    /// `store copy` was given an SQLite file that does not exist.
    #[error("there is no SQLite store at {}; give the path of the stopped daemon's store file", .0.display())]
    NoStore(std::path::PathBuf),
    /// A stored value this version cannot read.
    #[error(
        "the store holds a value this version cannot read (column {column}: {detail}); was the database changed by hand or by a newer version?"
    )]
    Corrupt {
        /// The column.
        column: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The target of `store copy` already holds data.
    #[error("the target store is not empty ({0}); copy into a new, empty database")]
    NotEmpty(String),
    /// A bug in the store (never bad data or a database failure).
    #[error("internal store error: {0}; please report it")]
    Internal(&'static str),
}

/// The store gave no answer in time: the cause of an
/// [`StoreError::Unavailable`] the driver did not report itself.
#[derive(Debug, thiserror::Error)]
#[error(
    "no {what} within {} s (a full disk, a read-only file system, or the database locked by another process or unreachable?)",
    .within.as_secs()
)]
pub(crate) struct Stalled {
    what: &'static str,
    within: std::time::Duration,
}

/// How long the health probe may take: the store must commit within it (a
/// wedged writer, a lock held elsewhere or a full disk all fail it).
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl StoreError {
    /// The store did not `what` (e.g. "commit") within `within`.
    pub(crate) fn stalled(what: &'static str, within: std::time::Duration) -> Self {
        StoreError::Unavailable {
            source: Arc::new(Stalled { what, within }),
        }
    }

    fn corrupt(column: &str, detail: impl Into<String>) -> Self {
        StoreError::Corrupt {
            column: column.to_owned(),
            detail: detail.into(),
        }
    }

    fn migration(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration {
            source: Arc::new(e),
        }
    }

    /// Whether the database could not be reached or written (as opposed to
    /// bad data or a bug).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // A value the driver cannot decode is bad data, not an outage.
            sqlx::Error::ColumnDecode { index, source } => StoreError::Corrupt {
                column: index,
                detail: source.to_string(),
            },
            e => StoreError::Unavailable {
                source: Arc::new(e),
            },
        }
    }
}

/// The result of storing an inbound event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// The event's id (the first one's, for a duplicate).
    pub id: EventId,
    /// Whether an event with this dedupe key was already stored.
    pub duplicate: bool,
    /// Deliveries given a claim at acceptance (`NewDelivery::lease_until`)
    /// that were stored unclaimed instead: an earlier delivery of their
    /// ordering key to their target is pending, so the worker claims them
    /// in their turn.
    pub unclaimed: Vec<DeliveryId>,
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
    /// What it waits for before it is attempted.
    pub order: DeliveryOrder,
    /// Claimed by this process at acceptance, until then (Unix ms): stored
    /// leased, with its claim counted, as the worker's claim leaves it
    /// (`deliver::direct`). `None`: stored unclaimed.
    pub lease_until: Option<i64>,
}

/// What a delivery waits for, fixed when it is created. A delivery waits
/// while an earlier (by `seq`) delivery is pending that shares its target
/// and `key`, is an earlier step of its route, or remembers a link it reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryOrder {
    /// The ordering key (`None`: not ordered with other events).
    pub key: Option<String>,
    /// Acceptance order: compared as text between deliveries.
    pub seq: String,
    /// The ClickUp task whose links the step reads.
    pub link_task: Option<String>,
    /// The link names the step reads (`*`: it reads `links` as a whole).
    pub link_names: Vec<String>,
    /// The task and name under which the step remembers what it creates.
    pub remember: Option<(String, String)>,
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

/// The routing of an event decided when it was accepted (every route it
/// fires needs no ClickUp task): stored in the event's own commit, so the
/// event is never "unrouted" and the router never claims it.
#[derive(Debug, Clone, Default)]
pub struct Routing {
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
    /// Earlier claims that ended without an attempt being recorded: each is
    /// a process that stopped (crashed, or was killed) while this delivery
    /// was being rendered or sent.
    pub unfinished_claims: u32,
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
    /// Its ordering key, if it is ordered.
    pub order_key: Option<String>,
    /// While pending: the earlier pending delivery it waits behind.
    pub waiting_for: Option<DeliveryId>,
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
    /// Pending deliveries that wait behind an earlier one (ordering or a
    /// link), counted in `pending` too.
    pub waiting: u64,
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

/// Work that runs on one instance at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exclusive {
    /// The ClickUp webhook watch (and its auto-reactivation).
    ClickUpWatch,
    /// Retention pruning.
    Retention,
}

impl Exclusive {
    /// The PostgreSQL advisory lock key ("cbridge" and a number).
    fn key(self) -> i64 {
        const BASE: i64 = 0x6362_7269_6467_6500;
        match self {
            Exclusive::ClickUpWatch => BASE + 1,
            Exclusive::Retention => BASE + 2,
        }
    }
}

/// Holds an [`Exclusive`] lock until dropped.
pub struct ExclusiveGuard {
    // Closing the session releases its advisory locks.
    _session: Option<sqlx::PgConnection>,
}

enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// Runs the copy inside one transaction of a PostgreSQL target.
async fn copy_into_pg<A: sql::Conn>(
    from: &mut A,
    to: &mut sqlx::pool::PoolConnection<sqlx::Postgres>,
) -> Result<Copied, StoreError> {
    use sqlx::Connection;
    let mut tx = (**to).begin().await?;
    let copied = copy::copy(from, &mut *tx).await?;
    tx.commit().await?;
    Ok(copied)
}

/// Runs a shared read (`ops::...`) on a reading connection of the backend.
/// SQLite reads run on a reader thread, so what the read borrows is named
/// in `[...]` and copied (`to_owned`) into it.
macro_rules! read {
    ($self:ident, |$c:ident| $body:expr) => {
        read!($self, [], |$c| $body)
    };
    ($self:ident, [$($v:ident),*], |$c:ident| $body:expr) => {
        match $self.backend.as_ref() {
            Backend::Sqlite(s) => {
                $(let $v = $v.to_owned();)*
                s.read(move |$c| {
                    $(let $v = &$v;)*
                    futures_executor::block_on($body)
                })
                .await
            }
            Backend::Postgres(p) => {
                let mut conn = p.reader().await?;
                let $c = &mut *conn;
                $body.await
            }
        }
    };
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backend>,
}

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long the claims of an instance that died hold their work before
    /// other instances take it over (PostgreSQL; one process owns an SQLite
    /// file and frees its claims when it starts).
    pub lease_timeout: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            lease_timeout: std::time::Duration::from_secs(60),
        }
    }
}

impl Store {
    /// Opens (creating when missing) and migrates the store.
    pub async fn open(location: &StoreLocation) -> Result<Store, StoreError> {
        Store::open_with(location, &StoreOptions::default()).await
    }

    /// Opens (creating when missing) and migrates the store, with options.
    pub async fn open_with(
        location: &StoreLocation,
        options: &StoreOptions,
    ) -> Result<Store, StoreError> {
        let backend = match location {
            StoreLocation::Sqlite(path) => Backend::Sqlite(sqlite::SqliteStore::open(path).await?),
            StoreLocation::Postgres(url) => {
                Backend::Postgres(postgres::PgStore::open(url, options.lease_timeout).await?)
            }
        };
        Ok(Store {
            backend: Arc::new(backend),
        })
    }

    /// Wakes `router` when new events are stored and `deliveries` when new
    /// deliveries are, by any instance sharing the store (PostgreSQL
    /// LISTEN/NOTIFY). An SQLite store has one process, which wakes its own
    /// workers directly, so this does nothing there.
    pub fn forward_wakeups(
        &self,
        router: Arc<tokio::sync::Notify>,
        deliveries: Arc<tokio::sync::Notify>,
    ) {
        if let Backend::Postgres(p) = self.backend.as_ref() {
            p.forward_wakeups(router, deliveries);
        }
    }

    /// Takes the lock of `what` when no other instance holds it: `None` when
    /// one does. An SQLite store has one process, which always gets it.
    pub async fn exclusive(&self, what: Exclusive) -> Result<Option<ExclusiveGuard>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(_) => Ok(Some(ExclusiveGuard { _session: None })),
            Backend::Postgres(p) => Ok(p
                .try_lock(what.key())
                .await?
                .map(|s| ExclusiveGuard { _session: Some(s) })),
        }
    }

    /// Takes one request from `target`'s rate budget shared by every
    /// instance (PostgreSQL; `interval_ms` per request, bursts of up to
    /// `burst_ms`). `Ok(None)` when taken, else how many ms to wait before
    /// asking again. An SQLite store has one process, whose budget lives in
    /// memory: always `Ok(None)` there.
    pub async fn take_rate(
        &self,
        target: &str,
        interval_ms: i64,
        burst_ms: i64,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(p) => p.take_rate(target, interval_ms, burst_ms, now).await,
        }
    }

    /// Whether several instances may share this store.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend.as_ref(), Backend::Postgres(_))
    }

    async fn write(&self, op: ops::Op) -> Result<ops::Done, StoreError> {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.run(op).await,
            Backend::Postgres(p) => p.run(op).await,
        }
    }

    /// Durably stores a verified event, or finds the earlier one with the same
    /// dedupe key. Returns only after the row is committed.
    pub async fn insert_event(
        &self,
        event: VerifiedEvent,
        received_at: i64,
    ) -> Result<Inserted, StoreError> {
        self.insert_routed_event(event, EventId::generate(), received_at, None)
            .await
    }

    /// [`Store::insert_event`] under the id `id`, with its routing when it
    /// was decided at acceptance: the event, its deliveries and its
    /// "routed" mark in one commit. A duplicate stores none of it (its
    /// first copy was routed).
    pub async fn insert_routed_event(
        &self,
        event: VerifiedEvent,
        id: EventId,
        received_at: i64,
        routing: Option<Routing>,
    ) -> Result<Inserted, StoreError> {
        let (source, identity, payload) = event.into_parts();
        let new = ops::NewEvent {
            id,
            source,
            dedupe_key: identity.dedupe_key,
            event_type: identity.event_type,
            payload,
            received_at,
            routing,
        };
        self.write(ops::Op::InsertEvent(new)).await?.inserted()
    }

    /// Frees deliveries claimed by this process whose work was cut short
    /// (shutdown): claimable again at once, and not counted as a crash.
    pub async fn release_deliveries(&self, ids: &[DeliveryId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(ops::Op::Release(ids.to_vec())).await.map(|_| ())
    }

    /// Whether the store can commit: readiness and the systemd watchdog ask
    /// this. Every backend answers with a real write (the `store_probe` row;
    /// SQLite: through the writer), bounded by [`PROBE_TIMEOUT`], so a store
    /// that cannot commit is reported instead of hanging its callers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let probe = async {
            read!(self, |c| ops::ping(c))?;
            self.write(ops::Op::Probe {
                now: crate::ids::now_millis(),
            })
            .await
            .map(|_| ())
        };
        tokio::time::timeout(PROBE_TIMEOUT, probe)
            .await
            .map_err(|_| StoreError::stalled("commit of the health probe", PROBE_TIMEOUT))?
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
        read!(self, [filter], |c| ops::events(c, filter))
    }

    /// How many deliveries match `filter` (its `limit` and `before` aside).
    pub async fn count_deliveries(&self, filter: &DeliveryFilter) -> Result<u64, StoreError> {
        read!(self, [filter], |c| ops::count_deliveries(c, filter))
    }

    /// Events accepted and deliveries created since `since` (Unix ms), per
    /// bucket of `bucket_ms`.
    pub async fn activity(&self, since: i64, bucket_ms: i64) -> Result<Activity, StoreError> {
        read!(self, |c| ops::activity(c, since, bucket_ms))
    }

    /// Number of stored events.
    pub async fn count_events(&self) -> Result<u64, StoreError> {
        read!(self, |c| ops::count_events(c))
    }

    /// Claims up to `limit` unrouted events for `lease_ms`.
    pub async fn claim_events(
        &self,
        limit: u32,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<EventToRoute>, StoreError> {
        self.write(ops::Op::ClaimEvents {
            limit,
            now,
            lease_ms,
        })
        .await?
        .events()
    }

    /// Stores routing results: inserts each event's deliveries and marks it
    /// routed, in one transaction per call.
    /// Shared (`Arc`), so a caller can try again with the same results
    /// without copying them.
    pub async fn complete_routing(
        &self,
        routed: std::sync::Arc<Vec<RoutedEvent>>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write(ops::Op::CompleteRouting { routed, now })
            .await
            .map(|_| ())
    }

    /// Claims up to `limit` due deliveries of `target` for `lease_ms`.
    pub async fn claim_deliveries(
        &self,
        target: &str,
        limit: u32,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        self.write(ops::Op::ClaimDeliveries {
            target: target.to_owned(),
            limit,
            now,
            lease_ms,
        })
        .await?
        .deliveries()
    }

    /// The database's plan for claiming `target`'s deliveries at `now`, one
    /// line per step (to check that claiming stays an index walk).
    pub async fn claim_plan(&self, target: &str, now: i64) -> Result<Vec<String>, StoreError> {
        read!(self, [target], |c| ops::claim_plan(c, target, now))
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
        self.write(ops::Op::DeferRouting {
            event: event.clone(),
            retry_at,
            error: error.to_owned(),
            ready,
            now,
        })
        .await
        .map(|_| ())
    }

    /// The links remembered for a ClickUp task.
    pub async fn links(
        &self,
        task_id: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
        read!(self, [task_id], |c| ops::links(c, task_id))
    }

    /// Records an attempt and applies its outcome to the delivery.
    pub async fn record_attempt(&self, record: AttemptRecord) -> Result<(), StoreError> {
        self.write(ops::Op::RecordAttempt(record)).await.map(|_| ())
    }

    /// The earliest time a pending, unleased delivery becomes due.
    pub async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        read!(self, |c| ops::next_due(c))
    }

    /// Deliveries matching `filter`, newest first.
    pub async fn deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        read!(self, [filter], |c| ops::deliveries(c, filter))
    }

    /// The attempts of one delivery, in order.
    pub async fn attempts(&self, delivery: &DeliveryId) -> Result<Vec<AttemptRow>, StoreError> {
        read!(self, [delivery], |c| ops::attempts(c, delivery))
    }

    /// Routes matched by an event (`None` while unrouted).
    pub async fn matched_routes(&self, event: &EventId) -> Result<Option<Vec<String>>, StoreError> {
        read!(self, [event], |c| ops::matched_routes(c, event))
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
        read!(self, [id], |c| ops::event(c, id))
    }

    /// One delivery.
    pub async fn delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRow>, StoreError> {
        read!(self, [id], |c| ops::delivery(c, id))
    }

    /// Targets that have pending deliveries.
    pub async fn pending_targets(&self) -> Result<Vec<String>, StoreError> {
        read!(self, |c| ops::pending_targets(c))
    }

    /// Queues deliveries again (dead or delivered ones matching `filter`, or
    /// the one named): pending, due now, with a fresh retry budget. Returns
    /// how many.
    pub async fn replay(&self, filter: ReplayFilter, now: i64) -> Result<u64, StoreError> {
        self.write(ops::Op::Replay { filter, now }).await?.count()
    }

    /// How many deliveries a bulk replay with this filter would queue (its
    /// dry run).
    pub async fn count_replayable(
        &self,
        status: DeliveryStatus,
        target: Option<&str>,
        route: Option<&str>,
    ) -> Result<u64, StoreError> {
        let (target, route) = (target.map(str::to_owned), route.map(str::to_owned));
        read!(self, [target, route], |c| ops::count_replayable(
            c,
            status,
            target.as_deref(),
            route.as_deref()
        ))
    }

    /// Counts for metrics.
    pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        read!(self, |c| ops::queue_stats(c))
    }

    /// Deletes up to `batch` delivered or dead deliveries last updated before
    /// `cutoff` (Unix ms), then events older than `cutoff` with nothing left
    /// to deliver. Pending work is never pruned.
    pub async fn prune(&self, cutoff: i64, batch: u32) -> Result<Pruned, StoreError> {
        self.write(ops::Op::Prune { cutoff, batch }).await?.pruned()
    }

    /// Copies every event (with its dedupe key), delivery, attempt and link
    /// of a stopped store at `from` into the empty store at `to`, in one
    /// transaction of the target. Refuses a target that holds any row, and
    /// a `from` SQLite file that does not exist.
    pub async fn copy(from: &StoreLocation, to: &StoreLocation) -> Result<Copied, StoreError> {
        if let StoreLocation::Sqlite(path) = from
            && !path.is_file()
        {
            return Err(StoreError::NoStore(path.clone()));
        }
        let src = Store::open(from).await?;
        let dst = Store::open(to).await?;
        let copied = match (src.backend.as_ref(), dst.backend.as_ref()) {
            (Backend::Sqlite(a), Backend::Sqlite(b)) => {
                let mut r = a.connection()?;
                sqlite::copy_into(&mut sqlite::Lite(&mut r), b.connection()?).await
            }
            (Backend::Sqlite(a), Backend::Postgres(b)) => {
                let (mut r, mut w) = (a.connection()?, b.reader().await?);
                copy_into_pg(&mut sqlite::Lite(&mut r), &mut w).await
            }
            (Backend::Postgres(a), Backend::Sqlite(b)) => {
                let mut r = a.reader().await?;
                sqlite::copy_into(&mut *r, b.connection()?).await
            }
            (Backend::Postgres(a), Backend::Postgres(b)) => {
                let (mut r, mut w) = (a.reader().await?, b.reader().await?);
                copy_into_pg(&mut *r, &mut w).await
            }
        };
        src.close().await;
        dst.close().await;
        copied
    }

    /// Finishes pending writes and closes connections.
    pub async fn close(&self) {
        match self.backend.as_ref() {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(p) => p.close().await,
        }
    }
}
