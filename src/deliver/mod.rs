//! Delivery: claim due deliveries per target, render, send, classify, record.
//!
//! Each target has its own concurrency limit (a semaphore) and rate limit, and
//! deliveries are claimed per target only for free slots, so one slow or
//! failing target never delays another. Workers are woken when deliveries are
//! created or a slot frees; polling (at most every second, or at the next due
//! time) is only the fallback.

pub mod classify;
pub mod request;

use crate::ids::now_millis;
use crate::pipeline::{Pipeline, RateLimit, Target};
use crate::store::{AttemptOutcome, AttemptRecord, ClaimedDelivery, Store};
use arc_swap::ArcSwap;
use classify::{Answer, Outcome, classify};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use handlebars::Context;
use request::{plan, render_step};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Bytes of an answer kept on the attempt record.
pub const EXCERPT_BYTES: usize = 1024;
/// Bytes of an answer read at most (Slack's `{"ok": ...}` must fit).
const READ_BYTES: usize = 64 * 1024;

/// Per-target limits, rebuilt when the target's settings change on reload.
struct TargetState {
    concurrency: u32,
    rate: Option<RateLimit>,
    slots: Arc<Semaphore>,
    limiter: Option<DefaultDirectRateLimiter>,
}

fn limiter(rate: Option<RateLimit>) -> Option<DefaultDirectRateLimiter> {
    let r = rate?;
    let count = NonZeroU32::new(r.count)?;
    let quota = Quota::with_period(r.per / r.count)?.allow_burst(count);
    Some(RateLimiter::direct(quota))
}

impl TargetState {
    fn new(t: &Target) -> Self {
        TargetState {
            concurrency: t.concurrency,
            rate: t.rate_limit,
            slots: Arc::new(Semaphore::new(t.concurrency as usize)),
            limiter: limiter(t.rate_limit),
        }
    }
}

/// What every delivery task shares.
struct Shared {
    pipeline: Arc<ArcSwap<Pipeline>>,
    store: Store,
    client: reqwest::Client,
    wake: Arc<Notify>,
}

/// The delivery worker.
pub struct Deliverer {
    shared: Arc<Shared>,
    targets: HashMap<String, Arc<TargetState>>,
    tasks: JoinSet<()>,
}

/// What the result of one attempt was, for the record.
struct AttemptResult {
    answer: Answer,
    status: Option<u16>,
    excerpt: Option<String>,
}

impl Deliverer {
    /// A worker over the routes in force, the store, and a wake-up handle.
    pub fn new(
        pipeline: Arc<ArcSwap<Pipeline>>,
        store: Store,
        wake: Arc<Notify>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("clickup-bridge/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Deliverer {
            shared: Arc::new(Shared {
                pipeline,
                store,
                client,
                wake,
            }),
            targets: HashMap::new(),
            tasks: JoinSet::new(),
        })
    }

    fn state_for(&mut self, t: &Target) -> Arc<TargetState> {
        let stale = self
            .targets
            .get(&t.name)
            .is_none_or(|s| s.concurrency != t.concurrency || s.rate != t.rate_limit);
        if stale {
            self.targets
                .insert(t.name.clone(), Arc::new(TargetState::new(t)));
        }
        self.targets[&t.name].clone()
    }

    /// Claims what fits in every target's free slots and starts it. Returns
    /// how many deliveries were started.
    pub async fn step(&mut self) -> usize {
        while self.tasks.try_join_next().is_some() {}
        let pipeline = self.shared.pipeline.load_full();
        let mut started = 0;
        for target in pipeline.targets.values() {
            let state = self.state_for(target);
            let free = state.slots.available_permits();
            if free == 0 {
                continue;
            }
            let lease_ms =
                i64::try_from((target.timeout * 2 + Duration::from_secs(60)).as_millis())
                    .unwrap_or(i64::MAX);
            let limit = u32::try_from(free).unwrap_or(u32::MAX);
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
            for d in claimed {
                let Ok(permit) = state.slots.clone().try_acquire_owned() else {
                    break;
                };
                started += 1;
                self.tasks
                    .spawn(execute(self.shared.clone(), d, state.clone(), permit));
            }
        }
        started
    }

    /// Runs until `cancel`, then waits up to `grace` for deliveries in flight.
    pub async fn run(mut self, cancel: CancellationToken, grace: Duration) {
        loop {
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
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.shared.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
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
            }
        }
    }
}

/// The render context: the extracted values (and enrichment) stored with the
/// delivery, plus `event`, `meta` and `links`.
pub fn render_context(d: &ClaimedDelivery) -> Value {
    let mut ctx = match &d.context {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    let event: Value = serde_json::from_slice(&d.payload).unwrap_or(Value::Null);
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
    ctx.entry("links").or_insert_with(|| json!({}));
    Value::Object(ctx)
}

fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(EXCERPT_BYTES)];
    let s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > EXCERPT_BYTES {
        format!("{s}…")
    } else {
        s
    }
}

/// Describes a transport error without its URL (a Slack webhook URL is a
/// secret) but with its cause.
fn transport_message(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timeout after {:.1} s", timeout.as_secs_f64());
    }
    let mut msg = if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

