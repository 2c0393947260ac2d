//! Every store operation, written once: its SQL, its arguments, how its rows
//! decode. Both backends run these on their own connections ([`Conn`]); they
//! differ only in how they schedule writes (SQLite: one group-commit writer;
//! PostgreSQL: a pool, batched inserts) and in their [`Dialect`].
//!
//! Decoding fails loudly: a row this version cannot read (an unknown status,
//! a negative count, context that is not JSON) is a [`StoreError::Corrupt`],
//! never a silent default.

use super::sql::{Conn, Dialect, Row, Stmt, placeholders, values_rows};
use super::{
    Activity, ActivityCount, AttemptOutcome, AttemptRecord, AttemptRow, ClaimedDelivery,
    DeliveryFilter, DeliveryRow, DeliveryStatus, EventFilter, EventToRoute, Inserted, Link,
    NewDelivery, Pruned, QueueStats, ReplayFilter, RoutedEvent, Routing, StoreError, StoredEvent,
};
use crate::ids::{DeliveryId, EventId};
use std::borrow::Cow;
use std::sync::LazyLock;

/// An id's time may precede the row's recorded time by a little (the id is
/// made first); a time window's id range starts this much earlier.
const ID_CLOCK_SLACK_MS: i64 = 1_000;

/// Rows per multi-row INSERT of events (8 values each).
pub(super) const INSERT_CHUNK: usize = 512;
/// Rows per multi-row statement of deliveries (15 values each).
const DELIVERY_CHUNK: usize = 256;
/// Rows per multi-row statement of attempt records (8 values each).
const RECORD_CHUNK: usize = 256;

/// An inbound event to insert.
#[derive(Debug, Clone)]
pub(super) struct NewEvent {
    pub(super) id: EventId,
    pub(super) source: String,
    pub(super) dedupe_key: String,
    pub(super) event_type: String,
    pub(super) payload: Vec<u8>,
    pub(super) received_at: i64,
    /// Routing decided at acceptance, stored in the same commit.
    pub(super) routing: Option<Routing>,
}

/// A write, queued (SQLite) or run in a transaction (PostgreSQL).
pub(super) enum Op {
    InsertEvent(NewEvent),
    ClaimEvents {
        limit: u32,
        now: i64,
        lease_ms: i64,
    },
    CompleteRouting {
        /// Shared with the caller, which retries with it without copying.
        routed: std::sync::Arc<Vec<RoutedEvent>>,
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
        ready: Vec<NewDelivery>,
        now: i64,
    },
    /// Frees claims of work this process did not do (shutdown).
    Release(Vec<DeliveryId>),
    /// A real write, so health reports whether a commit succeeds.
    Probe {
        now: i64,
    },
}

/// What a write returned.
pub(super) enum Done {
    Count(u64),
    Pruned(Pruned),
    Inserted(Inserted),
    Events(Vec<EventToRoute>),
    Deliveries(Vec<ClaimedDelivery>),
    Unit,
}

/// The answer did not match the operation (a bug, never bad data).
pub(super) fn unexpected() -> StoreError {
    StoreError::Internal("the store answered an operation with another one's result")
}

impl Done {
    pub(super) fn count(self) -> Result<u64, StoreError> {
        match self {
            Done::Count(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }
    pub(super) fn pruned(self) -> Result<Pruned, StoreError> {
        match self {
            Done::Pruned(p) => Ok(p),
            _ => Err(unexpected()),
        }
    }
    pub(super) fn inserted(self) -> Result<Inserted, StoreError> {
        match self {
            Done::Inserted(i) => Ok(i),
            _ => Err(unexpected()),
        }
    }
    pub(super) fn events(self) -> Result<Vec<EventToRoute>, StoreError> {
        match self {
            Done::Events(e) => Ok(e),
            _ => Err(unexpected()),
        }
    }
    pub(super) fn deliveries(self) -> Result<Vec<ClaimedDelivery>, StoreError> {
        match self {
            Done::Deliveries(d) => Ok(d),
            _ => Err(unexpected()),
        }
    }
}

// ---------------------------------------------------------------- decoding

fn status(row: &Row, column: &str) -> Result<DeliveryStatus, StoreError> {
    let s = row.text(column)?;
    DeliveryStatus::parse(&s)
        .ok_or_else(|| StoreError::corrupt(column, format!("unknown delivery status {s:?}")))
}

fn json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::corrupt(column, format!("not the JSON expected: {e}")))
}

/// The columns [`stored_event`] reads.
pub(super) const EVENT_COLUMNS: &str =
    "id, source, event_type, dedupe_key, payload, received_at, routed_at";

fn stored_event(r: &Row) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        id: EventId::from_stored(r.text("id")?),
        source: r.text("source")?,
        event_type: r.text("event_type")?,
        dedupe_key: r.text("dedupe_key")?,
        payload: r.bytes("payload")?,
        received_at: r.int("received_at")?,
        routed_at: r.opt_int("routed_at")?,
    })
}

/// The columns [`delivery_row`] reads (besides `waiting_for`).
pub(super) const DELIVERY_COLUMNS: &str = "id, event_id, route, step, target, status, attempts, last_error, created_at, delivered_at, next_attempt_at, order_key";

// What a pending delivery `d` waits behind: a pending delivery `p` that is
// earlier in its chain. Each is one lookup in an index (deliveries_order,
// the UNIQUE (event_id, route, step), deliveries_remember). Every wait
// points to an earlier `order_seq` (a step's too), so waits never form a
// cycle.

/// An earlier delivery of the same target and ordering key.
const BEHIND_KEY: &str = "p.status = 'pending' AND p.target = d.target AND p.order_key = d.order_key \
     AND p.order_seq < d.order_seq";
/// An earlier step of the same route for the same event.
const BEHIND_STEP: &str =
    "p.status = 'pending' AND p.event_id = d.event_id AND p.route = d.route AND p.step < d.step";

