//! `routes:`: when an event fires a route, what it extracts and what it sends.

use super::reader::{self, MapReader};
use super::sources::path;
use crate::routes_file::diag::{Diagnostics, suggestion};
use crate::routes_file::yaml::{Node, Pos, Value};
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

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// A YAML structure whose string leaves are templates.
    Json(BodyNode),
    /// A whole-body template file from `templates/`.
    File(TemplateId),
}

/// A node of a structured body.
#[derive(Debug, Clone)]
pub enum BodyNode {
    /// A string leaf, rendered.
    Template(TemplateId),
    /// A non-string leaf, copied as is.
    Literal(serde_json::Value),
    /// A list.
    Array(Vec<BodyNode>),
    /// A mapping, in file order.
    Object(Vec<(String, BodyNode)>),
}

/// What a send step does, per target type.
#[derive(Debug, Clone)]
pub enum Action {
    /// Slack: a text message, or a full payload.
    Slack {
        /// `text`.
        text: Option<TemplateId>,
        /// `body` or `template`.
        body: Option<Body>,
    },
    /// Generic HTTP.
    Http {
        /// Overrides the target's method.
        method: Option<String>,
        /// Appended to the target URL (rendered values are percent-encoded).
        path: Option<TemplateId>,
        /// Extra headers.
        headers: Vec<(String, TemplateId)>,
        /// Query parameters.
        query: Vec<(String, TemplateId)>,
        /// `body` or `template`.
        body: Option<Body>,
    },
    /// Jira: create an issue.
    JiraCreateIssue {
        /// Project key.
        project: TemplateId,
        /// Issue type name.
        issue_type: TemplateId,
        /// Summary.
        summary: TemplateId,
        /// Description text, sent as ADF.
        description: Option<TemplateId>,
        /// Labels.
        labels: Vec<TemplateId>,
        /// Extra fields.
        fields: Option<BodyNode>,
    },
    /// Jira: comment on an issue.
    JiraComment {
        /// Issue key.
        issue: TemplateId,
        /// Text, sent as ADF.
        text: TemplateId,
    },
    /// Jira: move an issue to a status.
    JiraTransition {
        /// Issue key.
        issue: TemplateId,
        /// Name of the status to reach.
        to: TemplateId,
    },
    /// ClickUp: update a task.
    ClickUpUpdateTask {
        /// Task id.
        task_id: TemplateId,
        /// New status.
        status: Option<TemplateId>,
        /// New name.
        name: Option<TemplateId>,
        /// New priority.
        priority: Option<BodyNode>,
        /// Custom field id -> value.
        fields: Vec<(String, BodyNode)>,
    },
    /// ClickUp: comment on a task.
    ClickUpComment {
        /// Task id.
        task_id: TemplateId,
        /// Comment text.
        text: TemplateId,
    },
    /// ClickUp: create a task in a list.
    ClickUpCreateTask {
        /// List id.
        list_id: TemplateId,
        /// Task name.
        name: TemplateId,
        /// Description.
        description: Option<TemplateId>,
        /// Status.
        status: Option<TemplateId>,
    },
}

/// One `send` step.
#[derive(Debug, Clone)]
pub struct SendStep {
    /// Target name.
    pub target: String,
    /// What to do.
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

/// The `links.NAME` names a template source reads; `*` when it mentions
/// `links` other than as `links.NAME` (e.g. `{{#each links}}`).
pub fn link_names(src: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = src;
    while let Some(i) = rest.find("links") {
        let before = rest[..i].chars().next_back();
        let after = &rest[i + "links".len()..];
        rest = after;
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            continue; // part of another name (e.g. `mylinks`, `event.links`)
        }
        if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = after
            .strip_prefix('.')
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(if name.is_empty() {
            "*".to_owned()
        } else {
            name
        });
    }
    out
}

