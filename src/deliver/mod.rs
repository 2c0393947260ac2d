//! Delivery: claim due deliveries per target, render, send, classify, record.
//!
//! Each target has its own concurrency limit and rate limit ([`limits`]), and
//! deliveries are claimed per target only for free slots, so one slow or
//! failing target never delays another. Workers are woken when deliveries are
//! created or a slot frees; polling (at most every second, or at the next due
//! time) is only the fallback.

pub mod classify;
pub mod direct;
pub mod execute;
pub mod limits;

use crate::ids::now_millis;
use crate::metrics::Metrics;
use crate::pipeline::{Live, Pipeline};
use crate::store::{AttemptOutcome, AttemptRecord, ClaimedDelivery, Link, Store};
use classify::{Outcome, classify};
use limits::{Limits, TargetLimits};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What every delivery task shares.
struct Shared {
    pipeline: Arc<Live>,
    store: Store,
    client: reqwest::Client,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// Deliveries whose task was dropped before it recorded an attempt (cut
    /// at shutdown): their claims are released, so a stop that waited for
    /// nothing is not counted as a crash.
    abandoned: std::sync::Mutex<Vec<crate::ids::DeliveryId>>,
}

/// Notes a delivery as abandoned when its task is dropped unfinished.
struct Unfinished<'a> {
    shared: &'a Shared,
    id: Option<crate::ids::DeliveryId>,
}

impl Unfinished<'_> {
    fn done(mut self) {
        self.id = None;
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let (Some(id), Ok(mut list)) = (self.id.take(), self.shared.abandoned.lock()) {
            list.push(id);
        }
    }
}

/// The HTTP client of the workers: no redirects (a target's host comes from
/// routes.yaml alone), rustls.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("clickup-bridge/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// The delivery worker.
pub struct Deliverer {
    shared: Arc<Shared>,
    limits: Arc<Limits>,
    tasks: JoinSet<()>,
    last_sweep: Option<Instant>,
    /// Deliveries the inbound claimed at acceptance ([`direct`]).
    starts: Option<direct::Starts>,
}