/// An earlier delivery that remembers a link `d` reads, for the same task.
fn behind_link(dialect: Dialect) -> String {
    format!(
        "p.status = 'pending' AND p.remember_task = d.link_task AND p.order_seq < d.order_seq \
         AND (d.link_names = ',*,' OR {})",
        dialect.contains("d.link_names", "',' || p.remember_name || ','")
    )
}

/// Ends each "is there one ahead?" subquery. `OFFSET 0` keeps PostgreSQL
/// from turning it into an anti-join, whose plan (with stale statistics of
/// a fast-growing table) can compare every pending delivery of the target
/// with every other; as a subplan it is one index lookup per candidate, as
/// on SQLite (where this changes nothing).
const PROBE: &str = " LIMIT 1 OFFSET 0";

/// SQL true when the pending delivery `d` waits behind another.
fn waits(dialect: Dialect) -> String {
    format!(
        "(EXISTS (SELECT 1 FROM deliveries p WHERE {BEHIND_STEP}{PROBE}) \
         OR EXISTS (SELECT 1 FROM deliveries p WHERE {BEHIND_KEY}{PROBE}) \
         OR EXISTS (SELECT 1 FROM deliveries p WHERE {}{PROBE}))",
        behind_link(dialect)
    )
}

/// The `waiting_for` column of a delivery `d`: the id of the earliest
/// pending delivery it waits behind (its route's step first, then its key,
/// then a link), NULL when it does not wait.
fn waiting_for_column(dialect: Dialect) -> String {
    format!(
        "CASE WHEN d.status = 'pending' THEN COALESCE(\
         (SELECT p.id FROM deliveries p WHERE {BEHIND_STEP} ORDER BY p.step LIMIT 1), \
         (SELECT p.id FROM deliveries p WHERE {BEHIND_KEY} ORDER BY p.order_seq LIMIT 1), \
         (SELECT p.id FROM deliveries p WHERE {} ORDER BY p.order_seq LIMIT 1)) END AS waiting_for",
        behind_link(dialect)
    )
}

fn delivery_row(r: &Row) -> Result<DeliveryRow, StoreError> {
    let status = status(r, "status")?;
    Ok(DeliveryRow {
        id: DeliveryId::from_stored(r.text("id")?),
        event_id: EventId::from_stored(r.text("event_id")?),
        route: r.text("route")?,
        step: r.num("step")?,
        target: r.text("target")?,
        status,
        attempts: r.num("attempts")?,
        last_error: r.opt_text("last_error")?,
        created_at: r.int("created_at")?,
        delivered_at: r.opt_int("delivered_at")?,
        next_attempt_at: if status == DeliveryStatus::Pending {
            Some(r.int("next_attempt_at")?)
        } else {
            None
        },
        order_key: r.opt_text("order_key")?,
        waiting_for: r.opt_text("waiting_for")?.map(DeliveryId::from_stored),
    })
}

fn event_to_route(r: &Row) -> Result<EventToRoute, StoreError> {
    Ok(EventToRoute {
        id: EventId::from_stored(r.text("id")?),
        source: r.text("source")?,
        event_type: r.text("event_type")?,
        payload: r.bytes("payload")?,
        received_at: r.int("received_at")?,
        route_attempts: r.num("route_attempts")?,
    })
}

fn claimed_delivery(r: &Row) -> Result<ClaimedDelivery, StoreError> {
    Ok(ClaimedDelivery {
        id: DeliveryId::from_stored(r.text("id")?),
        event_id: EventId::from_stored(r.text("event_id")?),
        route: r.text("route")?,
        step: r.num("step")?,
        target: r.text("target")?,
        attempts: r.num("attempts")?,
        attempts_base: r.num("attempts_base")?,
        unfinished_claims: r.num("claims")?,
        context: json("context", &r.text("context")?)?,
        source: r.text("source")?,
        event_type: r.text("event_type")?,
        payload: r.bytes("payload")?,
        received_at: r.int("received_at")?,
    })
}

fn attempt_row(r: &Row) -> Result<AttemptRow, StoreError> {
    let outcome = r.text("outcome")?;
    if !matches!(outcome.as_str(), "delivered" | "retry" | "dead") {
        return Err(StoreError::corrupt(
            "outcome",
            format!("unknown attempt outcome {outcome:?}"),
        ));
    }
    Ok(AttemptRow {
        n: r.num("n")?,
        at: r.int("at")?,
        duration_ms: r.int("duration_ms")?,
        status_code: r.opt_num("status_code")?,
        response: r.opt_text("response")?,
        error: r.opt_text("error")?,
        outcome,
    })
}

fn one_count(rows: Vec<Row>) -> Result<u64, StoreError> {
    rows.first()
        .ok_or_else(|| StoreError::corrupt("n", "a count returned no row"))?
        .num("n")
}

fn one_opt_int(rows: Vec<Row>, column: &str) -> Result<Option<i64>, StoreError> {
    match rows.first() {
        Some(r) => r.opt_int(column),
        None => Ok(None),
    }
}

fn limit(n: u32) -> i64 {
    i64::from(if n == 0 { 100 } else { n })
}

// ------------------------------------------------------------------- reads

pub(super) async fn links<C: Conn>(
    c: &mut C,
    task_id: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    let rows = c
        .fetch(Stmt::new("SELECT name, value FROM links WHERE task_id = $1").text(task_id))
        .await?;
    let mut out = serde_json::Map::new();
    for r in rows {
        out.insert(r.text("name")?, serde_json::Value::String(r.text("value")?));
    }
    Ok(out)
}

pub(super) async fn ping<C: Conn>(c: &mut C) -> Result<(), StoreError> {
    c.fetch(Stmt::new("SELECT 1 AS one")).await.map(|_| ())
}

