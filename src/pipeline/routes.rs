//! `routes:`: when an event fires a route, what it extracts and what it sends.

use super::reader::{self, MapReader};
use super::sources::path;
use super::targets::Target;
use crate::routes_file::diag::{Diagnostics, suggestion};
use crate::routes_file::yaml::{Node, Pos, Value};
pub use crate::targets::{Action, Body, BodyNode, link_names};
use crate::targets::{Endpoint, StepBuilder};
use crate::transform::jsonpath::JsonPath;
use crate::transform::render::{Kind, TemplateId, Templates};
use std::collections::BTreeMap;
use std::path::Path;

/// What the compiler knows about the names defined elsewhere in the file, even
/// when their own definitions had errors (so one mistake is reported once).
pub struct Declared {
    /// Source name -> `verify:` kind.
    pub sources: BTreeMap<String, String>,
    /// Target name -> `type:`.
    pub targets: BTreeMap<String, String>,
}

/// An event-name pattern: exact, or a glob with `*` and `?`.
#[derive(Debug, Clone)]
pub enum EventPattern {
    /// Exact name.
    Exact(String),
    /// Glob, compiled to an anchored regex.
    Glob(String, regex::Regex),
}

impl EventPattern {
    /// Whether `event` matches.
    pub fn matches(&self, event: &str) -> bool {
        match self {
            EventPattern::Exact(e) => e == event,
            EventPattern::Glob(_, re) => re.is_match(event),
        }
    }
}

/// A comparison applied to the nodes a JSONPath selects.
#[derive(Debug, Clone)]
pub enum Op {
    /// Equal JSON values (a bare value in `match`).
    Equals(serde_json::Value),
    /// Not equal; holds on a path that selects nothing.
    NotEquals(serde_json::Value),
    /// Equal to one of these.
    In(Vec<serde_json::Value>),
    /// A string that the regex finds a match in.
    Regex(regex::Regex),
    /// The path selects something (true) or nothing (false).
    Exists(bool),
    /// Substring of a string, or member of an array.
    Contains(serde_json::Value),
    /// Greater than.
    Gt(f64),
    /// Greater than or equal.
    Gte(f64),
    /// Less than.
    Lt(f64),
    /// Less than or equal.
    Lte(f64),
}

/// One condition: a path and an operator.
#[derive(Debug, Clone)]
pub struct Condition {
    /// The JSONPath.
    pub path: JsonPath,
    /// The operator.
    pub op: Op,
    /// Where it is written.
    pub pos: Pos,
}

/// One `send` step.
#[derive(Debug, Clone)]
pub struct SendStep {
    /// Target name.
    pub target: String,
    /// What to do, bound to its target.
    pub action: Action,
    /// Store what the target created under this link name.
    pub remember: Option<String>,
    /// Whether a template of the step mentions `links` (only then are the
    /// task's links read from the store for each attempt).
    pub uses_links: bool,
    /// The `links.NAME` names its templates read (`*` when one reads
    /// `links` otherwise): its delivery waits for those being remembered.
    pub reads_links: Vec<String>,
    /// Where it is written.
    pub pos: Pos,
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique name.
    pub name: String,
    /// Source name.
    pub source: String,
    /// Event patterns; empty means every event.
    pub events: Vec<EventPattern>,
    /// `when.match`: all must hold.
    pub matches: Vec<Condition>,
    /// `when.any`: one of these groups must hold (when not empty).
    pub any: Vec<Vec<Condition>>,
    /// `when.task`: conditions on the enriched task.
    pub task: Vec<Condition>,
    /// Whether the ClickUp task is fetched before rendering.
    pub enrich_task: bool,
    /// The clickup target used to fetch it.
    pub enrich_via: Option<String>,
    /// Extracted values by name.
    pub extract: Vec<(String, JsonPath)>,
    /// Send steps, in order.
    pub send: Vec<SendStep>,
    /// What orders its deliveries with others to the same target.
    pub order_by: OrderBy,
    /// Where it is written.
    pub pos: Pos,
}

/// A route's `order_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderBy {
    /// The ClickUp task the event is about (the default).
    Task,
    /// A template's result (an empty result: not ordered).
    Template(TemplateId),
    /// `order_by: none`: not ordered.
    Off,
}

