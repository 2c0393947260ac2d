//! The operator's web console, `/console` on the admin listener.
//!
//! Every page is rendered here with maud, which escapes every value it is
//! given (event payloads are attacker-controlled); the stylesheet and the one
//! small script are compiled into the binary and served from
//! `/console/assets/`. A strict Content-Security-Policy forbids inline
//! script and style, framing and foreign form targets.
//!
//! Data comes from the same store queries and the same functions as the
//! admin API (`admin::api`), and the simulate form calls the same
//! `simulate::simulate` as the `simulate` command, so the console, the API
//! and the CLI cannot disagree.
//!
//! Access: with `admin_token` set, `POST /console/login` (form field `token`)
//! starts a session (see [`session`]); scripts may send
//! `Authorization: Bearer <token>` instead. Without a session a GET is
//! redirected to the login page and anything else answers 401. Every POST
//! made with a session cookie carries the session's CSRF token.

pub mod chart;
mod pages;
pub mod session;
pub mod views;

pub use session::Keys;

use crate::admin::AdminState;
use crate::admin::api::ApiError;
use crate::ids::now_millis;
use crate::store::StoreError;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::DefaultHeaders;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use std::future::{Ready, ready};

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The `/console` scope, with its security headers. The admin App registers
/// it beside `admin::configure`, with the [`Keys`] as app data.
pub fn scope() -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::scope("/console")
        .wrap(
            DefaultHeaders::new()
                .add(("Content-Security-Policy", CSP))
                .add(("X-Content-Type-Options", "nosniff"))
                .add(("Referrer-Policy", "no-referrer"))
                .add(("X-Frame-Options", "DENY"))
                .add(("Cache-Control", "no-store")),
        )
        .configure(pages::configure)
}

/// Who is looking: proof of a session (or of the bearer token), and what a
/// page needs to build its forms.
pub struct Viewer {
    /// The CSRF token to put in forms (empty for a bearer request).
    pub csrf: String,
    /// The session cookie value, when the request is made with one.
    session: Option<String>,
    /// A fresh anonymous session to set (no `admin_token`).
    set_cookie: Option<String>,
    /// Whether the request came over HTTPS (the cookie is then `Secure`).
    secure: bool,
    /// Whether a logout button makes sense (a login session).
    pub logged_in: bool,
}

impl Viewer {
    /// A 200 HTML page (with the anonymous session cookie, when new).
    pub fn page(&self, markup: maud::Markup) -> HttpResponse {
        self.respond(StatusCode::OK, markup)
    }

    /// An HTML page with `status`.
    pub fn respond(&self, status: StatusCode, markup: maud::Markup) -> HttpResponse {
        let mut r = HttpResponse::build(status);
        r.content_type("text/html; charset=utf-8");
        if let Some(v) = &self.set_cookie {
            r.cookie(session_cookie(v.clone(), self.secure));
        }
        r.body(markup.into_string())
    }

    /// 303 to `location` (after a POST).
    pub fn see_other(&self, location: &str) -> HttpResponse {
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, location))
            .finish()
    }

    /// Refuses a POST whose CSRF token is not this session's. A request
    /// authenticated by the bearer token needs none: a browser never adds
    /// that header by itself.
    pub fn check_csrf(&self, keys: &Keys, given: &str) -> Result<(), ConsoleError> {
        match &self.session {
            None => Ok(()),
            Some(_) if self.set_cookie.is_some() => Err(ConsoleError::Csrf),
            Some(s) if keys.csrf_valid(s, given) => Ok(()),
            Some(_) => Err(ConsoleError::Csrf),
        }
    }
}

fn is_https(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

/// The session cookie: HttpOnly, SameSite=Strict, Path=/console, expiring
/// with the session; Secure over HTTPS.
pub fn session_cookie(value: String, secure: bool) -> Cookie<'static> {
    let max_age = session::SESSION_TTL.as_secs();
    Cookie::build(session::COOKIE, value)
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(actix_web::cookie::time::Duration::seconds(
            i64::try_from(max_age).unwrap_or(i64::MAX),
        ))
        .finish()
}

fn viewer(req: &HttpRequest) -> Result<Viewer, ConsoleError> {
    let state = req
        .app_data::<web::Data<AdminState>>()
        .ok_or(ConsoleError::Unavailable)?;
    let keys = req
        .app_data::<web::Data<Keys>>()
        .ok_or(ConsoleError::Unavailable)?;
    let secure = is_https(req);
    if let Some(token) = &state.token
        && crate::admin::bearer_matches(req, token)
    {
        return Ok(Viewer {
            csrf: String::new(),
            session: None,
            set_cookie: None,
            secure,
            logged_in: false,
        });
    }
    let now = now_millis();
    let cookie = req
        .cookie(session::COOKIE)
        .map(|c| c.value().to_owned())
        .filter(|v| keys.session_valid(v, now));
    match cookie {
        Some(v) => Ok(Viewer {
            csrf: keys.csrf(&v),
            session: Some(v),
            set_cookie: None,
            secure,
            logged_in: keys.login_required(),
        }),
        None if !keys.login_required() => {
            let v = keys.new_session(now);
            Ok(Viewer {
                csrf: keys.csrf(&v),
                session: Some(v.clone()),
                set_cookie: Some(v),
                secure,
                logged_in: false,
            })
        }
        None if req.method() == Method::GET || req.method() == Method::HEAD => {
            Err(ConsoleError::NeedLogin {
                next: req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
            })
        }
        None => Err(ConsoleError::Unauthorized),
    }
}

impl FromRequest for Viewer {
    type Error = ConsoleError;
    type Future = Ready<Result<Viewer, ConsoleError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(viewer(req))
    }
}

/// What can go wrong on a console page; each renders as an HTML page.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A GET without a session: redirect to the login page.
    #[error("log in first")]
    NeedLogin {
        /// Where to go after the login.
        next: String,
    },
    /// Anything else without a session.
    #[error(
        "no console session: log in at /console/login, or send Authorization: Bearer <admin_token>"
    )]
    Unauthorized,
    /// A POST without this session's CSRF token.
    #[error(
        "this form is stale or was not sent by this console (missing or wrong CSRF token): reload the page and try again"
    )]
    Csrf,
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
    /// The console is not wired to the admin state (a bug).
    #[error("the console is not set up on this listener")]
    Unavailable,
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(m) => ConsoleError::NotFound(m),
            ApiError::BadRequest(m) => ConsoleError::BadRequest(m),
            ApiError::Conflict(m) => ConsoleError::Conflict(m),
            ApiError::Store(s) => ConsoleError::Store(s),
        }
    }
}

/// `/console/login`, remembering where to come back to.
pub fn login_location(next: &str) -> String {
    if next.is_empty() || next == "/console" {
        "/console/login".to_owned()
    } else {
        format!(
            "/console/login?{}",
            serde_urlencoded::to_string([("next", next)]).unwrap_or_default()
        )
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::NeedLogin { .. } => StatusCode::SEE_OTHER,
            ConsoleError::Unauthorized => StatusCode::UNAUTHORIZED,
            ConsoleError::Csrf => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::Store(_) | ConsoleError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ConsoleError::NeedLogin { next } = self {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, login_location(next)))
                .finish();
        }
        let status = self.status_code();
        HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(views::error_page(status, &self.to_string()).into_string())
    }
}
