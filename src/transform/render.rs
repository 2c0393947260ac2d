//! Handlebars templates: strict, compiled and registered once when
//! routes.yaml is loaded, rendered per delivery.
//!
//! Three registries, one per escaping rule, so a value can never break out of
//! where it is written:
//! - plain: send-step strings (Slack text, Jira summaries...): no escaping;
//! - json: whole-body template files: `{{value}}` is escaped as the inside of a
//!   JSON string (use `{{json value}}` for a whole value);
//! - url: an http step's `path`: `{{value}}` is percent-encoded, so a rendered
//!   value cannot add path segments, a query or change the host.

use super::helpers;
use handlebars::template::{Parameter, Template, TemplateElement};
use handlebars::{Context, Handlebars};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The most one template may write in one render (1 MiB): a nested `each`
/// over a large payload can multiply its output without bound.
pub const MAX_RENDER_BYTES: usize = 1024 * 1024;

/// The longest one template may render.
pub const MAX_RENDER_TIME: Duration = Duration::from_secs(2);

/// Collects a render's output and stops it past [`MAX_RENDER_BYTES`] or
/// [`MAX_RENDER_TIME`] (checked at every write).
struct CappedOutput {
    buf: Vec<u8>,
    deadline: Instant,
    tripped: Option<String>,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > MAX_RENDER_BYTES {
            self.tripped = Some(format!("its output is over {MAX_RENDER_BYTES} bytes"));
        } else if Instant::now() > self.deadline {
            self.tripped = Some(format!("it took over {} s", MAX_RENDER_TIME.as_secs_f32()));
        }
        if self.tripped.is_some() {
            return Err(std::io::Error::other("render limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Helpers clickup-bridge provides on top of Handlebars' built-ins.
pub const CUSTOM_HELPERS: &[&str] = &[
    "json",
    "default",
    "upper",
    "lower",
    "truncate",
    "join",
    "date",
    "money",
    "slack_escape",
];

/// Handlebars' own helpers.
const BUILTIN_HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len",
];

/// Which registry a template lives in, i.e. how its values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No escaping; renders to a string.
    Plain,
    /// A body leaf that is exactly one `{{expr}}`: renders to the value's own
    /// JSON type.
    Typed,
    /// JSON-string escaping; the whole output must be JSON.
    JsonFile,
    /// Percent-encoding, for URL paths.
    UrlPath,
}

/// A registered template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateId {
    /// Registry name.
    pub name: String,
    /// Registry and result type.
    pub kind: Kind,
}

/// A render failure: the delivery is dead with this message (never retried
/// blindly).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// Stopped at [`MAX_RENDER_BYTES`] or [`MAX_RENDER_TIME`].
    #[error(
        "render of {template} stopped because {why}; make the template write less (a nested \
         each over a large list?)"
    )]
    Limit {
        /// The template.
        template: String,
        /// Which limit.
        why: String,
    },
    /// Handlebars failed in a template (a missing value, a helper's error).
    #[error("render error in {template}: {reason}")]
    In {
        /// The template.
        template: String,
        /// Handlebars' reason.
        reason: String,
    },
    /// Handlebars failed outside a named template.
    #[error("render error: {0}")]
    Other(String),
    /// The output is not UTF-8.
    #[error("render of {0} is not UTF-8")]
    NotUtf8(String),
    /// A typed body leaf did not render to JSON.
    #[error("{template}: value is not JSON: {error}")]
    NotJson {
        /// The template.
        template: String,
        /// serde_json's reason.
        error: String,
    },
    /// A whole-body template file did not render to JSON.
    #[error(
        "template {template} did not produce valid JSON ({error}); use {{{{json value}}}} for whole values"
    )]
    FileNotJson {
        /// The template file.
        template: String,
        /// serde_json's reason.
        error: String,
    },
}

