//! `POST /hooks/{source}`: capped body -> verify -> route -> store -> 200.
//!
//! An event whose routes need no ClickUp task is routed here, before the
//! commit, and stored with its deliveries in the event's own commit: one
//! durable write instead of three (insert, the router's claim, its
//! result). The others are stored unrouted for the router, which fetches
//! the task. Of those deliveries, the ones that can be sent at once are
//! stored claimed and started from here ([`crate::deliver::direct`]).
//!
//! The answer must come in milliseconds (ClickUp marks a webhook failing after
//! 7 s), and its status is the contract of SPEC section 3. The mapping from
//! error to status lives in exactly one place: [`InboundError`]'s
//! `ResponseError` impl.

use crate::ids::{EventId, now_millis};
use crate::pipeline::Live;
use crate::store::{Store, StoreError};
use crate::verify::{self, RejectReason, VerifyError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures_util::StreamExt;
use std::sync::Arc;

/// The longest an inbound request waits for its event to be committed.
pub const STORE_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the webhook handlers share.
pub struct InboundState {
    /// The routes in force (swapped atomically on reload).
    pub pipeline: Arc<Live>,
    /// The store.
    pub store: Store,
    /// Largest accepted body in bytes.
    pub max_body: usize,
    /// How long reading the body may take (then 408).
    pub body_timeout: std::time::Duration,
    /// Requests in flight, for graceful shutdown.
    pub in_flight: Arc<crate::lifecycle::InFlight>,
    /// Wakes the router after a new, unrouted event is stored.
    pub wake_router: Arc<tokio::sync::Notify>,
    /// Wakes the deliverers after an event is stored with deliveries.
    pub wake_deliveries: Arc<tokio::sync::Notify>,
    /// Metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Starts deliveries that can be sent at once without the worker's
    /// claim (a store this process owns alone; `deliver::direct`).
    pub starter: Option<crate::deliver::direct::Starter>,
}

/// Why an inbound request was refused.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// No such source: 404.
    #[error("unknown source \"{0}\"")]
    UnknownSource(String),
    /// Body larger than `max_body`: 413.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// Signature problem: 403 (never 401 or 410: ClickUp suspends on those).
    #[error("{0}")]
    Signature(VerifyError),
    /// Body not JSON or lacking the source's required fields: 400.
    #[error("{0}")]
    BadBody(String),
    /// The body could not be read from the connection: 400.
    #[error("body could not be read: {0}")]
    Read(String),
    /// The body did not arrive within `body_timeout`: 408, and the
    /// connection is closed (a stalled sender must not hold it).
    #[error("body not received within {0} s; send the whole body at once")]
    Timeout(u64),
    /// The store did not answer: 503, so the sender retries.
    #[error("store unavailable, retry later")]
    Store(#[source] StoreError),
    /// The daemon is stopping: 503, so the sender retries.
    #[error("shutting down, retry later")]
    ShuttingDown,
}

impl InboundError {
    /// A short reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            InboundError::UnknownSource(_) => "unknown_source",
            InboundError::TooLarge(_) => "too_large",
            InboundError::Signature(e) => e.reason(),
            InboundError::BadBody(_) => "bad_body",
            InboundError::Read(_) => "read_error",
            InboundError::Timeout(_) => "body_timeout",
            InboundError::Store(_) => "store_unavailable",
            InboundError::ShuttingDown => "shutting_down",
        }
    }
}

impl ResponseError for InboundError {
    fn status_code(&self) -> StatusCode {
        match self {
            InboundError::UnknownSource(_) => StatusCode::NOT_FOUND,
            InboundError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            InboundError::Signature(_) => StatusCode::FORBIDDEN,
            InboundError::BadBody(_) | InboundError::Read(_) => StatusCode::BAD_REQUEST,
            InboundError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            InboundError::Store(_) | InboundError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // Messages name headers and reasons, never secrets or signatures.
        let mut answer = HttpResponse::build(self.status_code());
        if matches!(self, InboundError::Timeout(_) | InboundError::Read(_)) {
            // The rest of the body may never come: do not wait for it.
            answer.force_close();
        }
        answer.json(serde_json::json!({ "error": self.to_string() }))
    }
}

/// Registers the webhook routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/hooks/{source}", web::post().to(receive))
        .route("/healthz", web::get().to(healthz));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Reads at most `max` bytes; more is an error before the rest is read.
async fn read_capped(
    req: &HttpRequest,
    mut payload: web::Payload,
    max: usize,
) -> Result<Vec<u8>, InboundError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(InboundError::TooLarge(max));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(1024).min(max));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| InboundError::Read(e.to_string()))?;
        if body.len() + chunk.len() > max {
            return Err(InboundError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn receive(
    state: web::Data<InboundState>,
    source: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, InboundError> {
    let source = source.into_inner();
    tracing::debug!(source = %source, "receiving event");
    let result = match state.in_flight.enter() {
        Some(_guard) => accept(&state, &source, &req, payload).await,
        None => Err(InboundError::ShuttingDown),
    };
    match &result {
        Ok((id, event_type, duplicate)) => {
            tracing::info!(source = %source, event_id = %id, event_type = %event_type, duplicate, "event accepted");
            let outcome = if *duplicate { "duplicate" } else { "accepted" };
            state.metrics.event(&source, outcome, "");
        }
        Err(e) => {
            tracing::warn!(source = %source, reason = e.reason(), error = %e, "event rejected");
            // Unknown names are not label values: a scanner must not grow the
            // metrics without bound.
            let known = !matches!(e, InboundError::UnknownSource(_));
            state.metrics.event(
                if known { &source } else { "_unknown" },
                "rejected",
                e.reason(),
            );
        }
    }
    let (id, _, duplicate) = result?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "event_id": id, "duplicate": duplicate })))
}