pub(super) async fn events<C: Conn>(
    c: &mut C,
    f: &EventFilter,
) -> Result<Vec<StoredEvent>, StoreError> {
    // Ids are time-ordered (UUID v7), so a time window is also an id range
    // the primary key serves; received_at keeps it exact.
    let floor = f
        .since
        .map(|t| EventId::floor(t.saturating_sub(ID_CLOCK_SLACK_MS)));
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE ($1 IS NULL OR source = $1) AND ($2 IS NULL OR id < $2) \
         AND ($4 IS NULL OR event_type = $4) AND ($5 IS NULL OR id >= $5) \
         AND ($6 IS NULL OR received_at >= $6) AND ($7 IS NULL OR received_at < $7) \
         ORDER BY id DESC LIMIT $3"
    );
    let rows = c
        .fetch(
            Stmt::new(sql)
                .opt_text(f.source.as_deref())
                .opt_text(f.before.as_deref())
                .int(limit(f.limit))
                .opt_text(f.event_type.as_deref())
                .opt_text(floor.as_deref())
                .opt_int(f.since)
                .opt_int(f.until),
        )
        .await?;
    rows.iter().map(stored_event).collect()
}

pub(super) async fn count_deliveries<C: Conn>(
    c: &mut C,
    f: &DeliveryFilter,
) -> Result<u64, StoreError> {
    let rows = c
        .fetch(
            Stmt::new(
                "SELECT COUNT(*) AS n FROM deliveries WHERE ($1 IS NULL OR status = $1) \
                 AND ($2 IS NULL OR target = $2) AND ($3 IS NULL OR route = $3) \
                 AND ($4 IS NULL OR event_id = $4)",
            )
            .opt_text(f.status.map(DeliveryStatus::as_str))
            .opt_text(f.target.as_deref())
            .opt_text(f.route.as_deref())
            .opt_text(f.event_id.as_ref().map(EventId::as_str)),
        )
        .await?;
    one_count(rows)
}

pub(super) async fn activity<C: Conn>(
    c: &mut C,
    since: i64,
    bucket_ms: i64,
) -> Result<Activity, StoreError> {
    let bucket_ms = bucket_ms.max(1);
    let slack = since.saturating_sub(ID_CLOCK_SLACK_MS);
    let events = c
        .fetch(
            Stmt::new(
                "SELECT source AS name, (received_at - $1) / $2 AS bucket, COUNT(*) AS n \
                 FROM events WHERE id >= $3 AND received_at >= $1 GROUP BY source, bucket",
            )
            .int(since)
            .int(bucket_ms)
            .text(EventId::floor(slack)),
        )
        .await?;
    let deliveries = c
        .fetch(
            Stmt::new(
                "SELECT target AS name, status, (created_at - $1) / $2 AS bucket, COUNT(*) AS n \
                 FROM deliveries WHERE id >= $3 AND created_at >= $1 \
                 GROUP BY target, status, bucket",
            )
            .int(since)
            .int(bucket_ms)
            .text(DeliveryId::floor(slack)),
        )
        .await?;
    let count = |r: &Row, status: Option<DeliveryStatus>| -> Result<ActivityCount, StoreError> {
        Ok(ActivityCount {
            name: r.text("name")?,
            status,
            bucket: r.num("bucket")?,
            count: r.num("n")?,
        })
    };
    Ok(Activity {
        since,
        bucket_ms,
        events: events
            .iter()
            .map(|r| count(r, None))
            .collect::<Result<_, _>>()?,
        deliveries: deliveries
            .iter()
            .map(|r| count(r, Some(status(r, "status")?)))
            .collect::<Result<_, _>>()?,
    })
}

pub(super) async fn event<C: Conn>(
    c: &mut C,
    id: &EventId,
) -> Result<Option<StoredEvent>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
    let rows = c.fetch(Stmt::new(sql).text(id.as_str())).await?;
    rows.first().map(stored_event).transpose()
}

pub(super) async fn delivery<C: Conn>(
    c: &mut C,
    id: &DeliveryId,
) -> Result<Option<DeliveryRow>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS}, {} FROM deliveries d WHERE id = $1",
        waiting_for_column(C::DIALECT)
    );
    let rows = c.fetch(Stmt::new(sql).text(id.as_str())).await?;
    rows.first().map(delivery_row).transpose()
}

pub(super) async fn pending_targets<C: Conn>(c: &mut C) -> Result<Vec<String>, StoreError> {
    let rows = c
        .fetch(Stmt::new(
            "SELECT DISTINCT target FROM deliveries WHERE status = 'pending'",
        ))
        .await?;
    rows.iter().map(|r| r.text("target")).collect()
}

pub(super) async fn queue_stats<C: Conn>(c: &mut C) -> Result<QueueStats, StoreError> {
    let unrouted = one_count(
        c.fetch(Stmt::new(
            "SELECT COUNT(*) AS n FROM events WHERE routed_at IS NULL",
        ))
        .await?,
    )?;
    let pending = one_count(
        c.fetch(Stmt::new(
            "SELECT COUNT(*) AS n FROM deliveries WHERE status = 'pending'",
        ))
        .await?,
    )?;
    let dead = one_count(
        c.fetch(Stmt::new(
            "SELECT COUNT(*) AS n FROM deliveries WHERE status = 'dead'",
        ))
        .await?,
    )?;
    let waiting = one_count(
        c.fetch(Stmt::new(format!(
            "SELECT COUNT(*) AS n FROM deliveries d WHERE d.status = 'pending' AND {}",
            waits(C::DIALECT)
        )))
        .await?,
    )?;
    let oldest = one_opt_int(
        c.fetch(Stmt::new(
            "SELECT MIN(e.received_at) AS t FROM deliveries d JOIN events e ON e.id = d.event_id \
             WHERE d.status = 'pending'",
        ))
        .await?,
        "t",
    )?;
    Ok(QueueStats {
        unrouted,
        pending,
        dead,
        waiting,
        oldest_pending_received_at: oldest,
    })
}

/// The deliveries a bulk replay takes ($2 status, $3 target, $4 route):
/// written once for the replay and for its dry run's count.
const REPLAY_ALL_WHERE: &str = "status = $2 AND status != 'pending' AND ($3 IS NULL OR target = $3) AND ($4 IS NULL OR route = $4)";

