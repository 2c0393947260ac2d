//! Routing: which routes an event fires, and the deliveries they create.
//!
//! The matching is pure ([`matcher`]); [`Router`] is the worker that claims
//! stored, unrouted events, matches them against the pipeline in force,
//! fetches the ClickUp task for routes that ask for it ([`enrich`]), and
//! stores one delivery per send step together with the event's "routed" mark
//! (one transaction), then wakes the delivery workers.

pub mod enrich;
pub mod matcher;

use crate::deliver::classify::backoff;
use crate::deliver::task_id_of;
use crate::ids::{DeliveryId, EventId, now_millis};
use crate::pipeline::{Live, OrderBy, Pipeline, Route};
use crate::store::{
    DeliveryOrder, EventToRoute, NewDelivery, RoutedEvent, Routing, Store, StoreError,
};
use enrich::{Enricher, FetchError};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Events claimed per step.
const BATCH: u32 = 256;
/// How long a claim on an event lasts before another router may take it
/// (long enough for a task fetch that waits on ClickUp's rate limit).
const LEASE_MS: i64 = 300_000;
/// Enrichment batches in flight at most; the router waits beyond that.
const MAX_ENRICHING: usize = 16;

/// What matching reads of an event besides its payload.
#[derive(Debug, Clone, Copy)]
pub struct EventHead<'a> {
    /// Its id (for logs, and the deliveries' ids and order).
    pub id: &'a EventId,
    /// Source name.
    pub source: &'a str,
    /// Event type.
    pub event_type: &'a str,
}

impl<'a> EventHead<'a> {
    /// The head of a stored event.
    pub fn of(event: &'a EventToRoute) -> Self {
        EventHead {
            id: &event.id,
            source: &event.source,
            event_type: &event.event_type,
        }
    }
}

/// What the router makes of one route for one event before any task is
/// fetched (pure). `simulate` asks the same question.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The source, event or `match`/`any` conditions do not hold: the first
    /// that fails, with what was found.
    NoMatch(String),
    /// The route fires with these extracted values.
    Fires(Map<String, Value>),
    /// The event conditions hold and these are the extracted values; the
    /// route needs the ClickUp task (`enrich: [task]`, `task:` conditions)
    /// before it fires, see [`with_task`].
    NeedsTask(Map<String, Value>),
}

/// Whether `route` fires for `event`, or needs its task first.
pub fn decide(route: &Route, event: &EventHead<'_>, payload: &Value) -> Decision {
    match matcher::matches_event(route, event.source, event.event_type, payload) {
        Err(m) => Decision::NoMatch(m.reason),
        Ok(()) if route.enrich_task => Decision::NeedsTask(matcher::extract(route, payload)),
        Ok(()) => Decision::Fires(matcher::extract(route, payload)),
    }
}

/// The values of a route that needed the task, once it is fetched: `Err`
/// with the first `task:` condition that does not hold (the route does not
/// fire).
pub fn with_task(
    route: &Route,
    mut context: Map<String, Value>,
    task: Value,
) -> Result<Map<String, Value>, String> {
    matcher::matches_task(route, &task).map_err(|m| m.reason)?;
    context.insert("task".into(), task);
    Ok(context)
}

/// A route whose event conditions hold, with its extracted values.
pub struct Candidate {
    /// Index in `pipeline.routes`.
    pub route: usize,
    /// Extracted values.
    pub context: Map<String, Value>,
    /// Whether it fires only after its task is fetched ([`Decision::NeedsTask`]).
    pub needs_task: bool,
}

/// The routes whose source, event and `match`/`any` conditions hold (pure).
pub fn candidates(pipeline: &Pipeline, event: &EventHead<'_>, payload: &Value) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (i, route) in pipeline.routes.iter().enumerate() {
        let (context, needs_task) = match decide(route, event, payload) {
            Decision::Fires(c) => (c, false),
            Decision::NeedsTask(c) => (c, true),
            Decision::NoMatch(reason) => {
                if route.source == event.source {
                    tracing::debug!(event_id = %event.id, route = %route.name, reason = %reason, "route does not match");
                }
                continue;
            }
        };
        out.push(Candidate {
            route: i,
            context,
            needs_task,
        });
    }
    out
}