/// A template that cannot be compiled: the message names what is wrong.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// A syntax error at a position in the template.
    #[error("template error at template line {line}, column {col}: {reason}")]
    SyntaxAt {
        /// Line in the template.
        line: usize,
        /// Column.
        col: usize,
        /// What is wrong.
        reason: String,
    },
    /// A syntax error without a position.
    #[error("template error: {0}")]
    Syntax(String),
    /// A helper that does not exist.
    #[error("template error: helper \"{name}\" not found{hint}")]
    UnknownHelper {
        /// Its name.
        name: String,
        /// "did you mean", or empty.
        hint: String,
    },
    /// A partial the template does not define.
    #[error(
        "template error: partial \"{0}\" is not defined in this template; only \
         inline partials defined in the same template ({{{{#*inline \"{0}\"}}}}...\
         {{{{/inline}}}}) can be used"
    )]
    UndefinedPartial(String),
    /// Partials that call themselves.
    #[error(
        "template error: partial \"{name}\" calls itself ({cycle}); recursive partials are \
         refused because they can recurse without end; write the repetition with \
         {{{{#each}}}}"
    )]
    RecursivePartial {
        /// The first partial of the cycle.
        name: String,
        /// The cycle, `a -> b -> a`.
        cycle: String,
    },
    /// `{{#*inline}}` without a quoted name.
    #[error(
        "template error: an inline partial needs a quoted name, as in {{{{#*inline \"name\"}}}}"
    )]
    UnnamedInline,
    /// A partial called by a computed name.
    #[error(
        "template error: a partial's name must be written out, not computed, so that \
         recursion can be ruled out"
    )]
    ComputedPartial,
}

/// The set of templates of one pipeline.
#[derive(Debug)]
pub struct Templates {
    plain: Handlebars<'static>,
    json: Handlebars<'static>,
    url: Handlebars<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// Escapes as the inside of a JSON string.
fn json_string_escape(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a URL path segment is `.` or `..`, also in the percent-encoded
/// forms (`%2e`, `.%2E`, ...) that URL parsers resolve the same way
/// (WHATWG URL: "single-dot" and "double-dot" segments).
pub fn is_dot_segment(segment: &str) -> bool {
    let s = segment.to_ascii_lowercase().replace("%2e", ".");
    s == "." || s == ".."
}

fn registry(escape: fn(&str) -> String) -> Handlebars<'static> {
    let mut r = Handlebars::new();
    r.set_strict_mode(true);
    r.register_escape_fn(escape);
    helpers::register(&mut r);
    r
}

/// If `source` is exactly one `{{expression}}` (not a block, comment or
/// triple-stash), the expression.
fn single_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    if inner.is_empty() || inner.contains("{{") || inner.contains("}}") {
        return None;
    }
    if inner.starts_with(['#', '/', '!', '>', '^', '{', '&', '~']) || inner == "else" {
        return None;
    }
    Some(inner)
}

impl Templates {
    /// An empty set in strict mode.
    pub fn new() -> Self {
        Templates {
            plain: registry(handlebars::no_escape),
            json: registry(json_string_escape),
            url: registry(percent_encode),
        }
    }