pub(super) async fn count_replayable<C: Conn>(
    c: &mut C,
    status: DeliveryStatus,
    target: Option<&str>,
    route: Option<&str>,
) -> Result<u64, StoreError> {
    // $1 is unused here; it keeps the placeholders of the shared clause.
    let sql =
        format!("SELECT COUNT(*) AS n FROM deliveries WHERE $1 IS NULL AND {REPLAY_ALL_WHERE}");
    let rows = c
        .fetch(
            Stmt::new(sql)
                .opt_int(None)
                .text(status.as_str())
                .opt_text(target)
                .opt_text(route),
        )
        .await?;
    one_count(rows)
}

pub(super) async fn count_events<C: Conn>(c: &mut C) -> Result<u64, StoreError> {
    one_count(
        c.fetch(Stmt::new("SELECT COUNT(*) AS n FROM events"))
            .await?,
    )
}

pub(super) async fn next_due<C: Conn>(c: &mut C) -> Result<Option<i64>, StoreError> {
    // Leased rows count too (their time is past, so the worker falls back to
    // its wake-ups); the partial index makes this O(log n).
    let rows = c
        .fetch(Stmt::new(
            "SELECT MIN(next_attempt_at) AS t FROM deliveries WHERE status = 'pending'",
        ))
        .await?;
    one_opt_int(rows, "t")
}

pub(super) async fn deliveries<C: Conn>(
    c: &mut C,
    f: &DeliveryFilter,
) -> Result<Vec<DeliveryRow>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS}, {} FROM deliveries d WHERE ($1 IS NULL OR status = $1) \
         AND ($2 IS NULL OR target = $2) AND ($3 IS NULL OR route = $3) \
         AND ($4 IS NULL OR event_id = $4) AND ($6 IS NULL OR id < $6) \
         ORDER BY id DESC LIMIT $5",
        waiting_for_column(C::DIALECT)
    );
    let rows = c
        .fetch(
            Stmt::new(sql)
                .opt_text(f.status.map(DeliveryStatus::as_str))
                .opt_text(f.target.as_deref())
                .opt_text(f.route.as_deref())
                .opt_text(f.event_id.as_ref().map(EventId::as_str))
                .int(limit(f.limit))
                .opt_text(f.before.as_deref()),
        )
        .await?;
    rows.iter().map(delivery_row).collect()
}

pub(super) async fn attempts<C: Conn>(
    c: &mut C,
    delivery: &DeliveryId,
) -> Result<Vec<AttemptRow>, StoreError> {
    let rows = c
        .fetch(
            Stmt::new(
                "SELECT n, at, duration_ms, status_code, response, error, outcome FROM attempts \
                 WHERE delivery_id = $1 ORDER BY n",
            )
            .text(delivery.as_str()),
        )
        .await?;
    rows.iter().map(attempt_row).collect()
}

pub(super) async fn matched_routes<C: Conn>(
    c: &mut C,
    event: &EventId,
) -> Result<Option<Vec<String>>, StoreError> {
    let rows = c
        .fetch(Stmt::new("SELECT matched_routes FROM events WHERE id = $1").text(event.as_str()))
        .await?;
    match rows.first() {
        None => Ok(None),
        Some(r) => r
            .opt_text("matched_routes")?
            .map(|s| json("matched_routes", &s))
            .transpose(),
    }
}

// ------------------------------------------------------------------ writes

