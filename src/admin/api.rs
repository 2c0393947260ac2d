//! `/api/v1`: events, deliveries, replay, reload. Lists answer
//! `{"items": [...], "next": "<cursor or null>"}`, newest first; pass the
//! cursor back as `?cursor=` for the next page.

use super::{AdminState, Authorized};
use crate::ids::{DeliveryId, EventId, now_millis};
use crate::store::{
    Activity, AttemptRow, DeliveryFilter, DeliveryRow, DeliveryStatus, EventFilter, ReplayFilter,
    StoreError, StoredEvent,
};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use serde::Deserialize;
use serde_json::{Value, json};

/// Registers the `/api/v1` routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(only("/events", "GET").route(web::get().to(list_events)))
        .service(only("/events/{id}", "GET").route(web::get().to(show_event)))
        .service(only("/deliveries", "GET").route(web::get().to(list_deliveries)))
        .service(only("/deliveries/replay", "POST").route(web::post().to(replay_all)))
        .service(only("/deliveries/{id}", "GET").route(web::get().to(show_delivery)))
        .service(only("/deliveries/{id}/replay", "POST").route(web::post().to(replay_one)))
        .service(only("/activity", "GET").route(web::get().to(activity)))
        .service(only("/reload", "POST").route(web::post().to(reload)))
        .service(only("/openapi.json", "GET").route(web::get().to(openapi)));
}

/// A resource that answers other methods than `allow` with 405 and an
/// `Allow` header (the app's default service would say 404).
fn only(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        HttpResponse::MethodNotAllowed()
            .insert_header(("Allow", allow))
            .json(json!({"error": format!("method not allowed here; use {allow}")}))
    }))
}

/// The OpenAPI document of `/api/v1` (served at `/api/v1/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Serves [`OPENAPI`]. Open without the token: it describes the API and holds
/// no data, so tools can load it before they are given a token.
async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
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
        "next_attempt_at": d.next_attempt_at.map(time),
        "order_key": d.order_key,
        "waiting_for": d.waiting_for.as_ref().map(|w| w.as_str()),
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

/// Parses a time filter: RFC 3339 (`2026-12-01T09:30:00Z`), or a date and
/// time without offset (`2026-12-01T09:30`, what a browser's
/// `datetime-local` field sends), taken as UTC. Unix ms.
pub fn parse_time(name: &str, v: &str) -> Result<i64, ApiError> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let v = v.trim();
    let t = time::OffsetDateTime::parse(v, &Rfc3339)
        .or_else(|_| {
            time::PrimitiveDateTime::parse(
                v,
                format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
            )
            .or_else(|_| {
                time::PrimitiveDateTime::parse(
                    v,
                    format_description!("[year]-[month]-[day]T[hour]:[minute]"),
                )
            })
            .map(time::PrimitiveDateTime::assume_utc)
        })
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{name} must be a time such as 2026-12-01T09:30:00Z, not \"{v}\""
            ))
        })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ApiError::BadRequest(format!("{name} is out of range: \"{v}\"")))
}