/// Checks in SPEC order: source (404), size (413), signature (403), JSON (400).
async fn accept(
    state: &InboundState,
    source: &str,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<(String, String, bool), InboundError> {
    // An owned Arc: the request holds the routes it started with across its
    // awaits, and a reload meanwhile swaps in new ones for the next requests.
    let pipeline = state.pipeline.load_full();
    let src = pipeline
        .sources
        .get(source)
        .ok_or_else(|| InboundError::UnknownSource(source.to_owned()))?;
    // A sender that declares a body and stalls must not hold the connection
    // (nor, thousands of times over, the file descriptors): the whole body
    // arrives within `body_timeout` or the request is cut. A body cut short
    // is a read error, never processed as complete.
    let body = tokio::time::timeout(
        state.body_timeout,
        // Boxed, like the commit below: a large future inside `timeout` is
        // copied by value each time it is moved.
        Box::pin(read_capped(req, payload, state.max_body)),
    )
    .await
    .map_err(|_| InboundError::Timeout(state.body_timeout.as_secs()))??;
    let received_at = now_millis();
    let mut event = verify::verify_event(
        source,
        &src.verifier,
        &src.identity,
        req.headers(),
        body,
        received_at / 1000,
    )
    .map_err(|e| match e {
        RejectReason::Signature(s) => InboundError::Signature(s),
        RejectReason::BadBody(m) => InboundError::BadBody(m),
    })?;
    let event_type = event.identity().event_type.clone();
    let id = EventId::generate();
    let mut routing = crate::route::at_acceptance(
        &pipeline,
        &crate::route::EventHead {
            id: &id,
            source,
            event_type: &event_type,
        },
        event.payload(),
    );
    // Deliveries to send at once are stored claimed, and started once the
    // event is committed.
    let mut reserved = match (&state.starter, routing.as_mut()) {
        (Some(starter), Some(routing)) => starter.reserve(
            &pipeline,
            &crate::deliver::direct::Accepted {
                id: &id,
                source,
                event_type: &event_type,
                body: event.body(),
                received_at,
            },
            routing,
        ),
        _ => Default::default(),
    };
    let tree = (!reserved.is_empty()).then(|| event.take_payload());
    // What is logged and woken once it is stored.
    let routed = routing
        .as_ref()
        .map(|r| (r.matched_routes.clone(), r.deliveries.len()));
    // ClickUp gives up after 7 s: a store that does not commit in time is a
    // 503 (the sender retries; a commit that lands anyway makes the retry a
    // duplicate), never a request left hanging.
    let inserted = tokio::time::timeout(
        STORE_ANSWER_TIMEOUT,
        Box::pin(
            state
                .store
                .insert_routed_event(event, id, received_at, routing),
        ),
    )
    .await
    .map_err(|_| InboundError::Store(StoreError::stalled("commit", STORE_ANSWER_TIMEOUT)))?
    .map_err(InboundError::Store)?;
    if !inserted.duplicate {
        reserved.forget(&inserted.unclaimed);
        match routed {
            None => state.wake_router.notify_one(),
            Some((routes, deliveries)) => {
                crate::route::log_routed(&inserted.id, &routes, deliveries);
                // The worker claims what was not started here.
                if deliveries > reserved.len() {
                    state.wake_deliveries.notify_one();
                }
                if let Some(starter) = &state.starter {
                    starter.start(reserved, tree);
                }
            }
        }
    } else {
        // Its first copy's deliveries were stored; these were not.
        reserved.cancel();
    }
    Ok((inserted.id.to_string(), event_type, inserted.duplicate))
}