    fn registry_of(&self, kind: Kind) -> &Handlebars<'static> {
        match kind {
            Kind::Plain | Kind::Typed => &self.plain,
            Kind::JsonFile => &self.json,
            Kind::UrlPath => &self.url,
        }
    }

    /// Compiles `source` as a `kind` template named `name`. The error names
    /// what is wrong (syntax with its position in the template, or an unknown
    /// helper).
    pub fn add(
        &mut self,
        name: &str,
        source: &str,
        kind: Kind,
    ) -> Result<TemplateId, TemplateError> {
        check(source)?;
        let (kind, source) = match (kind, single_expression(source)) {
            (Kind::Typed, Some(expr)) => {
                // Render the expression's value as JSON, parse it back: the
                // leaf keeps its type (numbers, lists, objects, null).
                let wrapped = if expr.contains(char::is_whitespace) {
                    format!("{{{{json ({expr})}}}}")
                } else {
                    format!("{{{{json {expr}}}}}")
                };
                (Kind::Typed, wrapped)
            }
            (Kind::Typed, None) => (Kind::Plain, source.to_owned()),
            (k, _) => (k, source.to_owned()),
        };
        let r = match kind {
            Kind::Plain | Kind::Typed => &mut self.plain,
            Kind::JsonFile => &mut self.json,
            Kind::UrlPath => &mut self.url,
        };
        r.register_template_string(name, &source)
            .map_err(|e| TemplateError::Syntax(e.reason().to_string()))?;
        Ok(TemplateId {
            name: name.to_owned(),
            kind,
        })
    }

    /// Whether a template of that name and kind is registered.
    pub fn has(&self, name: &str, kind: Kind) -> bool {
        self.registry_of(kind).has_template(name)
    }

    /// Renders a template to text.
    /// Output and time are bounded ([`MAX_RENDER_BYTES`], [`MAX_RENDER_TIME`]):
    /// past either the render stops with an error, never a crash.
    pub fn render_text(&self, id: &TemplateId, ctx: &Context) -> Result<String, RenderError> {
        let mut out = CappedOutput {
            buf: Vec::new(),
            deadline: Instant::now() + MAX_RENDER_TIME,
            tripped: None,
        };
        let rendered = self
            .registry_of(id.kind)
            .render_with_context_to_write(&id.name, ctx, &mut out);
        if let Some(why) = out.tripped {
            return Err(RenderError::Limit {
                template: id.name.trim_start_matches("file:").to_owned(),
                why,
            });
        }
        rendered.map_err(|e| describe(&e))?;
        String::from_utf8(out.buf).map_err(|_| RenderError::NotUtf8(id.name.clone()))
    }

    /// Renders a template to a JSON value: a string for plain and path
    /// templates, the value itself for typed leaves, the parsed document for
    /// template files (which must produce valid JSON).
    pub fn render_value(&self, id: &TemplateId, ctx: &Context) -> Result<Value, RenderError> {
        let text = self.render_text(id, ctx)?;
        match id.kind {
            Kind::Plain | Kind::UrlPath => Ok(Value::String(text)),
            Kind::Typed => serde_json::from_str(&text).map_err(|e| RenderError::NotJson {
                template: id.name.clone(),
                error: e.to_string(),
            }),
            Kind::JsonFile => serde_json::from_str(&text).map_err(|e| RenderError::FileNotJson {
                template: id.name.trim_start_matches("file:").to_owned(),
                error: e.to_string(),
            }),
        }
    }
}

/// A render error as one line that names the template and the missing value.
fn describe(e: &handlebars::RenderError) -> RenderError {
    let reason = e.reason().to_string();
    match &e.template_name {
        Some(t) => RenderError::In {
            template: t.trim_start_matches("file:").to_owned(),
            reason,
        },
        None => RenderError::Other(reason),
    }
}

/// Syntax check plus unknown-helper detection.
fn check(source: &str) -> Result<(), TemplateError> {
    let template = Template::compile(source).map_err(|e| {
        let mut reason = e.reason().to_string();
        // The grammar's list of expected rules helps nobody writing a route.
        if let Some(i) = reason.find(": expected ") {
            reason.truncate(i);
            reason.push_str(" (an unclosed or malformed {{...}} or block)");
        }
        match e.pos() {
            Some((line, col)) => TemplateError::SyntaxAt { line, col, reason },
            None => TemplateError::Syntax(reason),
        }
    })?;
    check_partials(&template)?;
    let mut unknown = Vec::new();
    collect_unknown_helpers(&template, &mut unknown);
    if let Some(h) = unknown.first() {
        let known: Vec<&str> = CUSTOM_HELPERS
            .iter()
            .chain(BUILTIN_HELPERS)
            .copied()
            .collect();
        let hint = crate::routes_file::diag::suggestion(h, &known, "helpers");
        return Err(TemplateError::UnknownHelper {
            name: h.clone(),
            hint,
        });
    }
    Ok(())
}

