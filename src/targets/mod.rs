//! Target types. Each one is a module that owns everything about it: the
//! keys of its definition in `targets:`, the compile of its send steps (with
//! their diagnostics), rendering them, the requests they make, the quirks of
//! its API when sending and the details of its answers. The module
//! implements [`TargetType`]; [`target_types!`] lists them, and is the one
//! line to add for a new type.
//!
//! Layering: `pipeline` compiles through this module and `deliver` sends
//! through it; this module uses neither (only `routes_file`, `transform` and
//! `verify`), so the arrows stay one-way.

pub mod clickup;
pub mod http;
pub mod jira;
pub mod request;
pub mod slack;
pub mod step;

pub use request::{PlannedRequest, Reply, RequestError, SendError};
pub use step::{Body, BodyNode, Render, StepBuilder, link_names};

use crate::routes_file::diag::Diagnostics;
use crate::routes_file::reader::{self, MapReader};
use crate::routes_file::yaml::Node;
use crate::transform::render::RenderError;
use crate::verify::Secret;
use serde_json::Value;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Requests allowed per period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// How many requests.
    pub count: u32,
    /// Per this period.
    pub per: Duration,
}

impl RateLimit {
    /// `count` requests per `secs` seconds.
    pub const fn new(count: u32, secs: u64) -> Self {
        RateLimit {
            count,
            per: Duration::from_secs(secs),
        }
    }
}

/// Why a step cannot be sent: the delivery is dead with this reason.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A template did not render.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A request could not be built.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Jira has no transition to the status asked for.
    #[error(transparent)]
    Transition(#[from] jira::NoTransition),
    /// Nothing to send (a step that renders to no request).
    #[error("the step has nothing to send")]
    Nothing,
}

/// Why sending a step ended without an answer to classify.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// It can never be sent (dead).
    #[error(transparent)]
    Step(#[from] StepError),
    /// A request got no answer, or could not be built.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// The requests of a step, planned without sending anything: what
/// `simulate` and `test` show.
#[derive(Debug, Clone)]
pub struct Plan {
    /// In order.
    pub requests: Vec<PlannedRequest>,
    /// What happens after them that depends on an answer.
    pub note: Option<String>,
}

impl From<Vec<PlannedRequest>> for Plan {
    fn from(requests: Vec<PlannedRequest>) -> Self {
        Plan {
            requests,
            note: None,
        }
    }
}

/// The last answer of a step's requests (the first that failed, or the
/// last of all), read for the retry decision and the attempt record.
#[derive(Debug)]
pub struct Exchange {
    /// The answer.
    pub reply: Reply,
    /// A 2xx answer that says it failed (Slack's Web API `{"ok": false}`).
    pub refusal: Option<String>,
    /// The target's own words about a failed answer (Jira `errorMessages`,
    /// ClickUp `err`).
    pub detail: Option<String>,
    /// What the step created (issue key, task id), for `remember`.
    pub created: Option<String>,
}

impl Exchange {
    /// Whether the step failed here.
    pub fn failed(&self) -> bool {
        !self.reply.ok() || self.refusal.is_some()
    }
}

/// One attempt of one delivery, as a target type sees it.
pub struct Attempt<'a> {
    /// The workers' HTTP client.
    pub http: &'a reqwest::Client,
    /// The delivery id: the Idempotency-Key, and Jira's label.
    pub key: &'a str,
    /// Attempts made before this one.
    pub attempts: u32,
    /// Per request.
    pub timeout: Duration,
}

impl Attempt<'_> {
    /// Sends one request with the delivery's Idempotency-Key.
    pub async fn send(&self, req: &PlannedRequest) -> Result<Reply, SendError> {
        request::send(
            self.http,
            req,
            Some(self.key),
            self.timeout,
            request::READ_BYTES,
        )
        .await
    }
}