async fn read_bounded(mut resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < READ_BYTES {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c),
            _ => break,
        }
    }
    out
}

async fn attempt(
    shared: &Shared,
    pipeline: &Pipeline,
    d: &ClaimedDelivery,
    state: &TargetState,
) -> AttemptResult {
    let invalid = |message: String| AttemptResult {
        answer: Answer::Invalid { message },
        status: None,
        excerpt: None,
    };
    let Some(target) = pipeline.targets.get(&d.target) else {
        return invalid(format!(
            "target \"{}\" is no longer in routes.yaml",
            d.target
        ));
    };
    let Some(step) = pipeline
        .routes
        .iter()
        .find(|r| r.name == d.route)
        .and_then(|r| r.send.get(d.step as usize))
    else {
        return invalid(format!(
            "route \"{}\" has no send step #{} any more",
            d.route,
            d.step + 1
        ));
    };
    let ctx = match Context::wraps(render_context(d)) {
        Ok(c) => c,
        Err(e) => return invalid(format!("render error: {e}")),
    };
    let rendered = match render_step(&pipeline.templates, step, &ctx) {
        Ok(r) => r,
        Err(e) => return invalid(e.0),
    };
    let requests = match plan(target, &rendered) {
        Ok(r) => r,
        Err(e) => return invalid(e),
    };
    if let Some(l) = &state.limiter {
        l.until_ready().await;
    }
    let is_slack_api = matches!(target.kind, crate::pipeline::TargetKind::SlackApi { .. });
    let mut last = invalid("nothing to send".into());
    for req in requests {
        let mut builder = shared
            .client
            .request(req.method.clone(), req.url.clone())
            .timeout(target.timeout)
            .header("Idempotency-Key", d.id.as_str());
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.to_string());
        }
        let resp = match builder.build() {
            Ok(r) => shared.client.execute(r).await,
            Err(e) => return invalid(format!("invalid request: {}", e.without_url())),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                return AttemptResult {
                    answer: Answer::Transport {
                        message: transport_message(&e, target.timeout),
                    },
                    status: None,
                    excerpt: None,
                };
            }
        };
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after");
        let ratelimit_reset = header("x-ratelimit-reset");
        let body = read_bounded(resp).await;
        let slack_error = if is_slack_api && (200..300).contains(&status) {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            match v.get("ok") {
                Some(Value::Bool(true)) => None,
                _ => Some(
                    v.get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("invalid answer")
                        .to_owned(),
                ),
            }
        } else {
            None
        };
        let ok = (200..300).contains(&status) && slack_error.is_none();
        last = AttemptResult {
            answer: Answer::Response {
                status,
                retry_after,
                ratelimit_reset,
                slack_error,
            },
            status: Some(status),
            excerpt: Some(excerpt(&body)),
        };
        if !ok {
            break;
        }
    }
    last
}

async fn execute(
    shared: Arc<Shared>,
    d: ClaimedDelivery,
    state: Arc<TargetState>,
    _slot: OwnedSemaphorePermit,
) {
    let pipeline = shared.pipeline.load_full();
    let n = d.attempts + 1;
    let started = Instant::now();
    let result = attempt(&shared, &pipeline, &d, &state).await;
    let duration = started.elapsed();
    let policy = pipeline
        .targets
        .get(&d.target)
        .map(|t| t.retry)
        .unwrap_or_default();
    let outcome = classify(
        &result.answer,
        n,
        &policy,
        SystemTime::now(),
        fastrand::f64(),
    );
    let at = now_millis();
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
    let outcome_name = match &outcome {
        Outcome::Delivered => "delivered",
        Outcome::Retry { .. } => "retry",
        Outcome::Dead { .. } => "dead",
    };
    match &outcome {
        Outcome::Dead { reason } => tracing::warn!(
            delivery_id = %d.id, event_id = %d.event_id, route = %d.route, target = %d.target, attempt = n,
            status = result.status, duration_ms = duration.as_millis() as u64, outcome = outcome_name, error = %reason,
            "delivery attempt"
        ),
        Outcome::Retry { after, reason } => tracing::info!(
            delivery_id = %d.id, event_id = %d.event_id, route = %d.route, target = %d.target, attempt = n,
            status = result.status, duration_ms = duration.as_millis() as u64, outcome = outcome_name, error = %reason,
            retry_in_ms = after.as_millis() as u64, "delivery attempt"
        ),
        Outcome::Delivered => tracing::info!(
            delivery_id = %d.id, event_id = %d.event_id, route = %d.route, target = %d.target, attempt = n,
            status = result.status, duration_ms = duration.as_millis() as u64, outcome = outcome_name,
            "delivery attempt"
        ),
    }
    let record = AttemptRecord {
        delivery_id: d.id.clone(),
        n,
        at,
        duration_ms: i64::try_from(duration.as_millis()).unwrap_or(i64::MAX),
        status_code: result.status,
        response: result.excerpt,
        error,
        outcome: stored,
    };
    if let Err(e) = shared.store.record_attempt(record).await {
        // The lease expires and the delivery is attempted again: at least once.
        tracing::error!(delivery_id = %d.id, error = %e, "cannot record the attempt");
    }
    shared.wake.notify_one();
}