/// The ordering key of a delivery of `route`: the ClickUp task the event is
/// about unless `order_by` says otherwise; `None` when not ordered.
pub fn order_key(
    pipeline: &Pipeline,
    route: &Route,
    context: &Map<String, Value>,
    payload: &Value,
) -> Option<String> {
    match &route.order_by {
        OrderBy::Off => None,
        OrderBy::Task => task_id_of(&Value::Object(context.clone()), payload),
        OrderBy::Template(id) => {
            let mut ctx = context.clone();
            ctx.insert("event".into(), payload.clone());
            match pipeline
                .templates
                .render_text(id, &handlebars::Context::from(Value::Object(ctx)))
            {
                Ok(key) if !key.is_empty() => Some(key),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(route = %route.name, error = %e, "order_by cannot be rendered; the delivery is not ordered");
                    None
                }
            }
        }
    }
}

/// One delivery per send step of route number `index`, pending or created
/// dead, with what each waits for ([`DeliveryOrder`]).
pub fn deliveries(
    pipeline: &Pipeline,
    event: &EventId,
    index: usize,
    context: &Map<String, Value>,
    payload: &Value,
    dead: Option<&str>,
) -> Vec<NewDelivery> {
    let Some(route) = pipeline.routes.get(index) else {
        return Vec::new();
    };
    let key = order_key(pipeline, route, context, payload);
    let task = task_id_of(&Value::Object(context.clone()), payload);
    route
        .send
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let step_no = u32::try_from(i).unwrap_or(u32::MAX);
            NewDelivery {
                id: DeliveryId::for_step(event, &route.name, step_no),
                route: route.name.clone(),
                step: step_no,
                target: step.target.clone(),
                context: Value::Object(context.clone()),
                dead: dead.map(str::to_owned),
                order: DeliveryOrder {
                    key: key.clone(),
                    // Event ids follow acceptance order; then routes in file
                    // order, then steps.
                    seq: format!("{}.{index:05}.{i:05}", event.as_str()),
                    link_task: task.clone().filter(|_| !step.reads_links.is_empty()),
                    link_names: step.reads_links.clone(),
                    remember: match (&step.remember, &task) {
                        (Some(name), Some(t)) => Some((t.clone(), name.clone())),
                        _ => None,
                    },
                },
                lease_until: None,
            }
        })
        .collect()
}

/// The routing result of an event whose matching routes need no task
/// (pure).
pub fn routed(
    pipeline: &Pipeline,
    event: &EventHead<'_>,
    payload: &Value,
    cands: Vec<Candidate>,
) -> RoutedEvent {
    let mut routed = RoutedEvent {
        event_id: event.id.clone(),
        matched_routes: Vec::new(),
        deliveries: Vec::new(),
    };
    for c in cands {
        fire(&mut routed, pipeline, payload, c.route, &c.context, None);
    }
    routed
}

/// The routing of an event as it is accepted, stored in its own commit
/// (pure): `None` when a route it matches needs the ClickUp task first, and
/// so is left to the router, which fetches it.
pub fn at_acceptance(
    pipeline: &Pipeline,
    event: &EventHead<'_>,
    payload: &Value,
) -> Option<Routing> {
    let cands = candidates(pipeline, event, payload);
    if cands.iter().any(|c| c.needs_task) {
        return None;
    }
    let r = routed(pipeline, event, payload, cands);
    Some(Routing {
        matched_routes: r.matched_routes,
        deliveries: r.deliveries,
    })
}

/// Marks route `index` matched and adds its deliveries (dead with `dead`
/// when given) to what the event's routing stores.
fn fire(
    routed: &mut RoutedEvent,
    pipeline: &Pipeline,
    payload: &Value,
    index: usize,
    context: &Map<String, Value>,
    dead: Option<&str>,
) {
    let Some(route) = pipeline.routes.get(index) else {
        return;
    };
    routed.matched_routes.push(route.name.clone());
    let new = deliveries(pipeline, &routed.event_id, index, context, payload, dead);
    routed.deliveries.extend(new);
}

/// What routers share with their enrichment tasks.
pub struct RouterShared {
    /// The routes in force.
    pub pipeline: Arc<Live>,
    /// The store.
    pub store: Store,
    /// Notified when events are stored.
    pub wake: Arc<Notify>,
    /// Notified when deliveries are created.
    pub wake_deliveries: Arc<Notify>,
    /// Task fetches.
    pub enricher: Enricher,
}