/// What a target type's compiler knows of the definition besides its keys.
#[derive(Debug, Clone, Copy)]
pub struct Definition<'a> {
    /// The target's name, for messages.
    pub name: &'a str,
    /// `allow_http: true` on the target.
    pub allow_http: bool,
}

impl Definition<'_> {
    /// [`url`], and `https://` unless the host is loopback or the target
    /// sets `allow_http: true` (event data leaves encrypted or not at all).
    pub fn url(&self, node: &Node, what: &str, d: &mut Diagnostics) -> Option<String> {
        let s = url(node, what, d)?;
        let parsed = reqwest::Url::parse(&s).ok()?;
        if parsed.scheme() == "http" && !self.allow_http && !is_loopback_url(&parsed) {
            // The host is named, never the path (a Slack webhook URL's path
            // is its secret).
            d.error(
                node.pos,
                format!(
                    "{what} is http:// to {}, so event data would cross the network unencrypted; \
                     use https://, or set allow_http: true on this target if that network is trusted",
                    parsed.host_str().unwrap_or_default()
                ),
            );
            return None;
        }
        Some(s)
    }

    /// An optional URL key with a default.
    pub fn url_or(
        &self,
        r: &mut MapReader<'_>,
        key: &'static str,
        default: &str,
        d: &mut Diagnostics,
    ) -> Option<String> {
        match r.take(key) {
            Some(n) => self.url(n, key, d),
            None => Some(default.to_owned()),
        }
    }
}

/// Checks that `s` is an absolute http(s) URL and returns it without a trailing `/`.
pub fn url(node: &Node, what: &str, d: &mut Diagnostics) -> Option<String> {
    let s = reader::string(node, what, d)?;
    match reqwest::Url::parse(&s) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
            Some(s.trim_end_matches('/').to_owned())
        }
        // The value may be a secret (Slack webhook URLs are): never echo it.
        _ => {
            d.error(
                node.pos,
                format!("{what} must be an absolute http:// or https:// URL"),
            );
            None
        }
    }
}

/// Whether a URL's host is this machine (`localhost`, 127.0.0.0/8, `::1`),
/// where plain http never crosses a network.
pub fn is_loopback_url(u: &reqwest::Url) -> bool {
    let Some(host) = u.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let h = host.to_ascii_lowercase();
            h == "localhost" || h.ends_with(".localhost")
        }
    }
}

/// A required, non-empty secret key.
pub fn secret(r: &mut MapReader<'_>, key: &'static str, d: &mut Diagnostics) -> Option<Secret> {
    let n = r.require(key, d)?;
    let s = reader::string(n, key, d)?;
    if s.is_empty() {
        d.error(n.pos, format!("{key} is empty"));
        return None;
    }
    Some(Secret::new(s))
}

/// What one target type is. Implemented by a unit type in its module.
pub trait TargetType: Sized {
    /// Its `type:` in routes.yaml.
    const NAME: &'static str;
    /// Its rate limit unless the target sets `rate_limit`.
    const RATE_LIMIT: Option<RateLimit> = None;
    /// A target's connection details.
    type Endpoint: Debug + Clone + Send + Sync;
    /// A compiled send step.
    type Action: Debug + Clone + Send + Sync;

    /// Compiles the target's own keys (the common ones, `timeout`,
    /// `rate_limit`, `concurrency`, `retry`, `allow_http`, are read by the
    /// caller).
    fn endpoint(
        r: &mut MapReader<'_>,
        t: Definition<'_>,
        d: &mut Diagnostics,
    ) -> Option<Self::Endpoint>;

    /// The URL every request starts with (maybe a secret: for its host only).
    fn base(e: &Self::Endpoint) -> &str;

    /// Headers configured on the target, masked when shown.
    fn secret_headers(_e: &Self::Endpoint) -> Vec<String> {
        Vec::new()
    }

    /// Whether the URL's path is a secret (a Slack webhook's).
    fn secret_path(_e: &Self::Endpoint) -> bool {
        false
    }