/// Query of `GET /events` (the console's event list reads the same).
#[derive(Deserialize, Default)]
pub struct EventsQuery {
    /// Only this source.
    pub source: Option<String>,
    /// Only this event type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Accepted at or after (a time, see [`parse_time`]).
    pub since: Option<String>,
    /// Accepted before.
    pub until: Option<String>,
    /// Page size.
    pub limit: Option<String>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

impl EventsQuery {
    /// The store filter this query asks for, with `limit` rows.
    pub fn filter(&self, limit: u32) -> Result<EventFilter, ApiError> {
        Ok(EventFilter {
            source: nonempty(&self.source),
            event_type: nonempty(&self.event_type),
            since: nonempty(&self.since)
                .map(|v| parse_time("since", &v))
                .transpose()?,
            until: nonempty(&self.until)
                .map(|v| parse_time("until", &v))
                .transpose()?,
            limit,
            before: cursor(nonempty(&self.cursor).as_deref(), "evt_")?.map(str::to_owned),
        })
    }
}

async fn list_events(
    _a: Authorized,
    s: web::Data<AdminState>,
    q: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(q.limit.as_deref())?;
    let events = s.store.events(&q.filter(limit)?).await?;
    Ok(page(events.iter().map(event_json).collect(), limit))
}

/// The window and bucket width of `GET /activity` and the console's chart.
pub const ACTIVITY_WINDOW_MS: i64 = 60 * 60 * 1000;
/// Twelve buckets of five minutes.
pub const ACTIVITY_BUCKET_MS: i64 = 5 * 60 * 1000;

/// Events and deliveries of the last hour, in five-minute buckets, aligned
/// so the last bucket ends at the next bucket boundary.
pub async fn last_hour(s: &AdminState) -> Result<Activity, StoreError> {
    let now = now_millis();
    let end = now - now.rem_euclid(ACTIVITY_BUCKET_MS) + ACTIVITY_BUCKET_MS;
    s.store
        .activity(end - ACTIVITY_WINDOW_MS, ACTIVITY_BUCKET_MS)
        .await
}

async fn activity(_a: Authorized, s: web::Data<AdminState>) -> Result<HttpResponse, ApiError> {
    let a = last_hour(&s).await?;
    let row = |c: &crate::store::ActivityCount| {
        json!({
            "name": c.name,
            "status": c.status.map(DeliveryStatus::as_str),
            "from": time(a.since + i64::from(c.bucket) * a.bucket_ms),
            "count": c.count,
        })
    };
    Ok(HttpResponse::Ok().json(json!({
        "since": time(a.since),
        "bucket_seconds": a.bucket_ms / 1000,
        "events": a.events.iter().map(row).collect::<Vec<_>>(),
        "deliveries": a.deliveries.iter().map(row).collect::<Vec<_>>(),
    })))
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

/// Query of `GET /deliveries` and the bulk replay (the console's delivery
/// list reads the same).
#[derive(Deserialize, Default)]
pub struct DeliveriesQuery {
    /// pending, delivered or dead.
    pub status: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Only this route.
    pub route: Option<String>,
    /// Page size.
    pub limit: Option<String>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// Bulk replay only: answer how many would be queued, queue nothing.
    pub dry_run: Option<String>,
}

impl DeliveriesQuery {
    /// The store filter this query asks for, with `limit` rows.
    pub fn filter(&self, limit: u32) -> Result<DeliveryFilter, ApiError> {
        Ok(DeliveryFilter {
            status: status(nonempty(&self.status).as_deref())?,
            target: nonempty(&self.target),
            route: nonempty(&self.route),
            event_id: None,
            limit,
            before: cursor(nonempty(&self.cursor).as_deref(), "dlv_")?.map(str::to_owned),
        })
    }
}

async fn list_deliveries(
    _a: Authorized,
    s: web::Data<AdminState>,
    q: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit(q.limit.as_deref())?;
    let rows = s.store.deliveries(&q.filter(limit)?).await?;
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

/// Queues one delivery again (the API and the console): a dead or delivered
/// one with a fresh retry budget, a pending one waiting for its next retry is
/// made due now ("try now"). One being attempted at this moment is a
/// conflict.
pub async fn replay_delivery(s: &AdminState, id: &DeliveryId) -> Result<u64, ApiError> {
    let d = s
        .store
        .delivery(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("delivery {id}")))?;
    let n = s
        .store
        .replay(ReplayFilter::One(id.clone()), now_millis())
        .await?;
    if n == 0 && d.status == DeliveryStatus::Pending {
        return Err(ApiError::Conflict(format!(
            "delivery {id} is being attempted right now; see its attempts, and replay it again if it fails"
        )));
    }
    tracing::info!(delivery_id = %id, was = d.status.as_str(), "delivery replayed");
    s.wake_deliveries.notify_one();
    Ok(n)
}

/// Queues again every delivery in `status` (dead unless given) of the
/// target and route, when given (the API and the console).
pub async fn replay_matching(
    s: &AdminState,
    status: Option<DeliveryStatus>,
    target: Option<String>,
    route: Option<String>,
) -> Result<u64, ApiError> {
    let st = status.unwrap_or(DeliveryStatus::Dead);
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
                target: target.clone(),
                route: route.clone(),
            },
            now_millis(),
        )
        .await?;
    tracing::info!(
        replayed = n,
        status = st.as_str(),
        target = target.as_deref(),
        route = route.as_deref(),
        "deliveries replayed"
    );
    s.wake_deliveries.notify_one();
    Ok(n)
}

async fn replay_one(
    _a: Authorized,
    s: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = DeliveryId::from_stored(id.into_inner());
    let n = replay_delivery(&s, &id).await?;
    Ok(HttpResponse::Ok().json(json!({"replayed": n})))
}

async fn replay_all(
    _a: Authorized,
    s: web::Data<AdminState>,
    q: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let st = status(q.status.as_deref())?;
    if dry_run(q.dry_run.as_deref())? {
        let st = st.unwrap_or(DeliveryStatus::Dead);
        let n = s
            .store
            .count_replayable(st, q.target.as_deref(), q.route.as_deref())
            .await?;
        return Ok(HttpResponse::Ok().json(json!({"dry_run": true, "matched": n})));
    }
    let n = replay_matching(&s, st, q.target.clone(), q.route.clone()).await?;
    Ok(HttpResponse::Ok().json(json!({"replayed": n})))
}

/// `dry_run=true|false` (absent: false).
fn dry_run(v: Option<&str>) -> Result<bool, ApiError> {
    match v {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "dry_run must be true or false, not {other:?}"
        ))),
    }
}

async fn reload(_a: Authorized, s: web::Data<AdminState>) -> HttpResponse {
    match s.pipeline.reload() {
        Ok(done) => HttpResponse::Ok().json(json!({"reloaded": true, "routes": done.routes})),
        Err(e) => HttpResponse::BadRequest().json(json!({
            "error": "routes file has errors; the running routes stay in force",
            "diagnostics": e.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })),
    }
}
