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
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct RenderError(pub String);

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

/// A rendered value used as one whole path segment (a task id, an issue
/// key): trimmed, never empty, never `.` or `..` (which would move the
/// request to another API path), percent-encoded. `kind` names the field in
/// the error, which becomes the dead delivery's reason.
pub fn path_segment(kind: &str, value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(format!("{kind} rendered empty"));
    }
    // Checked on the encoded form, which is what URL parsing sees: `%2e`
    // in the value is sent as `%252e`, one ordinary segment.
    let encoded = percent_encode(v);
    if is_dot_segment(&encoded) {
        return Err(format!(
            "{kind} rendered as \"{v}\", which would change the request path; \
             check the value the template reads"
        ));
    }
    Ok(encoded)
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
    pub fn add(&mut self, name: &str, source: &str, kind: Kind) -> Result<TemplateId, String> {
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
            .map_err(|e| format!("template error: {}", e.reason()))?;
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
    pub fn render_text(&self, id: &TemplateId, ctx: &Context) -> Result<String, RenderError> {
        self.registry_of(id.kind)
            .render_with_context(&id.name, ctx)
            .map_err(|e| RenderError(describe(&e)))
    }

    /// Renders a template to a JSON value: a string for plain and path
    /// templates, the value itself for typed leaves, the parsed document for
    /// template files (which must produce valid JSON).
    pub fn render_value(&self, id: &TemplateId, ctx: &Context) -> Result<Value, RenderError> {
        let text = self.render_text(id, ctx)?;
        match id.kind {
            Kind::Plain | Kind::UrlPath => Ok(Value::String(text)),
            Kind::Typed => serde_json::from_str(&text)
                .map_err(|e| RenderError(format!("{}: value is not JSON: {e}", id.name))),
            Kind::JsonFile => serde_json::from_str(&text).map_err(|e| {
                RenderError(format!(
                    "template {} did not produce valid JSON ({e}); use {{{{json value}}}} for whole values",
                    id.name.trim_start_matches("file:")
                ))
            }),
        }
    }
}

/// A render error as one line that names the template and the missing value.
fn describe(e: &handlebars::RenderError) -> String {
    let reason = e.reason().to_string();
    match &e.template_name {
        Some(t) => format!(
            "render error in {}: {reason}",
            t.trim_start_matches("file:")
        ),
        None => format!("render error: {reason}"),
    }
}

/// Syntax check plus unknown-helper detection.
fn check(source: &str) -> Result<(), String> {
    let template = Template::compile(source).map_err(|e| {
        let mut reason = e.reason().to_string();
        // The grammar's list of expected rules helps nobody writing a route.
        if let Some(i) = reason.find(": expected ") {
            reason.truncate(i);
            reason.push_str(" (an unclosed or malformed {{...}} or block)");
        }
        match e.pos() {
            Some((l, c)) => format!("template error at template line {l}, column {c}: {reason}"),
            None => format!("template error: {reason}"),
        }
    })?;
    let mut unknown = Vec::new();
    collect_unknown_helpers(&template, &mut unknown);
    if let Some(h) = unknown.first() {
        let known: Vec<&str> = CUSTOM_HELPERS
            .iter()
            .chain(BUILTIN_HELPERS)
            .copied()
            .collect();
        let hint = crate::routes_file::diag::suggestion(h, &known, "helpers");
        return Err(format!("template error: helper \"{h}\" not found{hint}"));
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
    fn dot_segments_are_recognised_in_every_spelling() {
        for s in [".", "..", "%2e", "%2E", ".%2e", "%2E.", "%2e%2E"] {
            assert!(is_dot_segment(s), "{s}");
        }
        for s in ["...", "a.", ".a", "%252e", "", "%2e%2e%2e", "v1.2"] {
            assert!(!is_dot_segment(s), "{s}");
        }
        assert!(
            path_segment("task_id", " .. ")
                .unwrap_err()
                .contains("\"..\"")
        );
        assert!(path_segment("task_id", ".").is_err());
        assert_eq!(path_segment("task_id", "%2e%2e").unwrap(), "%252e%252e");
        assert_eq!(path_segment("task_id", "a/b").unwrap(), "a%2Fb");
        assert_eq!(path_segment("task_id", "...").unwrap(), "...");
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
            .unwrap_err();
        assert_eq!(
            e,
            "template error: helper \"moneyy\" not found; did you mean \"money\"?"
        );
        let e = t.add("d", "{{#if x}}open", Kind::Plain).unwrap_err();
        assert!(e.starts_with("template error"), "{e}");
        let e = t
            .add("e", "{{#eachh items}}{{/eachh}}", Kind::Plain)
            .unwrap_err();
        assert!(e.contains("\"eachh\""), "{e}");
        assert!(
            t.add("f", "{{upper (lowerr x)}}", Kind::Plain)
                .unwrap_err()
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
            e.0.starts_with("template bad.hbs did not produce valid JSON"),
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
        assert!(e.0.contains("task.name"), "{e}");
    }
}