    /// Compiles the keys of a send step (`target` and `remember` are read
    /// by the caller).
    fn action(
        r: &mut MapReader<'_>,
        b: &mut StepBuilder<'_>,
        d: &mut Diagnostics,
    ) -> Option<Self::Action>;

    /// Renders a step and plans its requests. Pure: `simulate`, `test` and
    /// the delivery worker all come through here.
    fn plan(
        e: &Self::Endpoint,
        a: &Self::Action,
        t: &Render<'_>,
        delivery_id: &str,
    ) -> Result<Plan, StepError>;

    /// Sends a step. By default: its planned requests in order, stopping at
    /// the first that fails.
    fn send(
        e: &Self::Endpoint,
        a: &Self::Action,
        t: &Render<'_>,
        at: &Attempt<'_>,
    ) -> impl Future<Output = Result<Exchange, Failure>> + Send {
        async move {
            let plan = Self::plan(e, a, t, at.key)?;
            in_order::<Self>(e, a, &plan.requests, at).await
        }
    }

    /// A 2xx answer that says it failed.
    fn refusal(_e: &Self::Endpoint, _reply: &Reply) -> Option<String> {
        None
    }

    /// The target's own words about a failed answer.
    fn detail(_body: &[u8]) -> Option<String> {
        None
    }

    /// What a step created, from its last answer.
    fn created(_a: &Self::Action, _answer: &Value) -> Option<String> {
        None
    }
}

/// An answer as [`Exchange`], with the target type's reading of it.
pub fn exchange<T: TargetType>(e: &T::Endpoint, reply: Reply) -> Exchange {
    let refusal = if reply.ok() {
        T::refusal(e, &reply)
    } else {
        None
    };
    let detail = if reply.ok() {
        None
    } else {
        T::detail(&reply.body)
    };
    Exchange {
        reply,
        refusal,
        detail,
        created: None,
    }
}

/// Sends `requests` in order; the first failed answer ends the step.
pub async fn in_order<T: TargetType>(
    e: &T::Endpoint,
    a: &T::Action,
    requests: &[PlannedRequest],
    at: &Attempt<'_>,
) -> Result<Exchange, Failure> {
    let mut last = None;
    for req in requests {
        let x = exchange::<T>(e, at.send(req).await?);
        if x.failed() {
            return Ok(x);
        }
        last = Some(x);
    }
    let mut x = last.ok_or(StepError::Nothing)?;
    x.created = T::created(a, &x.reply.json());
    Ok(x)
}

/// An id in an answer, as text.
pub fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A compiled step together with the endpoint of its target, so that a step
/// can only ever be sent to a target of its own type.
#[derive(Debug)]
pub struct Bound<T: TargetType> {
    /// The target's endpoint (shared with [`Endpoint`]).
    pub endpoint: Arc<T::Endpoint>,
    /// The step.
    pub action: T::Action,
}

impl<T: TargetType> Clone for Bound<T> {
    fn clone(&self) -> Self {
        Bound {
            endpoint: self.endpoint.clone(),
            action: self.action.clone(),
        }
    }
}