/// Everything a route compiler needs besides the node.
pub struct Ctx<'a> {
    /// Declared names.
    pub declared: &'a Declared,
    /// The targets that compiled (a step is bound to its target's endpoint).
    pub targets: &'a BTreeMap<String, Target>,
    /// Template registry being filled.
    pub templates: &'a mut Templates,
    /// The templates folder.
    pub templates_dir: &'a Path,
}

/// Compiles the `routes:` list.
pub fn compile(node: Option<&Node>, ctx: &mut Ctx<'_>, d: &mut Diagnostics) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    let Some(node) = node else {
        return out;
    };
    let items = match &node.value {
        Value::Seq(items) => items,
        Value::Null => return out,
        other => {
            d.error(
                node.pos,
                format!("routes must be a list, found {}", other.kind()),
            );
            return out;
        }
    };
    let mut seen: BTreeMap<String, Pos> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(route) = compile_one(i, item, ctx, d) {
            if let Some(first) = seen.get(&route.name) {
                d.error(
                    route.pos,
                    format!(
                        "route name \"{}\" is already used at line {}; names must be unique",
                        route.name, first.line
                    ),
                );
                continue;
            }
            seen.insert(route.name.clone(), route.pos);
            out.push(route);
        }
    }
    out
}

fn compile_one(index: usize, node: &Node, ctx: &mut Ctx<'_>, d: &mut Diagnostics) -> Option<Route> {
    let mut r = MapReader::new(node, &format!("route #{}", index + 1), d)?;
    let name_node = r.require("name", d);
    let name = name_node.and_then(|n| reader::string(n, "route name", d));
    if let (Some(n), Some(node)) = (&name, name_node) {
        reader::check_name(n, node.pos, "route name", d);
    }
    let label = name.clone().unwrap_or_else(|| format!("#{}", index + 1));
    let what = format!("route \"{label}\"");
    r.set_what(what.clone());
    let source_node = r.require("source", d);
    let source = source_node.and_then(|n| reader::string(n, "source", d).map(|s| (s, n.pos)));
    let source_kind = source_kind(source.as_ref(), ctx.declared, d);
    let When {
        events,
        matches,
        any,
        task,
    } = when(&mut r, &what, source_kind.as_deref(), d);
    let (enrich_task, enrich_via) = enrichment(&mut r, &what, !task.is_empty(), ctx.declared, d);
    let extract = extract(&mut r, d);
    let order_by = order_by(&mut r, &label, &what, ctx, d);
    let send = send_steps(&mut r, &label, &what, ctx, d);
    r.finish(d);
    if source_kind.as_deref() == Some("clickup") {
        warn_clickup_loop(&what, &send, ctx.declared, d);
    }
    Some(Route {
        name: name?,
        source: source?.0,
        events,
        matches,
        any,
        task,
        enrich_task,
        enrich_via,
        extract,
        send,
        order_by,
        pos: node.pos,
    })
}

/// The `verify:` kind of the route's source, or an error naming it.
fn source_kind(
    source: Option<&(String, Pos)>,
    declared: &Declared,
    d: &mut Diagnostics,
) -> Option<String> {
    match source {
        Some((s, pos)) => match declared.sources.get(s) {
            Some(kind) => Some(kind.clone()),
            None => {
                let known: Vec<&str> = declared.sources.keys().map(String::as_str).collect();
                d.error(
                    *pos,
                    format!("unknown source \"{s}\"{}", suggestion(s, &known, "sources")),
                );
                None
            }
        },
        None => None,
    }
}

/// A route's `when`.
struct When {
    events: Vec<EventPattern>,
    matches: Vec<Condition>,
    any: Vec<Vec<Condition>>,
    task: Vec<Condition>,
}