/// The router worker.
pub struct Router {
    shared: Arc<RouterShared>,
    enriching: JoinSet<()>,
}

/// What one [`Router::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterStep {
    /// Claimed this many events.
    Routed(usize),
    /// Nothing to route.
    Idle,
}

/// Logs a stored routing (the router's, or the inbound's at acceptance).
pub fn log_routed(event_id: &EventId, matched_routes: &[String], deliveries: usize) {
    if matched_routes.is_empty() {
        tracing::info!(event_id = %event_id, "event matched no route");
    } else {
        // Debug: the happy path logs one line per event (accepted) and one
        // per delivery attempt, as the SPEC asks; routing is between them.
        tracing::debug!(event_id = %event_id, routes = %crate::telemetry::list(matched_routes), deliveries, "event routed");
    }
}

async fn complete(shared: &RouterShared, routed: Vec<RoutedEvent>) -> Result<(), StoreError> {
    if routed.is_empty() {
        return Ok(());
    }
    let created = routed.iter().any(|r| !r.deliveries.is_empty());
    let routed = Arc::new(routed);
    // The events are claimed: keep trying to store their results while the
    // store recovers (a full disk freed, a lock released) rather than
    // leaving them to wait out their lease. Bounded: after that the lease
    // expires and they are routed again.
    let mut wait = Duration::from_millis(100);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match shared
            .store
            .complete_routing(routed.clone(), now_millis())
            .await
        {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() + wait < deadline => {
                tracing::warn!(error = %e, events = routed.len(), retry_in_ms = wait.as_millis() as u64, "cannot store routing results; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
    // Logged after the commit: "event routed" means it is stored.
    for r in routed.iter() {
        log_routed(&r.event_id, &r.matched_routes, r.deliveries.len());
    }
    if created {
        shared.wake_deliveries.notify_one();
    }
    Ok(())
}

/// An event that waits for task fetches.
struct Pending {
    event: EventToRoute,
    payload: Value,
    candidates: Vec<Candidate>,
}

/// Fetches the tasks of one event's routes and routes it, or defers it when a
/// fetch should be retried. `None` when deferred.
async fn enrich_one(shared: &RouterShared, pipeline: &Pipeline, p: Pending) -> Option<RoutedEvent> {
    let mut routed = RoutedEvent {
        event_id: p.event.id.clone(),
        matched_routes: Vec::new(),
        deliveries: Vec::new(),
    };
    let mut retry: Option<(String, Option<Duration>, &Route)> = None;
    let mut failed_retryable: Vec<(usize, Map<String, Value>, String)> = Vec::new();
    for c in p.candidates {
        let route = &pipeline.routes[c.route];
        if !c.needs_task {
            fire(&mut routed, pipeline, &p.payload, c.route, &c.context, None);
            continue;
        }
        let via = route
            .enrich_via
            .as_deref()
            .and_then(|v| pipeline.targets.get(v));
        let task_id = task_id_of(&Value::Object(c.context.clone()), &p.payload);
        let (Some(via), Some(task_id)) = (via, task_id) else {
            let why = "cannot fetch the task: the event has no task_id and the route extracts none";
            fire(
                &mut routed,
                pipeline,
                &p.payload,
                c.route,
                &c.context,
                Some(why),
            );
            continue;
        };
        match shared.enricher.task(via, &task_id).await {
            Ok(task) => match with_task(route, c.context, task) {
                Ok(ctx) => {
                    fire(&mut routed, pipeline, &p.payload, c.route, &ctx, None);
                }
                Err(reason) => {
                    tracing::debug!(event_id = %p.event.id, route = %route.name, reason = %reason, "task condition does not hold");
                }
            },
            Err(FetchError::Gone(reason)) => {
                tracing::warn!(event_id = %p.event.id, route = %route.name, error = %reason, "task fetch failed for good");
                fire(
                    &mut routed,
                    pipeline,
                    &p.payload,
                    c.route,
                    &c.context,
                    Some(&reason),
                );
            }
            Err(FetchError::Retry { reason, after }) => {
                retry.get_or_insert((reason.clone(), after, route));
                failed_retryable.push((c.route, c.context, reason));
            }
        }
    }
    if let Some((reason, after, route)) = retry {
        let policy = route
            .enrich_via
            .as_deref()
            .and_then(|v| pipeline.targets.get(v))
            .map(|t| t.retry)
            .unwrap_or_default();
        let n = p.event.route_attempts + 1;
        if n < policy.attempts {
            let wait = after.unwrap_or_else(|| backoff(n, &policy, fastrand::f64()));
            let at =
                now_millis().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
            let ready = std::mem::take(&mut routed.deliveries);
            let created = !ready.is_empty();
            match shared
                .store
                .defer_routing(&p.event.id, at, &reason, ready, now_millis())
                .await
            {
                Ok(()) => {
                    tracing::warn!(event_id = %p.event.id, attempt = n, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(0), routes_delivering = %crate::telemetry::list(&routed.matched_routes), error = %reason, "task fetch failed; routes that need the task deferred");
                    if created {
                        shared.wake_deliveries.notify_one();
                    }
                }
                Err(e) => {
                    tracing::error!(event_id = %p.event.id, error = %e, "cannot defer routing");
                }
            }
            return None;
        }
        for (index, ctx, reason) in failed_retryable {
            let why = format!("{reason}; gave up fetching the task after {n} attempts");
            routed
                .matched_routes
                .push(pipeline.routes[index].name.clone());
            routed.deliveries.extend(deliveries(
                pipeline,
                &p.event.id,
                index,
                &ctx,
                &p.payload,
                Some(&why),
            ));
        }
    }
    Some(routed)
}

async fn enrich_all(shared: Arc<RouterShared>, pipeline: Arc<Pipeline>, pending: Vec<Pending>) {
    let futures = pending
        .into_iter()
        .map(|p| enrich_one(&shared, &pipeline, p));
    let routed: Vec<RoutedEvent> = futures_util::future::join_all(futures)
        .await
        .into_iter()
        .flatten()
        .collect();
    if let Err(e) = complete(&shared, routed).await {
        // The events stay unrouted; their lease expires and they are routed again.
        tracing::error!(error = %e, "cannot store routing results");
    }
}

impl Router {
    /// A router over the shared state.
    pub fn new(shared: Arc<RouterShared>) -> Self {
        Router {
            shared,
            enriching: JoinSet::new(),
        }
    }

    /// Claims and routes one batch of events. Events whose routes need the
    /// ClickUp task are routed by a background task, so a slow ClickUp API
    /// never holds other events.
    pub async fn step(&mut self) -> Result<RouterStep, StoreError> {
        while self.enriching.try_join_next().is_some() {}
        if self.enriching.len() >= MAX_ENRICHING {
            self.enriching.join_next().await;
        }
        let events = self
            .shared
            .store
            .claim_events(BATCH, now_millis(), LEASE_MS)
            .await?;
        if events.is_empty() {
            return Ok(RouterStep::Idle);
        }
        let claimed = events.len();
        let pipeline = self.shared.pipeline.load_full();
        let mut ready = Vec::new();
        let mut pending = Vec::new();
        for event in events {
            let payload: Value = serde_json::from_slice(&event.payload).unwrap_or(Value::Null);
            let cands = candidates(&pipeline, &EventHead::of(&event), &payload);
            if cands.iter().any(|c| c.needs_task) {
                pending.push(Pending {
                    event,
                    payload,
                    candidates: cands,
                });
            } else {
                ready.push(routed(&pipeline, &EventHead::of(&event), &payload, cands));
            }
        }
        complete(&self.shared, ready).await?;
        if !pending.is_empty() {
            self.enriching
                .spawn(enrich_all(self.shared.clone(), pipeline, pending));
        }
        Ok(RouterStep::Routed(claimed))
    }

    /// Runs until `cancel`: routes whenever woken, and every second anyway.
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            match self.step().await {
                Ok(RouterStep::Routed(_)) => continue,
                Ok(RouterStep::Idle) => {}
                Err(e) => tracing::error!(error = %e, "routing failed; retrying"),
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.shared.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        // Enrichment in flight is abandoned: those events are still unrouted
        // and are routed again after the restart.
        self.enriching.abort_all();
    }
}