/// How long a claim holds a delivery (the worker's and the inbound's):
/// three times the target's timeout plus a minute.
pub fn lease_ms(timeout: Duration) -> i64 {
    let lease = timeout * 3 + Duration::from_secs(60);
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

/// How often deliveries of targets removed from routes.yaml are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl Deliverer {
    /// A worker over the routes in force, the store, shared target limits and
    /// a wake-up handle.
    pub fn new(
        pipeline: Arc<Live>,
        store: Store,
        client: reqwest::Client,
        limits: Arc<Limits>,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Deliverer {
            shared: Arc::new(Shared {
                pipeline,
                store,
                client,
                wake,
                metrics,
                abandoned: std::sync::Mutex::new(Vec::new()),
            }),
            limits,
            tasks: JoinSet::new(),
            last_sweep: None,
            starts: None,
        }
    }

    /// Also runs the deliveries the inbound starts itself: the worker's end
    /// of [`direct::channel`], made over this worker's `limits`.
    pub fn with_starts(mut self, starts: direct::Starts) -> Self {
        self.starts = Some(starts);
        self
    }

    /// Runs a delivery that is claimed and holds its slot.
    fn spawn(
        &mut self,
        d: ClaimedDelivery,
        state: Arc<TargetLimits>,
        slot: OwnedSemaphorePermit,
        event: Option<Value>,
    ) {
        // Boxed: the attempt's future is several KB, and unboxed it is
        // copied by value at every hand-over inside tokio's spawn (about 11
        // copies per delivery, a sixth of an event's instructions under
        // callgrind; bench/README.md).
        self.tasks.spawn(Box::pin(run_one(
            self.shared.clone(),
            d,
            state,
            slot,
            event,
        )));
    }

    /// Starts what the inbound has handed over and releases what it gave
    /// up. Returns how many were started.
    async fn take_handed(&mut self) -> usize {
        let mut started = 0;
        let mut release = Vec::new();
        while let Some(h) = self.starts.as_mut().and_then(|rx| rx.try_recv().ok()) {
            started += self.handle(h, &mut release);
        }
        self.release(release).await;
        started
    }

    /// One thing handed over: a start is spawned (1), a release is added
    /// to `release` (0).
    fn handle(&mut self, h: direct::Handed, release: &mut Vec<crate::ids::DeliveryId>) -> usize {
        match h {
            direct::Handed::Start(s) => {
                let s = *s;
                self.spawn(s.delivery, s.limits, s.slot, s.event);
                1
            }
            direct::Handed::Release(ids) => {
                release.extend(ids);
                0
            }
        }
    }

    /// Frees claims this process took and will not work on now (not
    /// started, or cut at shutdown): claimable again at once, not counted
    /// as a crash.
    async fn release(&self, ids: Vec<crate::ids::DeliveryId>) {
        if !ids.is_empty()
            && let Err(e) = self.shared.store.release_deliveries(&ids).await
        {
            tracing::warn!(error = %e, "cannot release the claims of deliveries this process will not finish; they are claimed again when their lease ends or the store is opened again");
        }
    }

    /// Deliveries whose target a reload removed would wait for ever: they
    /// are made dead (replayable once the target is back) with the reason.
    async fn sweep_orphans(&mut self, pipeline: &Pipeline) {
        if self.last_sweep.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            return;
        }
        self.last_sweep = Some(Instant::now());
        let Ok(targets) = self.shared.store.pending_targets().await else {
            return;
        };
        for name in targets
            .iter()
            .filter(|t| !pipeline.targets.contains_key(*t))
        {
            let Ok(claimed) = self
                .shared
                .store
                .claim_deliveries(name, 500, i64::MAX, 60_000)
                .await
            else {
                continue;
            };
            for d in claimed {
                let reason = format!("target \"{name}\" is no longer in routes.yaml");
                tracing::warn!(delivery_id = %d.id, target = %name, "delivery dead: {reason}");
                let record = AttemptRecord {
                    delivery_id: d.id.clone(),
                    n: d.attempts + 1,
                    at: now_millis(),
                    duration_ms: 0,
                    status_code: None,
                    response: None,
                    error: Some(reason),
                    outcome: AttemptOutcome::Dead,
                    link: None,
                };
                if let Err(e) = self.shared.store.record_attempt(record).await {
                    tracing::error!(delivery_id = %d.id, error = %e, "cannot record the attempt");
                }
                self.shared.metrics.attempt(name, "dead");
            }
        }
    }

    /// Claims what fits in every target's free slots and starts it. Returns
    /// how many deliveries were started.
    pub async fn step(&mut self) -> usize {
        while self.tasks.try_join_next().is_some() {}
        let mut started = self.take_handed().await;
        let pipeline = self.shared.pipeline.load_full();
        self.sweep_orphans(&pipeline).await;
        for target in pipeline.targets.values() {
            let state = self.limits.of(target);
            let free = state.slots.available_permits();
            // Claim when a quarter of the slots are free, not for every
            // single one: fewer, larger claims keep the writer free for
            // inbound events while the target stays busy.
            let threshold = (target.concurrency as usize / 4).max(1);
            if free < threshold {
                continue;
            }
            // The slots are taken before the claim: the inbound takes them
            // too (`direct`), and a delivery claimed without one would stay
            // leased, unsent, until its lease ran out.
            let slots: Vec<OwnedSemaphorePermit> = (0..free)
                .map_while(|_| state.slots.clone().try_acquire_owned().ok())
                .collect();
            if slots.is_empty() {
                continue;
            }
            let lease_ms = lease_ms(target.timeout);
            let limit = u32::try_from(slots.len()).unwrap_or(u32::MAX);
            let claimed = match self
                .shared
                .store
                .claim_deliveries(&target.name, limit, now_millis(), lease_ms)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(target = %target.name, error = %e, "cannot claim deliveries");
                    continue;
                }
            };
            // The claim returns at most `limit`; slots left over are freed.
            for (d, slot) in claimed.into_iter().zip(slots) {
                started += 1;
                self.spawn(d, state.clone(), slot, None);
            }
        }
        started
    }

    /// Runs until `cancel`, then waits up to `grace` for deliveries in flight.
    pub async fn run(mut self, cancel: CancellationToken, grace: Duration) {
        loop {
            // Checked before each step too: a worker that always finds work
            // (a backlog) would otherwise never see the stop.
            if cancel.is_cancelled() {
                break;
            }
            if self.step().await > 0 {
                continue;
            }
            let wait = match self.shared.store.next_due().await {
                Ok(Some(at)) if at > now_millis() => {
                    Duration::from_millis(u64::try_from(at - now_millis()).unwrap_or(0))
                }
                _ => Duration::from_secs(1),
            }
            .clamp(Duration::from_millis(5), Duration::from_secs(1));
            let handed = {
                let handed = async {
                    match &mut self.starts {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = self.shared.wake.notified() => Ok(None),
                    s = handed => s.map(Some).ok_or(()),
                    _ = tokio::time::sleep(wait) => Ok(None),
                }
            };
            match handed {
                Ok(Some(h)) => {
                    let mut release = Vec::new();
                    self.handle(h, &mut release);
                    self.release(release).await;
                }
                Ok(None) => {}
                // The inbound is gone: nothing more will be handed over.
                Err(()) => self.starts = None,
            }
        }
        self.release_unstarted().await;
        let in_flight = self.tasks.len();
        if in_flight > 0 {
            tracing::info!(in_flight, "waiting for deliveries in flight");
            let drained = tokio::time::timeout(grace, async {
                while self.tasks.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    left = self.tasks.len(),
                    "deliveries still in flight at shutdown; they will be sent again after restart"
                );
                self.tasks.abort_all();
                while self.tasks.join_next().await.is_some() {}
                let ids = self
                    .shared
                    .abandoned
                    .lock()
                    .map(|mut l| std::mem::take(&mut *l))
                    .unwrap_or_default();
                self.release(ids).await;
            }
        }
    }

    /// At shutdown: deliveries the inbound handed over that were not
    /// started yet are released (claimable at once after a restart, and not
    /// counted as a crash), and no more are taken.
    async fn release_unstarted(&mut self) {
        let Some(rx) = self.starts.as_mut() else {
            return;
        };
        rx.close();
        let mut ids = Vec::new();
        while let Ok(h) = rx.try_recv() {
            match h {
                direct::Handed::Start(s) => ids.push(s.delivery.id),
                direct::Handed::Release(more) => ids.extend(more),
            }
        }
        self.release(ids).await;
    }
}