fn when(r: &mut MapReader<'_>, what: &str, source_kind: Option<&str>, d: &mut Diagnostics) -> When {
    let mut events = Vec::new();
    let mut matches = Vec::new();
    let mut any = Vec::new();
    let mut task = Vec::new();
    if let Some(when) = r.take("when")
        && let Some(mut w) = MapReader::new(when, &format!("when of {what}"), d)
    {
        if let Some(e) = w.take("event") {
            for (pat, pos) in reader::string_or_list(e, "event", d) {
                let pattern = event_pattern(&pat, pos, d);
                if source_kind == Some("clickup")
                    && let Some(p) = &pattern
                {
                    warn_unknown_clickup_event(p, pos, d);
                }
                events.push(pattern);
            }
            events.retain(Option::is_some);
        }
        if let Some(m) = w.take("match") {
            matches = conditions(m, "match", d);
        }
        if let Some(a) = w.take("any") {
            match &a.value {
                Value::Seq(groups) => {
                    any = groups
                        .iter()
                        .map(|g| conditions(g, "an entry of any", d))
                        .collect();
                }
                other => d.error(
                    a.pos,
                    format!("any must be a list of match maps, found {}", other.kind()),
                ),
            }
        }
        if let Some(t) = w.take("task") {
            task = conditions(t, "task", d);
        }
        w.finish(d);
    }
    When {
        events: events.into_iter().flatten().collect(),
        matches,
        any,
        task,
    }
}

/// `enrich` and `enrich_via`: whether the task is fetched, and through which
/// clickup target.
fn enrichment(
    r: &mut MapReader<'_>,
    what: &str,
    task_conditions: bool,
    declared: &Declared,
    d: &mut Diagnostics,
) -> (bool, Option<String>) {
    let mut enrich_task = task_conditions;
    if let Some(e) = r.take("enrich") {
        for (what_enrich, pos) in reader::string_or_list(e, "enrich", d) {
            if what_enrich == "task" {
                enrich_task = true;
            } else {
                d.error(
                    pos,
                    format!("unknown enrichment \"{what_enrich}\"; the only one is \"task\""),
                );
            }
        }
    }
    let enrich_via_node = r.take("enrich_via");
    let mut enrich_via = None;
    if let Some(n) = enrich_via_node
        && let Some(t) = reader::string(n, "enrich_via", d)
    {
        match declared.targets.get(&t).map(String::as_str) {
            Some("clickup") => enrich_via = Some(t),
            Some(other) => d.error(
                n.pos,
                format!("enrich_via \"{t}\" is a {other} target; it must name a clickup target"),
            ),
            None => {
                let known = clickup_targets(declared);
                d.error(
                    n.pos,
                    format!(
                        "unknown target \"{t}\"{}",
                        suggestion(&t, &known, "clickup targets")
                    ),
                );
            }
        }
    }
    if enrich_task && enrich_via.is_none() && enrich_via_node.is_none() {
        let clickups = clickup_targets(declared);
        match clickups.as_slice() {
            [one] => enrich_via = Some((*one).to_owned()),
            [] => d.error(r.pos(), format!("{what} enriches the task but no clickup target is defined to fetch it")),
            _ => d.error(
                r.pos(),
                format!("{what} enriches the task but there are several clickup targets; name one with enrich_via ({})", clickups.join(", ")),
            ),
        }
    }
    (enrich_task, enrich_via)
}

fn extract(r: &mut MapReader<'_>, d: &mut Diagnostics) -> Vec<(String, JsonPath)> {
    let mut extract = Vec::new();
    if let Some(x) = r.take("extract") {
        for (k, key, v) in reader::entries(x, "extract", d) {
            if !is_identifier(k) {
                d.error(
                    key.pos,
                    format!("extract name \"{k}\" must be an identifier (letters, digits, _)"),
                );
                continue;
            }
            if ["event", "task", "links", "meta"].contains(&k) {
                d.error(
                    key.pos,
                    format!("extract name \"{k}\" is reserved for the template context"),
                );
                continue;
            }
            if let Some(p) = path(v, d) {
                extract.push((k.to_owned(), p));
            }
        }
    }
    extract
}

fn order_by(
    r: &mut MapReader<'_>,
    label: &str,
    what: &str,
    ctx: &mut Ctx<'_>,
    d: &mut Diagnostics,
) -> OrderBy {
    match r.take("order_by") {
        None => OrderBy::Task,
        Some(n) => match reader::string(n, "order_by", d) {
            None => OrderBy::Task,
            Some(t) if t == "none" => OrderBy::Off,
            Some(t) => {
                let name = format!("{label}.order_by@{}:{}", n.pos.line, n.pos.col);
                match ctx.templates.add(&name, &t, Kind::Plain) {
                    Ok(id) => OrderBy::Template(id),
                    Err(e) => {
                        d.error(n.pos, format!("order_by of {what}: {e}; write a template such as \"{{{{event.customer}}}}\", or none"));
                        OrderBy::Task
                    }
                }
            }
        },
    }
}