/// Everything a route compiler needs besides the node.
pub struct Ctx<'a> {
    /// Declared names.
    pub declared: &'a Declared,
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
    let source_kind = match &source {
        Some((s, pos)) => match ctx.declared.sources.get(s) {
            Some(kind) => Some(kind.clone()),
            None => {
                let known: Vec<&str> = ctx.declared.sources.keys().map(String::as_str).collect();
                d.error(
                    *pos,
                    format!("unknown source \"{s}\"{}", suggestion(s, &known, "sources")),
                );
                None
            }
        },
        None => None,
    };

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
                if source_kind.as_deref() == Some("clickup")
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
    let events: Vec<EventPattern> = events.into_iter().flatten().collect();

    let mut enrich_task = !task.is_empty();
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
        match ctx.declared.targets.get(&t).map(String::as_str) {
            Some("clickup") => enrich_via = Some(t),
            Some(other) => d.error(
                n.pos,
                format!("enrich_via \"{t}\" is a {other} target; it must name a clickup target"),
            ),
            None => {
                let known = clickup_targets(ctx.declared);
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
        let clickups = clickup_targets(ctx.declared);
        match clickups.as_slice() {
            [one] => enrich_via = Some((*one).to_owned()),
            [] => d.error(r.pos(), format!("{what} enriches the task but no clickup target is defined to fetch it")),
            _ => d.error(
                r.pos(),
                format!("{what} enriches the task but there are several clickup targets; name one with enrich_via ({})", clickups.join(", ")),
            ),
        }
    }

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

    let order_by = match r.take("order_by") {
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
    };

    let mut send = Vec::new();
    if let Some(s) = r.require("send", d) {
        match &s.value {
            Value::Seq(steps) if !steps.is_empty() => {
                for (i, step) in steps.iter().enumerate() {
                    if let Some(st) = compile_step(&label, i, step, ctx, d) {
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
    r.finish(d);

    if source_kind.as_deref() == Some("clickup") {
        for step in &send {
            if ctx.declared.targets.get(&step.target).map(String::as_str) == Some("clickup") {
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

/// Compiles template strings and bodies of one step.
struct StepBuilder<'c, 'a> {
    ctx: &'c mut Ctx<'a>,
    prefix: String,
    uses_links: bool,
    links: std::collections::BTreeSet<String>,
}

impl StepBuilder<'_, '_> {
    fn tpl(&mut self, node: &Node, key: &str, d: &mut Diagnostics) -> Option<TemplateId> {
        self.tpl_kind(node, key, Kind::Plain, d)
    }

    fn tpl_kind(
        &mut self,
        node: &Node,
        key: &str,
        kind: Kind,
        d: &mut Diagnostics,
    ) -> Option<TemplateId> {
        let src = reader::string(node, key, d)?;
        self.uses_links |= src.contains("links");
        self.links.extend(link_names(&src));
        let name = format!("{}.{key}@{}:{}", self.prefix, node.pos.line, node.pos.col);
        match self.ctx.templates.add(&name, &src, kind) {
            Ok(id) => Some(id),
            Err(e) => {
                d.error(node.pos, e);
                None
            }
        }
    }

    fn opt(
        &mut self,
        r: &mut MapReader<'_>,
        key: &'static str,
        d: &mut Diagnostics,
    ) -> Option<TemplateId> {
        let n = r.take(key)?;
        self.tpl(n, key, d)
    }

    fn req(
        &mut self,
        r: &mut MapReader<'_>,
        key: &'static str,
        d: &mut Diagnostics,
    ) -> Option<TemplateId> {
        let n = r.require(key, d)?;
        self.tpl(n, key, d)
    }

    fn body_node(&mut self, node: &Node, key: &str, d: &mut Diagnostics) -> Option<BodyNode> {
        Some(match &node.value {
            Value::Str(_) => BodyNode::Template(self.tpl_kind(node, key, Kind::Typed, d)?),
            Value::Seq(items) => {
                let mut out = Vec::new();
                for (i, it) in items.iter().enumerate() {
                    out.push(self.body_node(it, &format!("{key}[{i}]"), d)?);
                }
                BodyNode::Array(out)
            }
            Value::Map(entries) => {
                let mut out = Vec::new();
                for (k, v) in entries {
                    let Some(ks) = k.scalar_text() else {
                        d.error(k.pos, "body keys must be strings");
                        continue;
                    };
                    out.push((ks.clone(), self.body_node(v, &format!("{key}.{ks}"), d)?));
                }
                BodyNode::Object(out)
            }
            _ => BodyNode::Literal(node.to_json()),
        })
    }

    fn file(&mut self, node: &Node, d: &mut Diagnostics) -> Option<TemplateId> {
        let name = reader::string(node, "template", d)?;
        if name.contains("..") || Path::new(&name).is_absolute() {
            d.error(
                node.pos,
                format!("template \"{name}\" must be a file name inside the templates folder"),
            );
            return None;
        }
        let full = self.ctx.templates_dir.join(&name);
        let src = match std::fs::read_to_string(&full) {
            Ok(s) => s,
            Err(e) => {
                d.error(
                    node.pos,
                    format!("template file {} cannot be read: {e}", full.display()),
                );
                return None;
            }
        };
        self.uses_links |= src.contains("links");
        self.links.extend(link_names(&src));
        let id = format!("file:{name}");
        if self.ctx.templates.has(&id, Kind::JsonFile) {
            return Some(TemplateId {
                name: id,
                kind: Kind::JsonFile,
            });
        }
        match self.ctx.templates.add(&id, &src, Kind::JsonFile) {
            Ok(id) => Some(id),
            Err(e) => {
                d.error(node.pos, format!("{}: {e}", full.display()));
                None
            }
        }
    }

    /// `body:` or `template:`, at most one.
    fn body(&mut self, r: &mut MapReader<'_>, d: &mut Diagnostics) -> Option<Body> {
        let body = r.take("body");
        let file = r.take("template");
        match (body, file) {
            (Some(b), Some(_)) => {
                d.error(b.pos, "give either body or template, not both");
                None
            }
            (Some(b), None) => self.body_node(b, "body", d).map(Body::Json),
            (None, Some(f)) => self.file(f, d).map(Body::File),
            (None, None) => None,
        }
    }

    fn string_map(
        &mut self,
        node: &Node,
        what: &str,
        d: &mut Diagnostics,
    ) -> Vec<(String, TemplateId)> {
        reader::entries(node, what, d)
            .into_iter()
            .filter_map(|(k, _, v)| {
                self.tpl(v, &format!("{what}.{k}"), d)
                    .map(|t| (k.to_owned(), t))
            })
            .collect()
    }
}

fn action_name(r: &mut MapReader<'_>, allowed: &[&str], d: &mut Diagnostics) -> Option<String> {
    let n = r.require("action", d)?;
    let a = reader::string(n, "action", d)?;
    if allowed.contains(&a.as_str()) {
        Some(a)
    } else {
        let hint = suggestion(&a, allowed, "actions");
        d.error(
            n.pos,
            format!("unknown action \"{a}\"{hint} ({})", allowed.join(", ")),
        );
        None
    }
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
    let kind = match (&target, target_node) {
        (Some(t), Some(tn)) => match ctx.declared.targets.get(t) {
            Some(k) => Some(k.clone()),
            None => {
                let known: Vec<&str> = ctx.declared.targets.keys().map(String::as_str).collect();
                d.error(
                    tn.pos,
                    format!("unknown target \"{t}\"{}", suggestion(t, &known, "targets")),
                );
                None
            }
        },
        _ => None,
    };
    let Some(kind) = kind else {
        // Without a known target type the other keys cannot be judged, so
        // they are not reported (r.finish is skipped on purpose).
        return None;
    };
    let mut b = StepBuilder {
        ctx,
        prefix: format!("{route}#{}", index + 1),
        uses_links: false,
        links: Default::default(),
    };
    let action = match kind.as_str() {
        "slack" => {
            let text = b.opt(&mut r, "text", d);
            let text_given = r.key_pos("text").is_some();
            let body = b.body(&mut r, d);
            let body_given = r.key_pos("body").is_some() || r.key_pos("template").is_some();
            match (text_given, body_given) {
                (false, false) => {
                    d.error(r.pos(), "a slack step needs text, body or template");
                    None
                }
                (true, true) => {
                    d.error(
                        r.pos(),
                        "a slack step takes text, or body/template, not both",
                    );
                    None
                }
                _ => Some(Action::Slack { text, body }),
            }
        }
        "http" => {
            let method = r.take("method").and_then(|n| super::targets::method(n, d));
            let path = r
                .take("path")
                .and_then(|n| b.tpl_kind(n, "path", Kind::UrlPath, d));
            let headers = r
                .take("headers")
                .map(|n| b.string_map(n, "headers", d))
                .unwrap_or_default();
            let query = r
                .take("query")
                .map(|n| b.string_map(n, "query", d))
                .unwrap_or_default();
            let body = b.body(&mut r, d);
            Some(Action::Http {
                method,
                path,
                headers,
                query,
                body,
            })
        }
        "jira" => {
            match action_name(&mut r, &["create_issue", "comment", "transition"], d).as_deref() {
                Some("create_issue") => {
                    let project = b.req(&mut r, "project", d);
                    let issue_type = b.req(&mut r, "issue_type", d);
                    let summary = b.req(&mut r, "summary", d);
                    let description = b.opt(&mut r, "description", d);
                    let labels = r
                        .take("labels")
                        .map(|n| {
                            reader::string_or_list(n, "label", d)
                                .into_iter()
                                .filter_map(|(s, pos)| {
                                    let node = Node {
                                        pos,
                                        value: Value::Str(s),
                                    };
                                    b.tpl(&node, "labels", d)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let fields = r.take("fields").and_then(|n| b.body_node(n, "fields", d));
                    match (project, issue_type, summary) {
                        (Some(project), Some(issue_type), Some(summary)) => {
                            Some(Action::JiraCreateIssue {
                                project,
                                issue_type,
                                summary,
                                description,
                                labels,
                                fields,
                            })
                        }
                        _ => None,
                    }
                }
                Some("comment") => {
                    let issue = b.req(&mut r, "issue", d);
                    let text = b.req(&mut r, "text", d);
                    Some(Action::JiraComment {
                        issue: issue?,
                        text: text?,
                    })
                }
                Some("transition") => {
                    let issue = b.req(&mut r, "issue", d);
                    let to = b.req(&mut r, "to", d);
                    Some(Action::JiraTransition {
                        issue: issue?,
                        to: to?,
                    })
                }
                _ => None,
            }
        }
        "clickup" => match action_name(&mut r, &["update_task", "comment", "create_task"], d)
            .as_deref()
        {
            Some("update_task") => {
                let task_id = b.req(&mut r, "task_id", d);
                let status = b.opt(&mut r, "status", d);
                let name = b.opt(&mut r, "name", d);
                let priority = r
                    .take("priority")
                    .and_then(|n| b.body_node(n, "priority", d));
                let fields = r
                    .take("fields")
                    .map(|n| {
                        reader::entries(n, "fields", d)
                            .into_iter()
                            .filter_map(|(k, _, v)| {
                                b.body_node(v, &format!("fields.{k}"), d)
                                    .map(|t| (k.to_owned(), t))
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                if status.is_none() && name.is_none() && priority.is_none() && fields.is_empty() {
                    d.error(
                        r.pos(),
                        "update_task needs at least one of status, name, priority or fields",
                    );
                }
                Some(Action::ClickUpUpdateTask {
                    task_id: task_id?,
                    status,
                    name,
                    priority,
                    fields,
                })
            }
            Some("comment") => {
                let task_id = b.req(&mut r, "task_id", d);
                let text = b.req(&mut r, "text", d);
                Some(Action::ClickUpComment {
                    task_id: task_id?,
                    text: text?,
                })
            }
            Some("create_task") => {
                let list_id = b.req(&mut r, "list_id", d);
                let name = b.req(&mut r, "name", d);
                let description = b.opt(&mut r, "description", d);
                let status = b.opt(&mut r, "status", d);
                Some(Action::ClickUpCreateTask {
                    list_id: list_id?,
                    name: name?,
                    description,
                    status,
                })
            }
            _ => None,
        },
        _ => None,
    };
    r.finish(d);
    let uses_links = b.uses_links;
    let reads_links = b.links.into_iter().collect();
    Some(SendStep {
        target: target?,
        action: action?,
        remember,
        uses_links,
        reads_links,
        pos: node.pos,
    })
}