/// Generates [`Endpoint`] and [`Action`], one arm per target type, and
/// their dispatch to the type's module.
macro_rules! target_types {
    ($($variant:ident => $module:ident :: $ty:ident),+ $(,)?) => {
        /// A compiled target's connection details, by type.
        #[derive(Debug, Clone)]
        pub enum Endpoint {
            $(
                #[doc = concat!("`type: ", stringify!($module), "`.")]
                $variant(Arc<<$module::$ty as TargetType>::Endpoint>),
            )+
        }

        /// A compiled send step bound to its target, by type.
        #[derive(Debug, Clone)]
        pub enum Action {
            $(
                #[doc = concat!("A step of a ", stringify!($module), " target.")]
                $variant(Bound<$module::$ty>),
            )+
        }

        /// Every `type:`, in the order of the list.
        pub const TYPES: &[&str] = &[$(<$module::$ty as TargetType>::NAME),+];

        impl Endpoint {
            /// Compiles a target of type `type_name` (one of [`TYPES`]).
            pub fn compile(
                type_name: &str,
                r: &mut MapReader<'_>,
                t: Definition<'_>,
                d: &mut Diagnostics,
            ) -> Option<Endpoint> {
                $(
                    if type_name == <$module::$ty as TargetType>::NAME {
                        return <$module::$ty as TargetType>::endpoint(r, t, d)
                            .map(|e| Endpoint::$variant(Arc::new(e)));
                    }
                )+
                None
            }

            /// The `type:` as written.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Endpoint::$variant(_) => <$module::$ty as TargetType>::NAME,)+
                }
            }

            /// The type's rate limit unless the target sets one.
            pub fn default_rate_limit(&self) -> Option<RateLimit> {
                match self {
                    $(Endpoint::$variant(_) => <$module::$ty as TargetType>::RATE_LIMIT,)+
                }
            }

            /// The URL every request of this target starts with.
            fn base(&self) -> &str {
                match self {
                    $(Endpoint::$variant(e) => <$module::$ty as TargetType>::base(e),)+
                }
            }

            /// Headers configured on the target (lower case), masked when shown.
            pub fn secret_headers(&self) -> Vec<String> {
                match self {
                    $(Endpoint::$variant(e) => <$module::$ty as TargetType>::secret_headers(e),)+
                }
            }

            /// Whether the URL's path is a secret.
            pub fn secret_path(&self) -> bool {
                match self {
                    $(Endpoint::$variant(e) => <$module::$ty as TargetType>::secret_path(e),)+
                }
            }

            /// Compiles a send step for this target (`type_name` is the
            /// target's declared type: a target that did not compile still
            /// gets its steps checked, and then `endpoint` is `None`).
            pub fn compile_step(
                type_name: &str,
                endpoint: Option<&Endpoint>,
                r: &mut MapReader<'_>,
                b: &mut StepBuilder<'_>,
                d: &mut Diagnostics,
            ) -> Option<Action> {
                $(
                    if type_name == <$module::$ty as TargetType>::NAME {
                        let action = <$module::$ty as TargetType>::action(r, b, d)?;
                        return match endpoint {
                            Some(Endpoint::$variant(e)) => Some(Action::$variant(Bound {
                                endpoint: e.clone(),
                                action,
                            })),
                            _ => None,
                        };
                    }
                )+
                None
            }
        }

        impl Action {
            /// Renders the step and plans its requests (pure).
            pub fn plan(&self, t: &Render<'_>, delivery_id: &str) -> Result<Plan, StepError> {
                match self {
                    $(Action::$variant(b) => {
                        <$module::$ty as TargetType>::plan(&b.endpoint, &b.action, t, delivery_id)
                    })+
                }
            }

            /// Renders and sends the step.
            pub async fn send(&self, t: &Render<'_>, at: &Attempt<'_>) -> Result<Exchange, Failure> {
                match self {
                    $(Action::$variant(b) => {
                        <$module::$ty as TargetType>::send(&b.endpoint, &b.action, t, at).await
                    })+
                }
            }
        }
    };
}

target_types! {
    Slack => slack::Slack,
    Http => http::Http,
    Jira => jira::Jira,
    ClickUp => clickup::ClickUp,
}

impl Endpoint {
    /// Whether requests go to this machine (127.0.0.0/8, ::1, localhost).
    pub fn is_loopback(&self) -> bool {
        let Ok(u) = reqwest::Url::parse(self.base()) else {
            return false;
        };
        let host = u.host_str().unwrap_or_default();
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Scheme, host and port, for messages (never the path: a Slack webhook
    /// URL's path is its secret).
    pub fn origin(&self) -> String {
        reqwest::Url::parse(self.base())
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default()
    }
}