fn send_steps(
    r: &mut MapReader<'_>,
    label: &str,
    what: &str,
    ctx: &mut Ctx<'_>,
    d: &mut Diagnostics,
) -> Vec<SendStep> {
    let mut send = Vec::new();
    if let Some(s) = r.require("send", d) {
        match &s.value {
            Value::Seq(steps) if !steps.is_empty() => {
                for (i, step) in steps.iter().enumerate() {
                    if let Some(st) = compile_step(label, i, step, ctx, d) {
                        send.push(st);
                    }
                }
            }
            _ => d.error(
                s.pos,
                format!("send of {what} must be a non-empty list of steps"),
            ),
        }
    }
    send
}

/// A clickup source that sends to a clickup target can hear its own change.
fn warn_clickup_loop(what: &str, send: &[SendStep], declared: &Declared, d: &mut Diagnostics) {
    for step in send {
        if declared.targets.get(&step.target).map(String::as_str) == Some("clickup") {
            d.warning(
                step.pos,
                format!(
                    "{what} sends from a clickup source to clickup target \"{}\": the change comes back as a webhook and can loop; narrow `when` so the echo does not match",
                    step.target
                ),
            );
        }
    }
}

fn clickup_targets(declared: &Declared) -> Vec<&str> {
    declared
        .targets
        .iter()
        .filter(|(_, t)| t.as_str() == "clickup")
        .map(|(n, _)| n.as_str())
        .collect()
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Every event ClickUp's webhooks send (its documented list is fixed).
pub const CLICKUP_EVENTS: &[&str] = &[
    "taskCreated",
    "taskUpdated",
    "taskDeleted",
    "taskPriorityUpdated",
    "taskStatusUpdated",
    "taskAssigneeUpdated",
    "taskDueDateUpdated",
    "taskTagUpdated",
    "taskMoved",
    "taskCommentPosted",
    "taskCommentUpdated",
    "taskTimeEstimateUpdated",
    "taskTimeTrackedUpdated",
    "listCreated",
    "listUpdated",
    "listDeleted",
    "folderCreated",
    "folderUpdated",
    "folderDeleted",
    "spaceCreated",
    "spaceUpdated",
    "spaceDeleted",
    "goalCreated",
    "goalUpdated",
    "goalDeleted",
    "keyResultCreated",
    "keyResultUpdated",
    "keyResultDeleted",
];

/// A route of a clickup source waiting for an event ClickUp never sends
/// would silently never fire: say so, with the nearest real event. A
/// warning, not an error: ClickUp may add events before we do.
fn warn_unknown_clickup_event(p: &EventPattern, pos: Pos, d: &mut Diagnostics) {
    if CLICKUP_EVENTS.iter().any(|e| p.matches(e)) {
        return;
    }
    let name = match p {
        EventPattern::Exact(e) | EventPattern::Glob(e, _) => e,
    };
    let hint = suggestion(name, CLICKUP_EVENTS, "events");
    d.warning(
        pos,
        format!("ClickUp never sends the event \"{name}\", so this route would not fire{hint}"),
    );
}

fn event_pattern(pat: &str, pos: Pos, d: &mut Diagnostics) -> Option<EventPattern> {
    if !pat.contains(['*', '?']) {
        return Some(EventPattern::Exact(pat.to_owned()));
    }
    let mut re = String::from("^");
    for c in pat.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    match regex::Regex::new(&re) {
        Ok(r) => Some(EventPattern::Glob(pat.to_owned(), r)),
        Err(e) => {
            d.error(pos, format!("bad event glob \"{pat}\": {e}"));
            None
        }
    }
}

const OPERATORS: &[&str] = &[
    "equals",
    "not_equals",
    "in",
    "regex",
    "exists",
    "contains",
    "gt",
    "gte",
    "lt",
    "lte",
];

/// Compiles a match map: JSONPath -> value or operator map.
fn conditions(node: &Node, what: &str, d: &mut Diagnostics) -> Vec<Condition> {
    let mut out = Vec::new();
    for (_, key, value) in reader::entries(node, what, d) {
        let Some(p) = path(key, d) else { continue };
        match &value.value {
            Value::Map(ops) => {
                if ops.is_empty() {
                    d.error(
                        value.pos,
                        format!("no operator given; use one of {}", OPERATORS.join(", ")),
                    );
                }
                for (op_key, op_val) in ops {
                    if let Some(op) = operator(op_key, op_val, d) {
                        out.push(Condition {
                            path: p.clone(),
                            op,
                            pos: op_key.pos,
                        });
                    }
                }
            }
            Value::Seq(_) => d.error(
                value.pos,
                "a list cannot be compared for equality here; use `in: [...]` or `contains:`",
            ),
            _ => out.push(Condition {
                path: p,
                op: Op::Equals(value.to_json()),
                pos: value.pos,
            }),
        }
    }
    out
}

fn numeric(node: &Node, op: &str, d: &mut Diagnostics) -> Option<f64> {
    let n = match &node.value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    };
    if n.is_none() {
        d.error(
            node.pos,
            format!("{op} compares numbers; found {}", node.value.kind()),
        );
    }
    n
}

