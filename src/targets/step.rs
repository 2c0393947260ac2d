//! What every target type's send steps share: compiling their template
//! strings and bodies (recording which `links` they read), and rendering them.

use crate::routes_file::diag::{Diagnostics, suggestion};
use crate::routes_file::reader::{self, MapReader};
use crate::routes_file::yaml::{Node, Value};
use crate::transform::render::{Kind, RenderError, TemplateId, Templates};
use handlebars::Context;
use serde_json::Map;
use std::collections::BTreeSet;
use std::path::Path;

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

/// The `links.NAME` names a template source reads; `*` when it mentions
/// `links` other than as `links.NAME` (e.g. `{{#each links}}`).
pub fn link_names(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
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

/// Compiles the template strings and bodies of one step into the
/// pipeline's templates.
pub struct StepBuilder<'a> {
    templates: &'a mut Templates,
    templates_dir: &'a Path,
    prefix: String,
    uses_links: bool,
    links: BTreeSet<String>,
}

impl<'a> StepBuilder<'a> {
    /// A builder registering into `templates`; `prefix` names the step in
    /// template names (`route#2`).
    pub fn new(templates: &'a mut Templates, templates_dir: &'a Path, prefix: String) -> Self {
        StepBuilder {
            templates,
            templates_dir,
            prefix,
            uses_links: false,
            links: BTreeSet::new(),
        }
    }

    /// Whether a template mentions `links`, and the `links.NAME` names read.
    pub fn links(self) -> (bool, Vec<String>) {
        (self.uses_links, self.links.into_iter().collect())
    }

    /// A plain template string.
    pub fn tpl(&mut self, node: &Node, key: &str, d: &mut Diagnostics) -> Option<TemplateId> {
        self.tpl_kind(node, key, Kind::Plain, d)
    }

    /// A template string of a given kind.
    pub fn tpl_kind(
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
        match self.templates.add(&name, &src, kind) {
            Ok(id) => Some(id),
            Err(e) => {
                d.error(node.pos, e.to_string());
                None
            }
        }
    }

    /// An optional template key.
    pub fn opt(
        &mut self,
        r: &mut MapReader<'_>,
        key: &'static str,
        d: &mut Diagnostics,
    ) -> Option<TemplateId> {
        let n = r.take(key)?;
        self.tpl(n, key, d)
    }

    /// A required template key.
    pub fn req(
        &mut self,
        r: &mut MapReader<'_>,
        key: &'static str,
        d: &mut Diagnostics,
    ) -> Option<TemplateId> {
        let n = r.require(key, d)?;
        self.tpl(n, key, d)
    }

    /// Two required template keys (both are read, so both are reported).
    pub fn req2(
        &mut self,
        r: &mut MapReader<'_>,
        keys: [&'static str; 2],
        d: &mut Diagnostics,
    ) -> Option<(TemplateId, TemplateId)> {
        let first = self.req(r, keys[0], d);
        let second = self.req(r, keys[1], d);
        Some((first?, second?))
    }

    /// A structured value whose string leaves are typed templates.
    pub fn body_node(&mut self, node: &Node, key: &str, d: &mut Diagnostics) -> Option<BodyNode> {
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
        let full = self.templates_dir.join(&name);
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
        if self.templates.has(&id, Kind::JsonFile) {
            return Some(TemplateId {
                name: id,
                kind: Kind::JsonFile,
            });
        }
        match self.templates.add(&id, &src, Kind::JsonFile) {
            Ok(id) => Some(id),
            Err(e) => {
                d.error(node.pos, format!("{}: {e}", full.display()));
                None
            }
        }
    }

    /// `body:` or `template:`, at most one.
    pub fn body(&mut self, r: &mut MapReader<'_>, d: &mut Diagnostics) -> Option<Body> {
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

    /// A mapping of names to template strings (headers, query).
    pub fn string_map(
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

    /// A mapping of names to structured values (custom fields).
    pub fn node_map(
        &mut self,
        node: &Node,
        what: &str,
        d: &mut Diagnostics,
    ) -> Vec<(String, BodyNode)> {
        reader::entries(node, what, d)
            .into_iter()
            .filter_map(|(k, _, v)| {
                self.body_node(v, &format!("{what}.{k}"), d)
                    .map(|t| (k.to_owned(), t))
            })
            .collect()
    }
}

/// `action:`, one of `allowed`.
pub fn action_name(r: &mut MapReader<'_>, allowed: &[&str], d: &mut Diagnostics) -> Option<String> {
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

/// Renders templates for one attempt.
pub struct Render<'a> {
    /// The pipeline's templates.
    pub templates: &'a Templates,
    /// The delivery's context.
    pub ctx: &'a Context,
}

impl Render<'_> {
    /// A template as text.
    pub fn text(&self, id: &TemplateId) -> Result<String, RenderError> {
        self.templates.render_text(id, self.ctx)
    }

    /// An optional template as text.
    pub fn opt(&self, id: Option<&TemplateId>) -> Result<Option<String>, RenderError> {
        id.map(|id| self.text(id)).transpose()
    }

    /// Name/template pairs as name/text pairs.
    pub fn pairs(
        &self,
        pairs: &[(String, TemplateId)],
    ) -> Result<Vec<(String, String)>, RenderError> {
        pairs
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.text(v)?)))
            .collect()
    }

    /// Each given template into `m` under its key; absent ones are left out.
    pub fn into_map(
        &self,
        m: &mut Map<String, serde_json::Value>,
        fields: &[(&str, &Option<TemplateId>)],
    ) -> Result<(), RenderError> {
        for (key, tpl) in fields {
            if let Some(id) = tpl {
                m.insert((*key).to_owned(), serde_json::Value::String(self.text(id)?));
            }
        }
        Ok(())
    }

    /// A structured value.
    pub fn node(&self, node: &BodyNode) -> Result<serde_json::Value, RenderError> {
        use serde_json::Value as J;
        Ok(match node {
            BodyNode::Template(id) => self.templates.render_value(id, self.ctx)?,
            BodyNode::Literal(v) => v.clone(),
            BodyNode::Array(items) => J::Array(
                items
                    .iter()
                    .map(|i| self.node(i))
                    .collect::<Result<_, _>>()?,
            ),
            BodyNode::Object(entries) => {
                let mut m = Map::new();
                for (k, v) in entries {
                    m.insert(k.clone(), self.node(v)?);
                }
                J::Object(m)
            }
        })
    }

    /// A body.
    pub fn body(&self, body: &Body) -> Result<serde_json::Value, RenderError> {
        match body {
            Body::Json(node) => self.node(node),
            Body::File(id) => self.templates.render_value(id, self.ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_are_read_from_template_sources() {
        let names = |s: &str| link_names(s).into_iter().collect::<Vec<_>>();
        assert_eq!(
            names("{{links.jira_issue}} {{links.pr}}"),
            ["jira_issue", "pr"]
        );
        assert_eq!(names("{{#each links}}{{this}}{{/each}}"), ["*"]);
        assert!(names("{{event.links}} {{mylinks.x}}").is_empty());
    }
}
