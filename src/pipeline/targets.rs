//! `targets:`: where deliveries go, with their limits and retry policy.

use super::reader::{self, MapReader};
use crate::routes_file::diag::{Diagnostics, suggestion};
use crate::routes_file::yaml::{Node, Pos};
use crate::verify::Secret;
use std::collections::BTreeMap;
use std::time::Duration;

/// Requests allowed per period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// How many requests.
    pub count: u32,
    /// Per this period.
    pub per: Duration,
}

/// When and how often a failed delivery is tried again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Delay before the second attempt.
    pub initial: Duration,
    /// Longest delay between attempts (unless the target asks for more).
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            initial: Duration::from_secs(5),
            max: Duration::from_secs(3600),
        }
    }
}

/// Jira credentials.
#[derive(Debug, Clone)]
pub enum JiraAuth {
    /// `email` + `api_token`: HTTP Basic.
    Basic {
        /// Account e-mail.
        email: String,
        /// API token.
        api_token: Secret,
    },
    /// `token`: Bearer (personal access token).
    Bearer(Secret),
}

/// What kind of endpoint a target is.
#[derive(Debug, Clone)]
pub enum TargetKind {
    /// A Slack incoming webhook URL.
    SlackWebhook {
        /// The hooks.slack.com URL (a secret).
        webhook_url: Secret,
    },
    /// Slack's Web API chat.postMessage.
    SlackApi {
        /// Bot token.
        token: Secret,
        /// Channel id.
        channel: String,
        /// API base, `https://slack.com/api` by default.
        base_url: String,
    },
    /// A Jira Cloud site.
    Jira {
        /// `https://acme.atlassian.net`.
        base_url: String,
        /// Credentials.
        auth: JiraAuth,
    },
    /// The ClickUp API.
    ClickUp {
        /// Personal (`pk_...`) or OAuth token.
        token: Secret,
        /// API base including `/api/v2`.
        base_url: String,
    },
    /// Any HTTP endpoint.
    Http {
        /// The URL.
        url: String,
        /// Default method.
        method: String,
        /// Headers sent with every request (values may hold secrets).
        headers: Vec<(String, Secret)>,
    },
}

impl TargetKind {
    /// The `type:` as written.
    pub fn type_name(&self) -> &'static str {
        match self {
            TargetKind::SlackWebhook { .. } | TargetKind::SlackApi { .. } => "slack",
            TargetKind::Jira { .. } => "jira",
            TargetKind::ClickUp { .. } => "clickup",
            TargetKind::Http { .. } => "http",
        }
    }

    /// The URL every request of this target starts with. A Slack webhook
    /// URL is a secret: use it for its host only, never print it.
    fn base(&self) -> &str {
        match self {
            TargetKind::SlackWebhook { webhook_url } => webhook_url.expose(),
            TargetKind::SlackApi { base_url, .. }
            | TargetKind::Jira { base_url, .. }
            | TargetKind::ClickUp { base_url, .. } => base_url,
            TargetKind::Http { url, .. } => url,
        }
    }

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

/// Warns about targets that send to this machine. A production install that
/// sends to 127.0.0.1 delivers nothing and says nothing (the shipped demo
/// once did exactly that), so `check` and `serve` say it; a local sink or a
/// test server is the legitimate case, hence a warning, not an error.
pub fn warn_loopback(targets: &BTreeMap<String, Target>, d: &mut Diagnostics) {
    for t in targets.values() {
        if t.kind.is_loopback() {
            d.warning(
                t.pos,
                format!(
                    "target \"{}\" sends to this machine ({}): right for a local sink or test server, wrong in production; set its URL to the real service",
                    t.name,
                    t.kind.origin()
                ),
            );
        }
    }
}

/// A compiled target.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its name.
    pub name: String,
    /// Kind and connection details.
    pub kind: TargetKind,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Requests per period (per daemon instance).
    pub rate_limit: Option<RateLimit>,
    /// Requests in flight at most.
    pub concurrency: u32,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Where it is defined.
    pub pos: Pos,
}

const TYPES: &[&str] = &["slack", "jira", "clickup", "http"];

