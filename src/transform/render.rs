//! Handlebars templates: strict, without HTML escaping, compiled and
//! registered once when routes.yaml is loaded.

use handlebars::Handlebars;
use handlebars::template::{Parameter, Template, TemplateElement};

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

/// A registered template, referenced by its registry name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateId(pub String);

/// The set of templates of one pipeline.
#[derive(Debug)]
pub struct Templates {
    registry: Handlebars<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// An empty set in strict mode with no escaping.
    pub fn new() -> Self {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        Templates { registry }
    }

    /// Compiles `source` and registers it as `name`. The error names what is
    /// wrong (syntax with its position in the template, or an unknown helper).
    pub fn add(&mut self, name: &str, source: &str) -> Result<TemplateId, String> {
        let template = Template::compile(source).map_err(|e| {
            let mut reason = e.reason().to_string();
            // The grammar's list of expected rules helps nobody writing a route.
            if let Some(i) = reason.find(": expected ") {
                reason.truncate(i);
                reason.push_str(" (an unclosed or malformed {{...}} or block)");
            }
            match e.pos() {
                Some((l, c)) => {
                    format!("template error at template line {l}, column {c}: {reason}")
                }
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
        self.registry
            .register_template_string(name, source)
            .map_err(|e| format!("template error: {}", e.reason()))?;
        Ok(TemplateId(name.to_owned()))
    }

    /// The underlying registry, for rendering.
    pub fn registry(&self) -> &Handlebars<'static> {
        &self.registry
    }
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

    #[test]
    fn compile_errors_name_the_problem() {
        let mut t = Templates::new();
        assert!(t.add("a", "{{task.name}} by {{by}}").is_ok());
        assert!(
            t.add("b", "Invoice paid: {{money amount currency}}")
                .is_ok()
        );
        let e = t.add("c", "{{moneyy amount currency}}").unwrap_err();
        assert_eq!(
            e,
            "template error: helper \"moneyy\" not found; did you mean \"money\"?"
        );
        let e = t.add("d", "{{#if x}}open").unwrap_err();
        assert!(e.starts_with("template error"), "{e}");
        let e = t.add("e", "{{#eachh items}}{{/eachh}}").unwrap_err();
        assert!(e.contains("\"eachh\""), "{e}");
        assert!(
            t.add("f", "{{upper (lowerr x)}}")
                .unwrap_err()
                .contains("lowerr")
        );
    }
}
