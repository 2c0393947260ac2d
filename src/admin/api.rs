//! `/api/v1`: events, deliveries, replay, reload. Lists answer
//! `{"items": [...], "next": "<cursor or null>"}`, newest first; pass the
//! cursor back as `?cursor=` for the next page.

use super::{AdminState, Authorized};
use crate::ids::{DeliveryId, EventId, now_millis};
use crate::store::{
    AttemptRow, DeliveryFilter, DeliveryRow, DeliveryStatus, ReplayFilter, StoreError, StoredEvent,
};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use serde::Deserialize;
use serde_json::{Value, json};

/// Registers the `/api/v1` routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/events", web::get().to(list_events))
        .route("/events/{id}", web::get().to(show_event))
        .route("/deliveries", web::get().to(list_deliveries))
        .route("/deliveries/replay", web::post().to(replay_all))
        .route("/deliveries/{id}", web::get().to(show_delivery))
        .route("/deliveries/{id}/replay", web::post().to(replay_one))
        .route("/reload", web::post().to(reload));
}

/// Admin API errors, mapped to statuses in one place.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404.
    #[error("{0} not found")]
    NotFound(String),
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 503.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({"error": self.to_string()}))
    }
}

fn time(ms: i64) -> Value {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(Value::String)
        .unwrap_or(Value::Null)
}

fn event_json(e: &StoredEvent) -> Value {
    json!({
        "id": e.id.as_str(),
        "source": e.source,
        "event_type": e.event_type,
        "dedupe_key": e.dedupe_key,
        "received_at": time(e.received_at),
        "routed_at": e.routed_at.map(time),
    })
}

/// A delivery as the API shows it.
pub fn delivery_json(d: &DeliveryRow) -> Value {
    json!({
        "id": d.id.as_str(),
        "event_id": d.event_id.as_str(),
        "route": d.route,
        "step": d.step,
        "target": d.target,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "last_error": d.last_error,
        "created_at": time(d.created_at),
        "delivered_at": d.delivered_at.map(time),
    })
}

fn attempt_json(a: &AttemptRow) -> Value {
    json!({
        "n": a.n,
        "at": time(a.at),
        "duration_ms": a.duration_ms,
        "status_code": a.status_code,
        "response": a.response,
        "error": a.error,
        "outcome": a.outcome,
    })
}

fn page(items: Vec<Value>, limit: u32) -> HttpResponse {
    let next = if items.len() as u32 >= limit {
        items
            .last()
            .and_then(|i| i.get("id"))
            .cloned()
            .unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    HttpResponse::Ok().json(json!({"items": items, "next": next}))
}

fn limit(l: Option<&str>) -> Result<u32, ApiError> {
    let n = match l {
        None => 50,
        Some(v) => v.parse::<u32>().map_err(|_| {
            ApiError::BadRequest(format!(
                "limit must be a whole number from 1 to {MAX_LIMIT}, not \"{v}\""
            ))
        })?,
    };
    match n {
        1..=MAX_LIMIT => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "limit must be a whole number from 1 to {MAX_LIMIT}, not {n}"
        ))),
    }
}

/// The largest page a list answers.
pub const MAX_LIMIT: u32 = 1000;

/// A cursor is the id of the last item of the previous page (`evt_...` or
/// `dlv_...`, lowercase hex); anything else is a 400 rather than an empty
/// or arbitrary page.
fn cursor<'a>(c: Option<&'a str>, prefix: &str) -> Result<Option<&'a str>, ApiError> {
    let Some(c) = c else { return Ok(None) };
    let ok = c.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 64
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(Some(c))
    } else {
        Err(ApiError::BadRequest(format!(
            "cursor must be the \"next\" value of the previous page ({prefix}...), not \"{}\"",
            c.chars().take(80).collect::<String>()
        )))
    }
}