/// Runs a batch of operations on one open transaction: runs of inserts and
/// of attempt records go in multi-row statements (one round trip instead of
/// one per row). Returns one answer per operation, in order.
pub(super) async fn run_ops<C: Conn>(c: &mut C, ops: &[&Op]) -> Result<Vec<Done>, StoreError> {
    let mut out = Vec::with_capacity(ops.len());
    let mut i = 0;
    while i < ops.len() {
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
                out.extend(
                    insert_events(c, &events)
                        .await?
                        .into_iter()
                        .map(Done::Inserted),
                );
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
                record_attempts(c, &records).await?;
                out.extend((0..same).map(|_| Done::Unit));
                i += same;
            }
            op => {
                out.push(run_op(c, op).await?);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Runs one operation inside an open transaction.
pub(super) async fn run_op<C: Conn>(c: &mut C, op: &Op) -> Result<Done, StoreError> {
    match op {
        Op::InsertEvent(e) => {
            let mut v = insert_events(c, &[e]).await?;
            v.pop().map(Done::Inserted).ok_or_else(unexpected)
        }
        Op::ClaimEvents {
            limit,
            now,
            lease_ms,
        } => claim_events(c, *limit, *now, *lease_ms)
            .await
            .map(Done::Events),
        Op::CompleteRouting { routed, now } => {
            complete_routing(c, routed.as_slice(), *now).await?;
            Ok(Done::Unit)
        }
        Op::ClaimDeliveries {
            target,
            limit,
            now,
            lease_ms,
        } => claim_deliveries(c, target, *limit, *now, *lease_ms)
            .await
            .map(Done::Deliveries),
        Op::RecordAttempt(a) => {
            record_attempts(c, &[a]).await?;
            Ok(Done::Unit)
        }
        Op::Replay { filter, now } => replay(c, filter, *now).await.map(Done::Count),
        Op::Prune { cutoff, batch } => prune(c, *cutoff, *batch).await.map(Done::Pruned),
        Op::DeferRouting {
            event,
            retry_at,
            error,
            ready,
            now,
        } => {
            let ready: Vec<(&EventId, &NewDelivery)> = ready.iter().map(|d| (event, d)).collect();
            insert_deliveries(c, &ready, *now).await?;
            c.execute(
                Stmt::new(
                    "UPDATE events SET lease_until = $1, route_attempts = route_attempts + 1, \
                     route_error = $2 WHERE id = $3",
                )
                .int(*retry_at)
                .text(error.as_str())
                .text(event.as_str()),
            )
            .await?;
            Ok(Done::Unit)
        }
        Op::Release(ids) => {
            release_deliveries(c, ids).await?;
            Ok(Done::Unit)
        }
        Op::Probe { now } => {
            c.execute(
                Stmt::new(
                    "INSERT INTO store_probe (id, at) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                )
                .int(*now),
            )
            .await?;
            Ok(Done::Unit)
        }
    }
}

/// Rows per statement of a release (one placeholder each).
const RELEASE_CHUNK: usize = 500;

/// Frees claims this process took but did not finish because it is stopping:
/// claimable again at once, and the claim is not counted as a crash. Only
/// pending ones: a delivery finished meanwhile keeps its state.
async fn release_deliveries<C: Conn>(c: &mut C, ids: &[DeliveryId]) -> Result<(), StoreError> {
    for chunk in ids.chunks(RELEASE_CHUNK) {
        let sql = format!(
            "UPDATE deliveries SET lease_until = NULL, \
             claims = CASE WHEN claims > 0 THEN claims - 1 ELSE 0 END \
             WHERE status = 'pending' AND id IN ({})",
            placeholders(1, chunk.len())
        );
        let stmt = chunk
            .iter()
            .fold(Stmt::new(sql), |s, id| s.text(id.as_str()));
        c.execute(stmt).await?;
    }
    Ok(())
}

/// Inserts many events; the ones that conflict on (source, dedupe_key), with
/// a stored event or an earlier one of the same batch, are duplicates and
/// get the stored event's id. On PostgreSQL a conflicting insert of another
/// instance waits for that one to commit, so the read back finds it.
///
/// An event routed at acceptance is inserted routed, and its deliveries
/// with it; a duplicate's routing is dropped (its first copy's stands).
pub(super) async fn insert_events<C: Conn>(
    c: &mut C,
    events: &[&NewEvent],
) -> Result<Vec<Inserted>, StoreError> {
    let mut inserted: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Concurrent batches of two instances take the unique index's entries in
    // the same order, so they wait on each other instead of deadlocking. The
    // sort is stable: of two copies in one batch, the first stays first.
    let mut sorted: Vec<&NewEvent> = events.to_vec();
    if C::DIALECT == Dialect::Postgres {
        sorted.sort_by(|a, b| (&a.source, &a.dedupe_key).cmp(&(&b.source, &b.dedupe_key)));
    }
    for chunk in sorted.chunks(C::DIALECT.rows_per_statement(INSERT_CHUNK)) {
        let mut stmt = Stmt::new(one_row_or(chunk.len(), &INSERT_EVENT, insert_event_sql));
        for e in chunk {
            let matched = e
                .routing
                .as_ref()
                .map(|r| {
                    serde_json::to_string(&r.matched_routes)
                        .map_err(|err| StoreError::corrupt("matched_routes", err.to_string()))
                })
                .transpose()?;
            stmt = stmt
                .text(e.id.as_str())
                .text(e.source.as_str())
                .text(e.dedupe_key.as_str())
                .text(e.event_type.as_str())
                .bytes(&e.payload)
                .int(e.received_at)
                .opt_int(e.routing.as_ref().map(|_| e.received_at))
                .opt_text(matched.as_deref());
        }
        for r in c.fetch(stmt).await? {
            inserted.insert(r.text("id")?);
        }
    }
    let routed: Vec<(&EventId, &NewDelivery)> = events
        .iter()
        .filter(|e| inserted.contains(e.id.as_str()))
        .filter_map(|e| e.routing.as_ref().map(|r| (&e.id, r)))
        .flat_map(|(id, r)| r.deliveries.iter().map(move |d| (id, d)))
        .collect();
    let unclaimed = if routed.is_empty() {
        Vec::new()
    } else {
        let now = events.iter().map(|e| e.received_at).max().unwrap_or(0);
        insert_deliveries(c, &routed, now).await?
    };
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        if inserted.contains(e.id.as_str()) {
            let of_event = |id: &&DeliveryId| {
                e.routing
                    .as_ref()
                    .is_some_and(|r| r.deliveries.iter().any(|d| &d.id == *id))
            };
            out.push(Inserted {
                id: e.id.clone(),
                duplicate: false,
                unclaimed: unclaimed.iter().filter(of_event).cloned().collect(),
            });
            continue;
        }
        let rows = c
            .fetch(
                Stmt::new("SELECT id FROM events WHERE source = $1 AND dedupe_key = $2")
                    .text(e.source.as_str())
                    .text(e.dedupe_key.as_str()),
            )
            .await?;
        let id = rows
            .first()
            .ok_or_else(|| {
                StoreError::corrupt(
                    "id",
                    "an insert conflicted on its dedupe key, yet no event has that key",
                )
            })?
            .text("id")?;
        out.push(Inserted {
            id: EventId::from_stored(id),
            duplicate: true,
            unclaimed: Vec::new(),
        });
    }
    Ok(out)
}

/// The SQL of statements of one row, built once: the statement cache finds
/// them by their text, and SQLite runs every statement with one row.
static INSERT_EVENT: LazyLock<String> = LazyLock::new(|| insert_event_sql(1));
static INSERT_DELIVERY: LazyLock<String> = LazyLock::new(|| insert_delivery_sql(1));
static INSERT_ATTEMPT: LazyLock<String> = LazyLock::new(|| insert_attempt_sql(1));

/// `one`'s text for one row, else `sql(rows)`.
fn one_row_or(
    rows: usize,
    one: &'static LazyLock<String>,
    sql: fn(usize) -> String,
) -> Cow<'static, str> {
    if rows == 1 {
        Cow::Borrowed(one.as_str())
    } else {
        Cow::Owned(sql(rows))
    }
}

fn insert_event_sql(rows: usize) -> String {
    format!(
        "INSERT INTO events (id, source, dedupe_key, event_type, payload, received_at, \
         routed_at, matched_routes) VALUES {} \
         ON CONFLICT (source, dedupe_key) DO NOTHING RETURNING id",
        values_rows(rows, 8, 1)
    )
}

async fn claim_events<C: Conn>(
    c: &mut C,
    limit: u32,
    now: i64,
    lease_ms: i64,
) -> Result<Vec<EventToRoute>, StoreError> {
    let sql = format!(
        "UPDATE events SET lease_until = $1 WHERE id IN ( \
           SELECT id FROM events WHERE routed_at IS NULL AND (lease_until IS NULL OR lease_until < $2) \
           ORDER BY received_at LIMIT $3{}) \
         RETURNING id, source, event_type, payload, received_at, route_attempts",
        C::DIALECT.skip_locked(None)
    );
    let rows = c
        .fetch(
            Stmt::new(sql)
                .int(now.saturating_add(lease_ms))
                .int(now)
                .int(i64::from(limit)),
        )
        .await?;
    let mut events = rows
        .iter()
        .map(event_to_route)
        .collect::<Result<Vec<_>, _>>()?;
    events.sort_by(|a, b| (a.received_at, a.id.as_str()).cmp(&(b.received_at, b.id.as_str())));
    Ok(events)
}

/// The claim of a target's due deliveries ($1 target, $2 now, $3 limit):
/// pending, due, not leased, and waiting behind nothing (an earlier step of
/// its route, an earlier delivery of its key to this target, or one that
/// remembers a link it reads). A predecessor another instance holds is
/// still pending, so what follows it is not handed out either.
pub(super) fn claim_sql(dialect: Dialect) -> String {
    let lock = dialect.skip_locked(Some("d"));
    format!(
        "SELECT d.id, d.event_id, d.route, d.step, d.target, d.attempts, d.attempts_base, d.context, \
                d.claims, e.source, e.event_type, e.payload, e.received_at \
         FROM deliveries d JOIN events e ON e.id = d.event_id \
         WHERE d.status = 'pending' AND d.target = $1 AND d.next_attempt_at <= $2 \
           AND (d.lease_until IS NULL OR d.lease_until < $2) \
           AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE {BEHIND_STEP}{PROBE}) \
           AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE {BEHIND_KEY}{PROBE}) \
           AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE {link}{PROBE}) \
         ORDER BY d.next_attempt_at, d.id LIMIT $3{lock}",
        link = behind_link(dialect)
    )
}

/// The database's plan for the claim of `target` at `now` (EXPLAIN QUERY
/// PLAN on SQLite, EXPLAIN on PostgreSQL), one line per step.
pub(super) async fn claim_plan<C: Conn>(
    c: &mut C,
    target: &str,
    now: i64,
) -> Result<Vec<String>, StoreError> {
    let (explain, column) = match C::DIALECT {
        Dialect::Sqlite => ("EXPLAIN QUERY PLAN", "detail"),
        Dialect::Postgres => ("EXPLAIN", "QUERY PLAN"),
    };
    let sql = format!("{explain} {}", claim_sql(C::DIALECT));
    let rows = c
        .fetch(Stmt::new(sql).text(target).int(now).int(100))
        .await?;
    rows.iter().map(|r| r.text(column)).collect()
}

async fn claim_deliveries<C: Conn>(
    c: &mut C,
    target: &str,
    limit: u32,
    now: i64,
    lease_ms: i64,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    static SQLITE: LazyLock<String> = LazyLock::new(|| claim_sql(Dialect::Sqlite));
    static POSTGRES: LazyLock<String> = LazyLock::new(|| claim_sql(Dialect::Postgres));
    let sql = match C::DIALECT {
        Dialect::Sqlite => SQLITE.as_str(),
        Dialect::Postgres => POSTGRES.as_str(),
    };
    let rows = c
        .fetch(Stmt::new(sql).text(target).int(now).int(i64::from(limit)))
        .await?;
    let claimed = rows
        .iter()
        .map(claimed_delivery)
        .collect::<Result<Vec<_>, _>>()?;
    let until = now.saturating_add(lease_ms);
    for chunk in claimed.chunks(C::DIALECT.rows_per_statement(claimed.len().max(1))) {
        let stmt = if let [d] = chunk {
            Stmt::new("UPDATE deliveries SET lease_until = $1, claims = claims + 1 WHERE id = $2")
                .int(until)
                .text(d.id.as_str())
        } else {
            let sql = format!(
                "UPDATE deliveries SET lease_until = $1, claims = claims + 1 WHERE id IN ({})",
                placeholders(2, chunk.len())
            );
            chunk
                .iter()
                .fold(Stmt::new(sql).int(until), |s, d| s.text(d.id.as_str()))
        };
        c.execute(stmt).await?;
    }
    Ok(claimed)
}

/// Values bound per delivery row of [`insert_deliveries`].
const DELIVERY_VALUES: usize = 17;

/// `link_names` as stored: `,a,b,` (so `,name,` is a substring test).
fn link_names(names: &[String]) -> Option<String> {
    (!names.is_empty()).then(|| format!(",{},", names.join(",")))
}

fn insert_delivery_sql(rows: usize) -> String {
    let rows = (0..rows)
        .map(|r| {
            let p: Vec<String> = (1..=DELIVERY_VALUES)
                .map(|i| format!("${}", r * DELIVERY_VALUES + i))
                .collect();
            // $9 (now) is next_attempt_at, created_at and updated_at.
            format!(
                "({}, 0, {n}, {}, {n}, {n}, {})",
                p[..6].join(", "),
                p[6..8].join(", "),
                p[9..].join(", "),
                n = p[8]
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO deliveries (id, event_id, route, step, target, status, attempts, next_attempt_at, \
         context, last_error, created_at, updated_at, order_key, order_seq, link_task, link_names, \
         remember_task, remember_name, lease_until, claims) VALUES {rows} ON CONFLICT (event_id, route, step) DO NOTHING"
    )
}

/// Some delivery of an ordering key to a target is pending (earlier or
/// later: stricter than the claim's test, see [`acceptance_claims`]).
const KEY_PENDING: &str = "SELECT 1 AS pending FROM deliveries \
     WHERE status = 'pending' AND target = $1 AND order_key = $2 LIMIT 1";

/// The claims deliveries are stored with: a delivery claimed at acceptance
/// that has an ordering key keeps its claim only if no other delivery of
/// its key to its target is pending (in the store, or earlier in this
/// batch by acceptance order); else it is stored unclaimed and returned.
async fn acceptance_claims<C: Conn>(
    c: &mut C,
    all: &[(&EventId, &NewDelivery)],
) -> Result<(Vec<Option<i64>>, Vec<DeliveryId>), StoreError> {
    let mut leases = Vec::with_capacity(all.len());
    let mut unclaimed = Vec::new();
    for (_, d) in all {
        let lease = match (d.lease_until, &d.order.key) {
            (Some(until), Some(key)) => {
                let earlier_in_batch = all.iter().any(|(_, p)| {
                    p.order.key.as_ref() == Some(key)
                        && p.target == d.target
                        && p.order.seq < d.order.seq
                });
                let waits = earlier_in_batch
                    || !c
                        .fetch(
                            Stmt::new(KEY_PENDING)
                                .text(d.target.as_str())
                                .text(key.as_str()),
                        )
                        .await?
                        .is_empty();
                if waits {
                    unclaimed.push(d.id.clone());
                    None
                } else {
                    Some(until)
                }
            }
            (lease, _) => lease,
        };
        leases.push(lease);
    }
    Ok((leases, unclaimed))
}

/// Inserts deliveries (one multi-row INSERT per chunk); a delivery that
/// exists already (same event, route and step) is left as it is. Returns
/// the deliveries claimed at acceptance that were stored unclaimed
/// ([`acceptance_claims`]).
async fn insert_deliveries<C: Conn>(
    c: &mut C,
    all: &[(&EventId, &NewDelivery)],
    now: i64,
) -> Result<Vec<DeliveryId>, StoreError> {
    let (leases, unclaimed) = acceptance_claims(c, all).await?;
    let per = C::DIALECT.rows_per_statement(DELIVERY_CHUNK);
    for (chunk, leases) in all.chunks(per).zip(leases.chunks(per)) {
        let sql = one_row_or(chunk.len(), &INSERT_DELIVERY, insert_delivery_sql);
        let mut stmt = Stmt::new(sql);
        for ((event_id, d), lease) in chunk.iter().zip(leases) {
            let o = &d.order;
            stmt = stmt
                .text(d.id.as_str())
                .text(event_id.as_str())
                .text(d.route.as_str())
                .int(i64::from(d.step))
                .text(d.target.as_str())
                .text(if d.dead.is_some() { "dead" } else { "pending" })
                .text(d.context.to_string())
                .opt_text(d.dead.as_deref())
                .int(now)
                .opt_text(o.key.as_deref())
                .text(o.seq.as_str())
                .opt_text(o.link_task.as_deref())
                .opt_text(link_names(&o.link_names).as_deref())
                .opt_text(o.remember.as_ref().map(|(t, _)| t.as_str()))
                .opt_text(o.remember.as_ref().map(|(_, n)| n.as_str()))
                .opt_int(*lease)
                .int(i64::from(lease.is_some()));
        }
        c.execute(stmt).await?;
    }
    Ok(unclaimed)
}

/// Inserts the deliveries of routed events and marks the events routed.
async fn complete_routing<C: Conn>(
    c: &mut C,
    routed: &[RoutedEvent],
    now: i64,
) -> Result<(), StoreError> {
    let all: Vec<(&EventId, &NewDelivery)> = routed
        .iter()
        .flat_map(|ev| ev.deliveries.iter().map(move |d| (&ev.event_id, d)))
        .collect();
    insert_deliveries(c, &all, now).await?;
    for chunk in routed.chunks(C::DIALECT.rows_per_statement(DELIVERY_CHUNK)) {
        let sql: Cow<'static, str> = if chunk.len() == 1 {
            "UPDATE events SET routed_at = $1, lease_until = NULL, matched_routes = $3 WHERE id = $2"
                .into()
        } else {
            format!(
                "UPDATE events SET routed_at = $1, lease_until = NULL, matched_routes = v.column2 \
                 FROM (VALUES {}) AS v WHERE events.id = v.column1",
                values_rows(chunk.len(), 2, 2)
            )
            .into()
        };
        let mut stmt = Stmt::new(sql).int(now);
        for ev in chunk {
            let matched = serde_json::to_string(&ev.matched_routes)
                .map_err(|e| StoreError::corrupt("matched_routes", e.to_string()))?;
            stmt = stmt.text(ev.event_id.as_str()).text(matched);
        }
        c.execute(stmt).await?;
    }
    Ok(())
}

fn attempt_status(a: &AttemptRecord) -> (&'static str, i64, Option<i64>) {
    match a.outcome {
        AttemptOutcome::Delivered => ("delivered", a.at, Some(a.at)),
        AttemptOutcome::Retry { at } => ("pending", at, None),
        AttemptOutcome::Dead => ("dead", a.at, None),
    }
}

fn insert_attempt_sql(rows: usize) -> String {
    format!(
        "INSERT INTO attempts (delivery_id, n, at, duration_ms, status_code, response, error, outcome) \
         VALUES {} ON CONFLICT (delivery_id, n) DO NOTHING",
        values_rows(rows, 8, 1)
    )
}

/// Records many attempts: one INSERT and one UPDATE ... FROM (VALUES ...)
/// per chunk, then the links, if any.
async fn record_attempts<C: Conn>(c: &mut C, records: &[&AttemptRecord]) -> Result<(), StoreError> {
    for chunk in records.chunks(C::DIALECT.rows_per_statement(RECORD_CHUNK)) {
        let mut stmt = Stmt::new(one_row_or(chunk.len(), &INSERT_ATTEMPT, insert_attempt_sql));
        for a in chunk {
            stmt = stmt
                .text(a.delivery_id.as_str())
                .int(i64::from(a.n))
                .int(a.at)
                .int(a.duration_ms)
                .opt_int(a.status_code.map(i64::from))
                .opt_text(a.response.as_deref())
                .opt_text(a.error.as_deref())
                .text(a.outcome.name());
        }
        c.execute(stmt).await?;
        let update: Cow<'static, str> = if chunk.len() == 1 {
            "UPDATE deliveries SET status = $2, attempts = $3, next_attempt_at = $4, \
             lease_until = NULL, claims = 0, last_error = $5, updated_at = $6, delivered_at = $7 \
             WHERE id = $1"
                .into()
        } else {
            format!(
                "UPDATE deliveries SET status = v.column2, attempts = v.column3, next_attempt_at = v.column4, \
                 lease_until = NULL, claims = 0, last_error = v.column5, updated_at = v.column6, \
                 delivered_at = v.column7 FROM (VALUES {}) AS v WHERE deliveries.id = v.column1",
                values_rows(chunk.len(), 7, 1)
            )
            .into()
        };
        let mut stmt = Stmt::new(update);
        for a in chunk {
            let (status, next, delivered_at) = attempt_status(a);
            stmt = stmt
                .text(a.delivery_id.as_str())
                .text(status)
                .int(i64::from(a.n))
                .int(next)
                .opt_text(a.error.as_deref())
                .int(a.at)
                .opt_int(delivered_at);
        }
        c.execute(stmt).await?;
    }
    for a in records {
        if let Some(link) = &a.link {
            store_link(c, link, a.at).await?;
        }
        wait_hint(c, a).await?;
    }
    Ok(())
}

/// The deliveries that wait behind `$1` on its key and target.
const FOLLOWERS: &str = "status = 'pending' \
     AND target = (SELECT h.target FROM deliveries h WHERE h.id = $1) \
     AND order_key = (SELECT h.order_key FROM deliveries h WHERE h.id = $1) \
     AND order_seq > (SELECT h.order_seq FROM deliveries h WHERE h.id = $1)";

/// Keeps the claim from walking over deliveries that wait: when a
/// delivery is to retry at `at`, the ones behind it on its key are not due
/// before then either, so their next attempt moves there; when it is
/// delivered or dead, those never attempted since they were queued are
/// due now. Only a hint: the claim still checks what each one waits for,
/// and a hint missed (a replay, another path) delays one at most until
/// its moved time, never for ever.
async fn wait_hint<C: Conn>(c: &mut C, a: &AttemptRecord) -> Result<(), StoreError> {
    static LATER: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE deliveries SET next_attempt_at = $2 WHERE {FOLLOWERS} AND next_attempt_at < $2"
        )
    });
    static NOW: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE deliveries SET next_attempt_at = $2 WHERE {FOLLOWERS} AND next_attempt_at > $2 \
             AND attempts = attempts_base"
        )
    });
    let sql = match a.outcome {
        AttemptOutcome::Retry { .. } => LATER.as_str(),
        AttemptOutcome::Delivered | AttemptOutcome::Dead => NOW.as_str(),
    };
    let at = match a.outcome {
        AttemptOutcome::Retry { at } => at,
        _ => a.at,
    };
    c.execute(Stmt::new(sql).text(a.delivery_id.as_str()).int(at))
        .await?;
    Ok(())
}

