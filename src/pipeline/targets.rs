//! `targets:`: where deliveries go, with their limits and retry policy. The
//! keys of each type are compiled by its module in `crate::targets`.

use super::reader::{self, MapReader};
use crate::routes_file::diag::{Diagnostics, suggestion};
use crate::routes_file::yaml::{Node, Pos};
pub use crate::targets::jira::JiraAuth;
use crate::targets::{Definition, TYPES};
pub use crate::targets::{Endpoint, RateLimit};
use std::collections::BTreeMap;
use std::time::Duration;

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
    /// Its type and connection details.
    pub kind: Endpoint,
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
    let kind = match (type_name.as_deref(), type_node) {
        (Some(t), _) if TYPES.contains(&t) => {
            Endpoint::compile(t, &mut r, Definition { name, allow_http }, d)
        }
        (Some(other), Some(n)) => {
            let hint = suggestion(other, TYPES, "types");
            d.error(
                n.pos,
                format!("unknown target type \"{other}\"{hint} (slack, jira, clickup or http)"),
            );
            None
        }
        _ => None,
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
    Some(Target {
        name: name.to_owned(),
        rate_limit: explicit_rate.unwrap_or_else(|| kind.default_rate_limit()),
        kind,
        timeout,
        concurrency,
        retry,
        pos: node.pos,
    })
}