/// Compiles the `targets:` mapping.
pub fn compile(node: Option<&Node>, d: &mut Diagnostics) -> BTreeMap<String, Target> {
    let mut out = BTreeMap::new();
    let Some(node) = node else {
        return out;
    };
    for (name, key, value) in reader::entries(node, "targets", d) {
        if !reader::check_name(name, key.pos, "target name", d) {
            continue;
        }
        if let Some(t) = compile_one(name, value, d) {
            out.insert(name.to_owned(), t);
        }
    }
    out
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

/// A target URL: [`url`], and `https://` unless the host is loopback or the
/// target sets `allow_http: true` (event data leaves encrypted or not at all).
fn target_url(node: &Node, what: &str, allow_http: bool, d: &mut Diagnostics) -> Option<String> {
    let s = url(node, what, d)?;
    let parsed = reqwest::Url::parse(&s).ok()?;
    if parsed.scheme() == "http" && !allow_http && !is_loopback_url(&parsed) {
        // The host is named, never the path (a Slack webhook URL's path is
        // its secret).
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

fn secret(r: &mut MapReader<'_>, key: &'static str, d: &mut Diagnostics) -> Option<Secret> {
    let n = r.require(key, d)?;
    let s = reader::string(n, key, d)?;
    if s.is_empty() {
        d.error(n.pos, format!("{key} is empty"));
        return None;
    }
    Some(Secret::new(s))
}

fn rate_limit(node: &Node, d: &mut Diagnostics) -> Option<RateLimit> {
    let s = reader::string(node, "rate_limit", d)?;
    let parsed = s.split_once('/').and_then(|(n, unit)| {
        let count: u32 = n.trim().parse().ok().filter(|c| *c > 0)?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "min" | "m" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return None,
        };
        Some(RateLimit { count, per })
    });
    if parsed.is_none() {
        d.error(
            node.pos,
            format!("rate_limit \"{s}\" is not N/s or N/min (e.g. 1/s, 100/min)"),
        );
    }
    parsed
}

fn retry(node: &Node, d: &mut Diagnostics) -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    let Some(mut r) = MapReader::new(node, "retry", d) else {
        return policy;
    };
    if let Some(n) = r
        .take("attempts")
        .and_then(|n| reader::whole(n, "retry.attempts", 1, d))
    {
        policy.attempts = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(n) = r
        .take("initial")
        .and_then(|n| reader::number(n, "retry.initial", d))
    {
        policy.initial = Duration::from_secs_f64(n);
    }
    let max_node = r.take("max");
    if let Some(n) = max_node.and_then(|n| reader::number(n, "retry.max", d)) {
        policy.max = Duration::from_secs_f64(n);
    }
    if policy.max < policy.initial
        && let Some(n) = max_node
    {
        d.error(n.pos, "retry.max must not be smaller than retry.initial");
    }
    r.finish(d);
    policy
}

fn compile_one(name: &str, node: &Node, d: &mut Diagnostics) -> Option<Target> {
    let mut r = MapReader::new(node, &format!("target \"{name}\""), d)?;
    let type_node = r.require("type", d);
    let type_name = type_node.and_then(|n| reader::string(n, "type", d));
    let allow_http = r
        .take("allow_http")
        .and_then(|n| reader::boolean(n, "allow_http", d))
        .unwrap_or(false);
    let url = |n: &Node, what: &str, d: &mut Diagnostics| target_url(n, what, allow_http, d);
    let kind = match type_name.as_deref() {
        Some("slack") => {
            r.know(&["webhook_url", "token", "channel", "base_url"]);
            if r.key_pos("webhook_url").is_some() {
                let u = r.take("webhook_url").and_then(|n| url(n, "webhook_url", d));
                u.map(|u| TargetKind::SlackWebhook {
                    webhook_url: Secret::new(u),
                })
            } else if r.key_pos("token").is_some() {
                let token = secret(&mut r, "token", d);
                let channel = r
                    .require("channel", d)
                    .and_then(|n| reader::string(n, "channel", d));
                let base_url = match r.take("base_url") {
                    Some(n) => url(n, "base_url", d),
                    None => Some("https://slack.com/api".to_owned()),
                };
                match (token, channel, base_url) {
                    (Some(token), Some(channel), Some(base_url)) => Some(TargetKind::SlackApi {
                        token,
                        channel,
                        base_url,
                    }),
                    _ => None,
                }
            } else {
                if !r.misspelled("webhook_url") && !r.misspelled("token") {
                    d.error(
                        r.pos(),
                        format!("slack target \"{name}\" needs webhook_url, or token and channel"),
                    );
                }
                None
            }
        }
        Some("jira") => {
            r.know(&["base_url", "email", "api_token", "token"]);
            let base_url = r.require("base_url", d).and_then(|n| url(n, "base_url", d));
            let auth = if r.key_pos("token").is_some() {
                secret(&mut r, "token", d).map(JiraAuth::Bearer)
            } else {
                let email = r
                    .require("email", d)
                    .and_then(|n| reader::string(n, "email", d));
                let api_token = secret(&mut r, "api_token", d);
                match (email, api_token) {
                    (Some(email), Some(api_token)) => Some(JiraAuth::Basic { email, api_token }),
                    _ => None,
                }
            };
            match (base_url, auth) {
                (Some(base_url), Some(auth)) => Some(TargetKind::Jira { base_url, auth }),
                _ => None,
            }
        }
        Some("clickup") => {
            r.know(&["token", "base_url"]);
            let token = secret(&mut r, "token", d);
            let base_url = match r.take("base_url") {
                Some(n) => url(n, "base_url", d),
                None => Some("https://api.clickup.com/api/v2".to_owned()),
            };
            match (token, base_url) {
                (Some(token), Some(base_url)) => Some(TargetKind::ClickUp { token, base_url }),
                _ => None,
            }
        }
        Some("http") => {
            r.know(&["url", "method", "headers"]);
            let u = r.require("url", d).and_then(|n| url(n, "url", d));
            let method = match r.take("method") {
                Some(n) => method(n, d),
                None => Some("POST".to_owned()),
            };
            let headers = r
                .take("headers")
                .map(|n| {
                    reader::entries(n, "headers", d)
                        .into_iter()
                        .filter_map(|(k, _, v)| {
                            reader::string(v, "a header value", d)
                                .map(|v| (k.to_owned(), Secret::new(v)))
                        })
                        .collect()
                })
                .unwrap_or_default();
            match (u, method) {
                (Some(url), Some(method)) => Some(TargetKind::Http {
                    url,
                    method,
                    headers,
                }),
                _ => None,
            }
        }
        Some(other) => {
            if let Some(n) = type_node {
                let hint = suggestion(other, TYPES, "types");
                d.error(
                    n.pos,
                    format!("unknown target type \"{other}\"{hint} (slack, jira, clickup or http)"),
                );
            }
            None
        }
        None => None,
    };
    let timeout = r
        .take("timeout")
        .and_then(|n| reader::number(n, "timeout", d))
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(10));
    let explicit_rate = r.take("rate_limit").map(|n| rate_limit(n, d));
    let concurrency = r
        .take("concurrency")
        .and_then(|n| reader::whole(n, "concurrency", 1, d))
        .map(|c| u32::try_from(c).unwrap_or(u32::MAX))
        .unwrap_or(4);
    let retry = r.take("retry").map(|n| retry(n, d)).unwrap_or_default();
    r.finish(d);
    let kind = kind?;
    let rate_limit = match explicit_rate {
        Some(limit) => limit,
        None => match kind.type_name() {
            "slack" => Some(RateLimit {
                count: 1,
                per: Duration::from_secs(1),
            }),
            "clickup" => Some(RateLimit {
                count: 100,
                per: Duration::from_secs(60),
            }),
            _ => None,
        },
    };
    Some(Target {
        name: name.to_owned(),
        kind,
        timeout,
        rate_limit,
        concurrency,
        retry,
        pos: node.pos,
    })
}

/// An HTTP method name.
pub fn method(node: &Node, d: &mut Diagnostics) -> Option<String> {
    let m = reader::string(node, "method", d)?.to_ascii_uppercase();
    const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
    if METHODS.contains(&m.as_str()) {
        Some(m)
    } else {
        d.error(
            node.pos,
            format!("unknown method \"{m}\"; use GET, POST, PUT, PATCH or DELETE"),
        );
        None
    }
}