/// Query of `GET /events`.
#[derive(Deserialize)]
pub struct EventsQuery {
    source: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list_events(
    _a: Authorized,
    s: web::Data<AdminState>,
    q: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(q.limit.as_deref())?;
    let events = s
        .store
        .events_page(
            q.source.as_deref(),
            limit,
            cursor(q.cursor.as_deref(), "evt_")?,
        )
        .await?;
    Ok(page(events.iter().map(event_json).collect(), limit))
}

async fn show_event(
    _a: Authorized,
    s: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = EventId::from_stored(id.into_inner());
    let e = s
        .store
        .event(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("event {id}")))?;
    let matched = s.store.matched_routes(&id).await?;
    let deliveries = s
        .store
        .deliveries(&DeliveryFilter {
            event_id: Some(id),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    let mut v = event_json(&e);
    v["payload"] = serde_json::from_slice(&e.payload).unwrap_or(Value::Null);
    v["matched_routes"] = json!(matched);
    v["deliveries"] = Value::Array(deliveries.iter().map(delivery_json).collect());
    Ok(HttpResponse::Ok().json(v))
}

fn status(s: Option<&str>) -> Result<Option<DeliveryStatus>, ApiError> {
    s.map(|v| {
        DeliveryStatus::parse(v).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status must be pending, delivered or dead, not \"{v}\""
            ))
        })
    })
    .transpose()
}

/// Query of `GET /deliveries` and the bulk replay.
#[derive(Deserialize)]
pub struct DeliveriesQuery {
    status: Option<String>,
    target: Option<String>,
    route: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list_deliveries(
    _a: Authorized,
    s: web::Data<AdminState>,
    q: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(q.limit.as_deref())?;
    let rows = s
        .store
        .deliveries(&DeliveryFilter {
            status: status(q.status.as_deref())?,
            target: q.target.clone(),
            route: q.route.clone(),
            event_id: None,
            limit,
            before: cursor(q.cursor.as_deref(), "dlv_")?.map(str::to_owned),
        })
        .await?;
    Ok(page(rows.iter().map(delivery_json).collect(), limit))
}

async fn show_delivery(
    _a: Authorized,
    s: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = DeliveryId::from_stored(id.into_inner());
    let d = s
        .store
        .delivery(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("delivery {id}")))?;
    let attempts = s.store.attempts(&id).await?;
    let mut v = delivery_json(&d);
    v["attempts_list"] = Value::Array(attempts.iter().map(attempt_json).collect());
    Ok(HttpResponse::Ok().json(v))
}

async fn replay_one(
    _a: Authorized,
    s: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = DeliveryId::from_stored(id.into_inner());
    let d = s
        .store
        .delivery(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("delivery {id}")))?;
    if d.status == DeliveryStatus::Pending {
        return Err(ApiError::Conflict(format!(
            "delivery {id} is already pending"
        )));
    }
    let n = s
        .store
        .replay(ReplayFilter::One(id.clone()), now_millis())
        .await?;
    tracing::info!(delivery_id = %id, "delivery replayed");
    s.wake_deliveries.notify_one();
    Ok(HttpResponse::Ok().json(json!({"replayed": n})))
}

async fn replay_all(
    _a: Authorized,
    s: web::Data<AdminState>,
    q: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let st = status(q.status.as_deref())?.unwrap_or(DeliveryStatus::Dead);
    if st == DeliveryStatus::Pending {
        return Err(ApiError::BadRequest(
            "pending deliveries are already queued".into(),
        ));
    }
    let n = s
        .store
        .replay(
            ReplayFilter::All {
                status: st,
                target: q.target.clone(),
                route: q.route.clone(),
            },
            now_millis(),
        )
        .await?;
    tracing::info!(
        replayed = n,
        status = st.as_str(),
        target = q.target.as_deref(),
        route = q.route.as_deref(),
        "deliveries replayed"
    );
    s.wake_deliveries.notify_one();
    Ok(HttpResponse::Ok().json(json!({"replayed": n})))
}

async fn reload(_a: Authorized, s: web::Data<AdminState>) -> HttpResponse {
    if let Some(c) = &s.certificates {
        c.reload_logged();
    }
    match crate::app::reload(&s.pipeline, &s.routes, &s.templates, &s.metrics) {
        Ok(()) => HttpResponse::Ok()
            .json(json!({"reloaded": true, "routes": s.pipeline.load().routes.len()})),
        Err(e) => HttpResponse::BadRequest().json(json!({
            "error": "routes file has errors; the running routes stay in force",
            "diagnostics": e.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })),
    }
}