/// The ClickUp task an event is about: the route's `task_id` extract, else
/// the payload's `task_id` (every ClickUp task event has one).
pub fn task_id_of(context: &Value, event: &Value) -> Option<String> {
    let v = context.get("task_id").or_else(|| event.get("task_id"))?;
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The render context: the extracted values (and the enriched `task`) stored
/// with the delivery, plus `event`, `meta` and `links`.
/// `event` is the delivery's payload, parsed once by the caller.
pub fn render_context(
    d: &ClaimedDelivery,
    event: Value,
    links: serde_json::Map<String, Value>,
) -> Value {
    let mut ctx = match &d.context {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    let received_at =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(d.received_at) * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
    ctx.insert("event".into(), event);
    ctx.insert(
        "meta".into(),
        json!({
            "source": d.source,
            "route": d.route,
            "event_id": d.event_id.as_str(),
            "delivery_id": d.id.as_str(),
            "received_at": received_at,
        }),
    );
    ctx.insert("links".into(), Value::Object(links));
    Value::Object(ctx)
}

/// Claims of one delivery that may end without an attempt record (the
/// process stopped meanwhile) before it is made dead instead of tried again.
pub const MAX_UNFINISHED_CLAIMS: u32 = 3;

async fn run_one(
    shared: Arc<Shared>,
    d: ClaimedDelivery,
    limits: Arc<TargetLimits>,
    slot: OwnedSemaphorePermit,
    event: Option<Value>,
) {
    let unfinished = Unfinished {
        shared: &shared,
        id: Some(d.id.clone()),
    };
    attempt_one(&shared, d, limits, slot, event).await;
    unfinished.done();
}

/// One attempt of a claimed delivery; `event` is its payload when the
/// caller has it parsed already. `slot` is the target's concurrency
/// slot: it is given back as soon as the target has answered, before the
/// attempt is recorded. A target's `concurrency` counts its requests in
/// flight; holding the slot through the record as well (a commit that
/// queues behind the inbound's inserts) capped deliveries during a burst
/// at `concurrency` per two commits (bench/README.md: with 128 slots
/// instead of 32 the drain after a 64-client load halved). Until it is
/// recorded the delivery stays leased, and it keeps its place in its
/// ordering key (the claim skips a key whose earlier delivery is still
/// pending), so nothing is claimed twice or out of order meanwhile.
async fn attempt_one(
    shared: &Shared,
    d: ClaimedDelivery,
    limits: Arc<TargetLimits>,
    slot: OwnedSemaphorePermit,
    event: Option<Value>,
) {
    let pipeline = shared.pipeline.load_full();
    let n = d.attempts + 1;
    if d.unfinished_claims >= MAX_UNFINISHED_CLAIMS {
        // The process stopped every time it worked on this delivery: most
        // likely something in it crashes the process (or it was killed
        // mid-request each time). Do not walk into the same crash again.
        let reason = format!(
            "the process stopped {} times while this delivery was being rendered or sent, so it \
             is not tried again; find the cause in the log, then replay it",
            d.unfinished_claims
        );
        tracing::error!(delivery_id = %d.id, event_id = %d.event_id, route = %d.route, target = %d.target, "delivery dead: {reason}");
        let record = AttemptRecord {
            delivery_id: d.id.clone(),
            n,
            at: now_millis(),
            duration_ms: 0,
            status_code: None,
            response: None,
            error: Some(reason),
            outcome: AttemptOutcome::Dead,
            link: None,
        };
        record_attempt(&shared.store, record).await;
        shared.metrics.attempt(&d.target, "dead");
        shared.wake.notify_one();
        return;
    }
    let event = event.unwrap_or_else(|| serde_json::from_slice(&d.payload).unwrap_or(Value::Null));
    let task_id = task_id_of(&d.context, &event);
    let step = pipeline
        .routes
        .iter()
        .find(|r| r.name == d.route)
        .and_then(|r| r.send.get(d.step as usize));
    // Read the task's links only for a step whose templates mention them.
    // A store that cannot be read is a reason to try again, never "no
    // links" (the render would fail and the delivery be dead).
    let links = match (&task_id, step.is_some_and(|s| s.uses_links)) {
        (Some(t), true) => shared.store.links(t).await,
        _ => Ok(serde_json::Map::new()),
    };
    let (result, duration) = match links {
        Ok(links) => {
            limits.ready().await;
            let started = Instant::now();
            let ctx = render_context(&d, event, links);
            let result = execute::attempt(&shared.client, &pipeline, &d, ctx).await;
            (result, started.elapsed())
        }
        Err(e) => (
            execute::AttemptResult::unavailable(format!(
                "cannot read the task's links from the store: {e}"
            )),
            Duration::ZERO,
        ),
    };
    drop(slot);
    let policy = pipeline
        .targets
        .get(&d.target)
        .map(|t| t.retry)
        .unwrap_or_default();
    let mut outcome = classify(
        &result.answer,
        n,
        &policy,
        SystemTime::now(),
        fastrand::f64(),
    );
    if let (Some(detail), Outcome::Retry { reason, .. } | Outcome::Dead { reason }) =
        (&result.detail, &mut outcome)
    {
        reason.push_str(": ");
        reason.push_str(detail);
    }
    let at = now_millis();
    let remember = step.and_then(|s| s.remember.clone());
    let link = match (&outcome, remember, result.created.clone(), task_id) {
        (Outcome::Delivered, Some(name), Some(value), Some(task_id)) => Some(Link {
            task_id,
            name,
            value,
        }),
        (Outcome::Delivered, Some(name), _, _) => {
            tracing::warn!(delivery_id = %d.id, name, "nothing to remember: the answer had no id, or the event no task_id");
            None
        }
        _ => None,
    };
    let (stored, error) = match &outcome {
        Outcome::Delivered => (AttemptOutcome::Delivered, None),
        Outcome::Retry { after, reason } => (
            AttemptOutcome::Retry {
                at: at.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX)),
            },
            Some(reason.clone()),
        ),
        Outcome::Dead { reason } => (AttemptOutcome::Dead, Some(reason.clone())),
    };
    log_attempt(&d, n, result.status, duration, &outcome);
    let outcome_name = match &outcome {
        Outcome::Delivered => {
            let latency = (at - d.received_at).max(0) as f64 / 1000.0;
            shared.metrics.latency.observe(latency);
            "delivered"
        }
        Outcome::Retry { .. } => "retry",
        Outcome::Dead { .. } => "dead",
    };
    shared.metrics.attempt(&d.target, outcome_name);
    let record = AttemptRecord {
        delivery_id: d.id.clone(),
        n,
        at,
        duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
        status_code: result.status,
        response: result.excerpt,
        error,
        outcome: stored,
        link,
    };
    record_attempt(&shared.store, record).await;
    shared.wake.notify_one();
}

