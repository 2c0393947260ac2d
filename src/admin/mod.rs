//! The admin listener: health, readiness, metrics and `/api/v1`.
//!
//! When `admin_token` is set, `/api/v1` and `/metrics` need
//! `Authorization: Bearer <token>` (401 otherwise); `/healthz` and `/readyz`
//! stay open for probes.

pub mod api;

use crate::metrics::{self, Metrics};
use crate::pipeline::Live;
use crate::store::Store;
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use std::future::{Ready, ready};
use std::sync::Arc;
use tokio::sync::Notify;

/// What the admin handlers share.
pub struct AdminState {
    /// The store.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Bearer token required by `/api/v1` and `/metrics`, when set.
    pub token: Option<String>,
    /// The routes in force, reloaded with the HTTPS certificate.
    pub pipeline: Arc<Live>,
    /// Wakes the delivery worker after a replay.
    pub wake_deliveries: Arc<Notify>,
    /// ClickUp webhook health, as the watch last saw it.
    pub webhooks: Arc<crate::clickup::watch::HealthBoard>,
}

/// Registers the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // A malformed query (?limit=abc) answers JSON like every other error.
    let query = web::QueryConfig::default().error_handler(|e, _| {
        let body = serde_json::json!({"error": e.to_string()});
        actix_web::error::InternalError::from_response(e, HttpResponse::BadRequest().json(body))
            .into()
    });
    cfg.app_data(query)
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics_text))
        .service(web::scope("/api/v1").configure(api::configure));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// 200 when the store commits a probe row in time and routes are loaded (they are loaded before
/// the listener starts, and a failed reload keeps the old ones).
async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({
            "status": "ready",
            "routes": state.pipeline.load().routes.len(),
        })),
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "unavailable", "error": e.to_string()})),
    }
}

async fn metrics_text(_auth: Authorized, state: web::Data<AdminState>) -> HttpResponse {
    if let Ok(q) = state.store.queue_stats().await {
        let set = |name: &str, v: u64| {
            state
                .metrics
                .queue_depth
                .get_or_create(&metrics::StateLabel {
                    state: name.to_owned(),
                })
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set("unrouted", q.unrouted);
        set("pending", q.pending);
        set("dead", q.dead);
        set("waiting", q.waiting);
        let age = q
            .oldest_pending_received_at
            .map(|t| (crate::ids::now_millis() - t).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        state.metrics.oldest_pending_age.set(age);
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render())
}

/// Proof that the request carried the admin token (or that none is needed).
pub struct Authorized;

/// A missing or wrong admin token.
#[derive(Debug, thiserror::Error)]
#[error("missing or wrong bearer token")]
pub struct Unauthorized;

impl ResponseError for Unauthorized {
    fn status_code(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Bearer"))
            .json(serde_json::json!({"error": self.to_string()}))
    }
}

fn check(req: &HttpRequest) -> Result<Authorized, Unauthorized> {
    let Some(state) = req.app_data::<web::Data<AdminState>>() else {
        return Err(Unauthorized);
    };
    let Some(token) = &state.token else {
        return Ok(Authorized);
    };
    if bearer_matches(req, token) {
        Ok(Authorized)
    } else {
        Err(Unauthorized)
    }
}

/// Whether `given` is `token`, compared in constant time (the API's bearer
/// token and the console's login share it).
pub fn token_matches(given: &str, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.len() == token.len() && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

/// Whether the request carries `Authorization: Bearer <admin_token>`.
pub fn bearer_matches(req: &HttpRequest, token: &str) -> bool {
    // The scheme is case-insensitive (RFC 9110): "bearer t0k" is as good.
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, given)| token_matches(given.trim_start(), token))
}

impl FromRequest for Authorized {
    type Error = Unauthorized;
    type Future = Ready<Result<Authorized, Unauthorized>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req))
    }
}