/// Partials are the one way a Handlebars template can recurse, and a
/// template that calls itself overflows the stack and aborts the process (on
/// every restart, as its delivery stays pending). So a template may call only
/// inline partials it defines itself (`{{#*inline "p"}}...{{/inline}}`), by a
/// name written out, and those calls may not form a cycle. Without a cycle
/// the nesting of a render is bounded by the template's own text.
fn check_partials(t: &Template) -> Result<(), TemplateError> {
    let mut defs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut calls: Vec<(Option<String>, String)> = Vec::new();
    walk_partials(t, None, &mut defs, &mut calls)?;
    for (owner, name) in calls {
        if !defs.contains_key(&name) {
            return Err(TemplateError::UndefinedPartial(name));
        }
        if let Some(owner) = owner {
            defs.entry(owner).or_default().insert(name);
        }
    }
    // Depth-first search for a cycle; the path names it.
    fn visit(
        name: &str,
        defs: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == name) {
            let mut cycle = path[i..].to_vec();
            cycle.push(name.to_owned());
            return Some(cycle);
        }
        if done.contains(name) {
            return None;
        }
        path.push(name.to_owned());
        for next in defs.get(name).into_iter().flatten() {
            if let Some(c) = visit(next, defs, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(name.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for name in defs.keys() {
        if let Some(cycle) = visit(name, &defs, &mut Vec::new(), &mut done) {
            return Err(TemplateError::RecursivePartial {
                name: cycle[0].clone(),
                cycle: cycle.join(" -> "),
            });
        }
    }
    Ok(())
}

fn walk_partials(
    t: &Template,
    owner: Option<&str>,
    defs: &mut BTreeMap<String, BTreeSet<String>>,
    calls: &mut Vec<(Option<String>, String)>,
) -> Result<(), TemplateError> {
    for el in &t.elements {
        match el {
            TemplateElement::DecoratorBlock(d) | TemplateElement::DecoratorExpression(d) => {
                let inline = d.name.as_name() == Some("inline");
                let name = match (inline, d.params.first()) {
                    (false, _) => None,
                    (true, Some(Parameter::Literal(Value::String(n)))) => Some(n.clone()),
                    (true, _) => {
                        return Err(TemplateError::UnnamedInline);
                    }
                };
                if let Some(n) = &name {
                    defs.entry(n.clone()).or_default();
                }
                if let Some(body) = &d.template {
                    walk_partials(body, name.as_deref().or(owner), defs, calls)?;
                }
            }
            TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
                let name = match (&d.name, d.name.as_name()) {
                    (Parameter::Literal(Value::String(n)), _) => n.clone(),
                    (Parameter::Name(_) | Parameter::Path(_), Some(n)) => n.to_owned(),
                    _ => {
                        return Err(TemplateError::ComputedPartial);
                    }
                };
                calls.push((owner.map(str::to_owned), name));
                if let Some(body) = &d.template {
                    walk_partials(body, owner, defs, calls)?;
                }
            }
            TemplateElement::HelperBlock(h) => {
                for inner in [&h.template, &h.inverse].into_iter().flatten() {
                    walk_partials(inner, owner, defs, calls)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_known(name: &str) -> bool {
    CUSTOM_HELPERS.contains(&name) || BUILTIN_HELPERS.contains(&name)
}

fn helper_name(p: &Parameter) -> Option<&str> {
    p.as_name()
}

fn check_params(params: &[Parameter], out: &mut Vec<String>) {
    for p in params {
        if let Parameter::Subexpression(sub) = p
            && let TemplateElement::Expression(h) = sub.element.as_ref()
        {
            if let Some(n) = helper_name(&h.name)
                && !is_known(n)
            {
                out.push(n.to_owned());
            }
            check_params(&h.params, out);
        }
    }
}

/// Walks a template and lists helper calls that name no known helper.
/// `{{name}}` without parameters is a value lookup, not a helper call.
fn collect_unknown_helpers(t: &Template, out: &mut Vec<String>) {
    for el in &t.elements {
        match el {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                let is_call = !h.params.is_empty() || !h.hash.is_empty();
                if let Some(name) = helper_name(&h.name)
                    && is_call
                    && !is_known(name)
                {
                    out.push(name.to_owned());
                }
                check_params(&h.params, out);
            }
            TemplateElement::HelperBlock(h) => {
                if let Some(name) = helper_name(&h.name)
                    && !is_known(name)
                {
                    out.push(name.to_owned());
                }
                check_params(&h.params, out);
                if let Some(inner) = &h.template {
                    collect_unknown_helpers(inner, out);
                }
                if let Some(inner) = &h.inverse {
                    collect_unknown_helpers(inner, out);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recursive_partials_are_refused_and_others_accepted() {
        let mut t = Templates::new();
        for (src, want) in [
            (r#"{{#*inline "p"}}a{{> p}}{{/inline}}{{> p}}"#, "p -> p"),
            (
                r#"{{#*inline "a"}}{{> b}}{{/inline}}{{#*inline "b"}}{{#if x}}{{> a}}{{/if}}{{/inline}}{{> a}}"#,
                "a -> b -> a",
            ),
            (r#"{{> nowhere}}"#, "not defined"),
            (r#"{{> (lookup this "p")}}"#, "written out"),
            (r#"{{#*inline "p"}}{{#> p}}x{{/p}}{{/inline}}"#, "p -> p"),
        ] {
            let e = t.add("r", src, Kind::Plain).unwrap_err().to_string();
            assert!(e.contains(want), "{src}: {e}");
        }
        let id = t
            .add(
                "ok",
                r#"{{#*inline "item"}}[{{this}}]{{/inline}}{{#*inline "list"}}{{#each xs}}{{> item}}{{/each}}{{/inline}}{{> list}}"#,
                Kind::Plain,
            )
            .unwrap();
        let ctx = Context::wraps(json!({"xs": [1, 2]})).unwrap();
        assert_eq!(t.render_text(&id, &ctx).unwrap(), "[1][2]");
    }

    #[test]
    fn an_exploding_render_is_cut_with_an_error() {
        let mut t = Templates::new();
        let id = t
            .add(
                "boom",
                "{{#each xs}}{{#each ../xs}}{{#each ../../xs}}{{../../../pad}}{{/each}}{{/each}}{{/each}}",
                Kind::Plain,
            )
            .unwrap();
        let xs: Vec<u32> = (0..100).collect();
        let ctx = Context::wraps(json!({"xs": xs, "pad": "x".repeat(100)})).unwrap();
        let started = Instant::now();
        let e = t.render_text(&id, &ctx).unwrap_err();
        assert!(e.to_string().contains("over 1048576 bytes"), "{e}");
        assert!(started.elapsed() < MAX_RENDER_TIME * 2);
    }

    #[test]
    fn dot_segments_are_recognised_in_every_spelling() {
        for s in [".", "..", "%2e", "%2E", ".%2e", "%2E.", "%2e%2E"] {
            assert!(is_dot_segment(s), "{s}");
        }
        for s in ["...", "a.", ".a", "%252e", "", "%2e%2e%2e", "v1.2"] {
            assert!(!is_dot_segment(s), "{s}");
        }
    }

    #[test]
    fn compile_errors_name_the_problem() {
        let mut t = Templates::new();
        assert!(t.add("a", "{{task.name}} by {{by}}", Kind::Plain).is_ok());
        assert!(
            t.add("b", "Invoice paid: {{money amount currency}}", Kind::Plain)
                .is_ok()
        );
        let e = t
            .add("c", "{{moneyy amount currency}}", Kind::Plain)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "template error: helper \"moneyy\" not found; did you mean \"money\"?"
        );
        let e = t
            .add("d", "{{#if x}}open", Kind::Plain)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("template error"), "{e}");
        let e = t
            .add("e", "{{#eachh items}}{{/eachh}}", Kind::Plain)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"eachh\""), "{e}");
        assert!(
            t.add("f", "{{upper (lowerr x)}}", Kind::Plain)
                .unwrap_err()
                .to_string()
                .contains("lowerr")
        );
    }

    fn ctx(v: Value) -> Context {
        Context::wraps(v).unwrap()
    }

    #[test]
    fn each_kind_escapes_for_where_it_is_written() {
        let mut t = Templates::new();
        let data =
            json!({"s": "a \"q\" \\ b\nc ü/?#", "n": 5, "list": [1, "x"], "obj": {"k": null}});
        let plain = t.add("p", "v={{s}}", Kind::Plain).unwrap();
        assert_eq!(
            t.render_value(&plain, &ctx(data.clone())).unwrap(),
            json!("v=a \"q\" \\ b\nc ü/?#")
        );
        let path = t.add("u", "/items/{{s}}", Kind::UrlPath).unwrap();
        assert_eq!(
            t.render_text(&path, &ctx(data.clone())).unwrap(),
            "/items/a%20%22q%22%20%5C%20b%0Ac%20%C3%BC%2F%3F%23"
        );
        let file = t
            .add(
                "file:f.hbs",
                "{\"t\": \"{{s}}\", \"n\": {{json n}}}",
                Kind::JsonFile,
            )
            .unwrap();
        assert_eq!(
            t.render_value(&file, &ctx(data.clone())).unwrap(),
            json!({"t": "a \"q\" \\ b\nc ü/?#", "n": 5})
        );
        for (src, want) in [
            ("{{n}}", json!(5)),
            (" {{ list }} ", json!([1, "x"])),
            ("{{obj}}", json!({"k": null})),
            ("{{default missing 7}}", json!(7)),
            ("n={{n}}", json!("n=5")),
        ] {
            let id = t.add(&format!("typed{src}"), src, Kind::Typed).unwrap();
            assert_eq!(
                t.render_value(&id, &ctx(data.clone())).unwrap(),
                want,
                "{src}"
            );
        }
    }

    #[test]
    fn a_template_file_that_is_not_json_is_a_render_error() {
        let mut t = Templates::new();
        let id = t
            .add("file:bad.hbs", "{\"t\": {{s}}}", Kind::JsonFile)
            .unwrap();
        let e = t.render_value(&id, &ctx(json!({"s": "x"}))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("template bad.hbs did not produce valid JSON"),
            "{e}"
        );
    }

    #[test]
    fn if_unless_with_and_default_accept_missing_values() {
        let mut t = Templates::new();
        let data = json!({"task": {"name": "n"}});
        for (src, want) in [
            ("{{#if task.due}}due{{else}}none{{/if}}", "none"),
            ("{{#unless task.due}}no due date{{/unless}}", "no due date"),
            (
                "{{#with task.assignee}}{{username}}{{else}}nobody{{/with}}",
                "nobody",
            ),
            ("{{default task.due \"-\"}}", "-"),
            ("{{#if task.name}}{{task.name}}{{/if}}", "n"),
        ] {
            let id = t.add(&format!("t{src}"), src, Kind::Plain).unwrap();
            assert_eq!(
                t.render_text(&id, &ctx(data.clone())).unwrap(),
                want,
                "{src}"
            );
        }
    }

    #[test]
    fn missing_values_are_render_errors_naming_them() {
        let mut t = Templates::new();
        let id = t
            .add("r#1.text@1:1", "hi {{task.name}}", Kind::Plain)
            .unwrap();
        let e = t.render_text(&id, &ctx(json!({"task": {}}))).unwrap_err();
        assert!(e.to_string().contains("task.name"), "{e}");
    }
}