pub(super) async fn store_link<C: Conn>(c: &mut C, link: &Link, at: i64) -> Result<(), StoreError> {
    c.execute(
        Stmt::new(
            "INSERT INTO links (task_id, name, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (task_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .text(link.task_id.as_str())
        .text(link.name.as_str())
        .text(link.value.as_str())
        .int(at),
    )
    .await?;
    Ok(())
}

async fn replay<C: Conn>(c: &mut C, filter: &ReplayFilter, now: i64) -> Result<u64, StoreError> {
    match filter {
        // A finished one is queued with a fresh retry budget; a pending one
        // waiting for its retry is made due now with the budget it has. One
        // in flight (leased) is left alone.
        ReplayFilter::One(id) => {
            c.execute(
                Stmt::new(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, lease_until = NULL, \
                     attempts_base = CASE WHEN status = 'pending' THEN attempts_base ELSE attempts END, claims = 0, updated_at = $1 \
                     WHERE id = $2 AND (status IN ('dead', 'delivered') \
                     OR (status = 'pending' AND (lease_until IS NULL OR lease_until <= $1)))",
                )
                .int(now)
                .text(id.as_str()),
            )
            .await
        }
        ReplayFilter::All {
            status,
            target,
            route,
        } => {
            let sql = format!(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, lease_until = NULL, \
                 attempts_base = attempts, claims = 0, updated_at = $1 WHERE {REPLAY_ALL_WHERE}"
            );
            c.execute(
                Stmt::new(sql)
                    .int(now)
                    .text(status.as_str())
                    .opt_text(target.as_deref())
                    .opt_text(route.as_deref()),
            )
            .await
        }
    }
}

async fn prune<C: Conn>(c: &mut C, cutoff: i64, batch: u32) -> Result<Pruned, StoreError> {
    let rows = c
        .fetch(
            Stmt::new(
                "SELECT id FROM deliveries WHERE status IN ('delivered', 'dead') AND updated_at < $1 LIMIT $2",
            )
            .int(cutoff)
            .int(i64::from(batch)),
        )
        .await?;
    let ids = rows
        .iter()
        .map(|r| r.text("id"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut pruned = Pruned::default();
    if !ids.is_empty() {
        let list = placeholders(1, ids.len());
        let mut del_attempts = Stmt::new(format!(
            "DELETE FROM attempts WHERE delivery_id IN ({list})"
        ));
        let mut del_deliveries = Stmt::new(format!("DELETE FROM deliveries WHERE id IN ({list})"));
        for id in &ids {
            del_attempts = del_attempts.text(id.as_str());
            del_deliveries = del_deliveries.text(id.as_str());
        }
        c.execute(del_attempts).await?;
        pruned.deliveries = c.execute(del_deliveries).await?;
    }
    // An event goes when it is old, routed, and has no delivery left
    // (pending ones are never pruned, so it has none pending).
    pruned.events = c
        .execute(
            Stmt::new(
                "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE e.received_at < $1 \
                 AND e.routed_at IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) LIMIT $2)",
            )
            .int(cutoff)
            .int(i64::from(batch)),
        )
        .await?;
    Ok(pruned)
}
