//! The admin listener: health and readiness (the admin API comes with the
//! operations work).

use crate::store::Store;
use actix_web::{HttpResponse, web};

/// What the admin handlers share.
pub struct AdminState {
    /// The store, pinged by `/readyz`.
    pub store: Store,
}

/// Registers the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// 200 when the store answers (routes are loaded before the listener starts).
async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "unavailable", "error": e.to_string()})),
    }
}