/// Records an attempt, trying again until the store takes it (a full disk
/// freed, a lock released): the request was made, and until it is recorded
/// the delivery stays claimed, holding its ordering key. Given up, the
/// claim would hold the key until its lease expired (minutes), and the
/// delivery would be sent again. A stop cuts the retries: the claim is then
/// released with the others cut at shutdown (`Unfinished`), and the
/// delivery is sent again with the same Idempotency-Key (at least once).
async fn record_attempt(store: &crate::store::Store, record: AttemptRecord) {
    let mut wait = Duration::from_millis(100);
    let mut failing_since: Option<Instant> = None;
    let mut told = Instant::now();
    loop {
        match store.record_attempt(record.clone()).await {
            Ok(()) => {
                if let Some(since) = failing_since {
                    tracing::info!(delivery_id = %record.delivery_id, after_ms = since.elapsed().as_millis() as u64, "attempt recorded after the store came back");
                }
                return;
            }
            Err(e) => {
                // Said when it starts, then every half minute.
                if failing_since.is_none() || told.elapsed() >= Duration::from_secs(30) {
                    tracing::warn!(delivery_id = %record.delivery_id, error = %e, "cannot record the attempt; retrying until the store takes it");
                    told = Instant::now();
                }
                failing_since.get_or_insert_with(Instant::now);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn log_attempt(
    d: &ClaimedDelivery,
    n: u32,
    status: Option<u16>,
    duration: Duration,
    outcome: &Outcome,
) {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Outcome::Dead { reason } => tracing::warn!(
            delivery_id = %d.id, event_id = %d.event_id, route = %d.route, target = %d.target, attempt = n,
            status, duration_ms = ms, outcome = "dead", error = %reason, "delivery attempt"
        ),
        Outcome::Retry { after, reason } => tracing::info!(
            delivery_id = %d.id, event_id = %d.event_id, route = %d.route, target = %d.target, attempt = n,
            status, duration_ms = ms, outcome = "retry", error = %reason,
            retry_in_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX), "delivery attempt"
        ),
        Outcome::Delivered => tracing::info!(
            delivery_id = %d.id, event_id = %d.event_id, route = %d.route, target = %d.target, attempt = n,
            status, duration_ms = ms, outcome = "delivered", "delivery attempt"
        ),
    }
}