fn operator(key: &Node, val: &Node, d: &mut Diagnostics) -> Option<Op> {
    let name = key.as_str().unwrap_or_default();
    Some(match name {
        "equals" => Op::Equals(val.to_json()),
        "not_equals" => Op::NotEquals(val.to_json()),
        "contains" => Op::Contains(val.to_json()),
        "in" => match &val.value {
            Value::Seq(items) => Op::In(items.iter().map(Node::to_json).collect()),
            other => {
                d.error(val.pos, format!("in takes a list, found {}", other.kind()));
                return None;
            }
        },
        "regex" => {
            let s = reader::string(val, "regex", d)?;
            match regex::Regex::new(&s) {
                Ok(r) => Op::Regex(r),
                Err(e) => {
                    let first = e.to_string();
                    let last = first.lines().last().unwrap_or("invalid").trim().to_owned();
                    d.error(val.pos, format!("invalid regex \"{s}\": {last}"));
                    return None;
                }
            }
        }
        "exists" => Op::Exists(reader::boolean(val, "exists", d)?),
        "gt" => Op::Gt(numeric(val, "gt", d)?),
        "gte" => Op::Gte(numeric(val, "gte", d)?),
        "lt" => Op::Lt(numeric(val, "lt", d)?),
        "lte" => Op::Lte(numeric(val, "lte", d)?),
        other => {
            let hint = suggestion(other, OPERATORS, "operators");
            d.error(key.pos, format!("unknown operator \"{other}\"{hint}"));
            return None;
        }
    })
}

fn compile_step(
    route: &str,
    index: usize,
    node: &Node,
    ctx: &mut Ctx<'_>,
    d: &mut Diagnostics,
) -> Option<SendStep> {
    let mut r = MapReader::new(
        node,
        &format!("send step #{} of route \"{route}\"", index + 1),
        d,
    )?;
    let target_node = r.require("target", d);
    let target = target_node.and_then(|n| reader::string(n, "target", d));
    let remember = r.take("remember").and_then(|n| {
        let s = reader::string(n, "remember", d)?;
        if is_identifier(&s) {
            Some(s)
        } else {
            d.error(
                n.pos,
                format!("remember name \"{s}\" must be an identifier (letters, digits, _)"),
            );
            None
        }
    });
    let (Some(target), Some(tn)) = (target, target_node) else {
        return None;
    };
    let Some(kind) = ctx.declared.targets.get(&target) else {
        let known: Vec<&str> = ctx.declared.targets.keys().map(String::as_str).collect();
        let hint = suggestion(&target, &known, "targets");
        d.error(tn.pos, format!("unknown target \"{target}\"{hint}"));
        // Without a known target type the other keys cannot be judged, so
        // they are not reported (r.finish is skipped on purpose).
        return None;
    };
    let endpoint = ctx.targets.get(&target).map(|t| &t.kind);
    let prefix = format!("{route}#{}", index + 1);
    let mut b = StepBuilder::new(ctx.templates, ctx.templates_dir, prefix);
    let action = Endpoint::compile_step(kind, endpoint, &mut r, &mut b, d);
    r.finish(d);
    let (uses_links, reads_links) = b.links();
    Some(SendStep {
        target,
        action: action?,
        remember,
        uses_links,
        reads_links,
        pos: node.pos,
    })
}
