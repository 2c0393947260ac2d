//! Pure route matching: event patterns, `match`, `any`, `task` conditions.

use crate::pipeline::{Condition, Op, Route};
use serde_json::Value;

/// Why a route did not match (the first condition that failed), for logs and
/// `simulate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// What failed, in words.
    pub reason: String,
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// Equality as users expect from YAML: JSON equality, or the same number
/// when either side is a number written as a string (ClickUp sends many
/// numbers as strings: priorities, dates, ids).
pub fn loose_eq(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a, b) {
        (Value::Number(_), _) | (_, Value::Number(_)) => match (as_number(a), as_number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
        _ => false,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether one selected node satisfies the operator.
fn node_holds(op: &Op, node: &Value) -> bool {
    match op {
        Op::Equals(v) => loose_eq(node, v),
        Op::NotEquals(v) => !loose_eq(node, v),
        Op::In(list) => list.iter().any(|v| loose_eq(node, v)),
        Op::Regex(re) => text(node).is_some_and(|t| re.is_match(&t)),
        Op::Exists(_) => true,
        Op::Contains(v) => match node {
            Value::String(s) => text(v).is_some_and(|t| s.contains(&t)),
            Value::Array(items) => items.iter().any(|i| loose_eq(i, v)),
            _ => false,
        },
        Op::Gt(x) => as_number(node).is_some_and(|n| n > *x),
        Op::Gte(x) => as_number(node).is_some_and(|n| n >= *x),
        Op::Lt(x) => as_number(node).is_some_and(|n| n < *x),
        Op::Lte(x) => as_number(node).is_some_and(|n| n <= *x),
    }
}

fn describe(op: &Op) -> String {
    match op {
        Op::Equals(v) => format!("equals {v}"),
        Op::NotEquals(v) => format!("not_equals {v}"),
        Op::In(l) => format!("in {}", Value::Array(l.clone())),
        Op::Regex(r) => format!("regex {}", r.as_str()),
        Op::Exists(b) => format!("exists: {b}"),
        Op::Contains(v) => format!("contains {v}"),
        Op::Gt(x) => format!("gt {x}"),
        Op::Gte(x) => format!("gte {x}"),
        Op::Lt(x) => format!("lt {x}"),
        Op::Lte(x) => format!("lte {x}"),
    }
}

/// Whether a condition holds on `doc`. A path that selects several nodes holds
/// when any node does; on a path that selects nothing only `not_equals` and
/// `exists: false` hold.
pub fn holds(c: &Condition, doc: &Value) -> Result<(), Mismatch> {
    let nodes = c.path.select(doc);
    let ok = match (&c.op, nodes.is_empty()) {
        (Op::Exists(want), empty) => *want != empty,
        (Op::NotEquals(_), true) => true,
        (_, true) => false,
        (op, false) => nodes.iter().any(|n| node_holds(op, n)),
    };
    if ok {
        return Ok(());
    }
    let found = match nodes.as_slice() {
        [] => "nothing".to_owned(),
        [one] => one.to_string(),
        many => Value::Array(many.iter().map(|v| (*v).clone()).collect()).to_string(),
    };
    Err(Mismatch {
        reason: format!(
            "{} {} does not hold (line {}): found {}",
            c.path.as_str(),
            describe(&c.op),
            c.pos.line,
            truncate(&found, 200)
        ),
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    }
}

fn all(conds: &[Condition], doc: &Value) -> Result<(), Mismatch> {
    conds.iter().try_for_each(|c| holds(c, doc))
}

/// Checks everything of a route's `when` that does not need the enriched
/// task: the source, event name patterns, `match` and `any`.
pub fn matches_event(
    route: &Route,
    source: &str,
    event_type: &str,
    payload: &Value,
) -> Result<(), Mismatch> {
    if route.source != source {
        return Err(Mismatch {
            reason: format!("source is {source}, the route takes {}", route.source),
        });
    }
    if !route.events.is_empty() && !route.events.iter().any(|p| p.matches(event_type)) {
        return Err(Mismatch {
            reason: format!("event {event_type} does not match when.event"),
        });
    }
    all(&route.matches, payload)?;
    if !route.any.is_empty() {
        let mut first = None;
        for group in &route.any {
            match all(group, payload) {
                Ok(()) => return Ok(()),
                Err(m) => {
                    first.get_or_insert(m);
                }
            }
        }
        let m = first.map(|m| m.reason).unwrap_or_default();
        return Err(Mismatch {
            reason: format!("no entry of when.any holds; the first fails: {m}"),
        });
    }
    Ok(())
}

/// Checks `when.task` against the enriched task.
pub fn matches_task(route: &Route, task: &Value) -> Result<(), Mismatch> {
    all(&route.task, task)
}

/// Evaluates a route's `extract`: one node gives its value, several an array,
/// none leaves the name out (a template that uses it then fails, unless it
/// goes through `default`).
pub fn extract(route: &Route, payload: &Value) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for (name, path) in &route.extract {
        let nodes = path.select(payload);
        match nodes.len() {
            0 => {}
            1 => {
                out.insert(name.clone(), nodes[0].clone());
            }
            _ => {
                out.insert(
                    name.clone(),
                    Value::Array(nodes.into_iter().cloned().collect()),
                );
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
