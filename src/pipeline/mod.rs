//! The compiled routes.yaml: one immutable [`Pipeline`].
//!
//! Parse (YAML with positions), expand `${VAR}`, compile (sources, targets,
//! routes, templates, JSONPaths). Compiling is pure and collects every
//! diagnostic. The daemon, `check`, `simulate`, `test` and reload all go
//! through [`Pipeline::load`], so they can never disagree. The daemon holds
//! the pipeline in force in one [`Live`] handle, which also reloads it.

pub mod live;
pub use crate::routes_file::reader;
pub mod routes;
pub mod sources;
pub mod targets;

use crate::routes_file::diag::{Diagnostic, Diagnostics};
use crate::routes_file::env;
use crate::routes_file::yaml::{self, Node, Pos, Value};
use crate::transform::render::Templates;
use reader::MapReader;
use std::collections::BTreeMap;
use std::path::Path;

pub use live::{Live, Reloaded};
pub use routes::{Action, Body, BodyNode, Condition, EventPattern, Op, OrderBy, Route, SendStep};
pub use sources::{Source, Watch};
pub use targets::{Endpoint, RateLimit, RetryPolicy, Target};

/// A routes file that cannot be used: every problem in it.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_errors(.diagnostics))]
pub struct LoadError {
    /// Errors and warnings, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

fn render_errors(d: &[Diagnostic]) -> String {
    d.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The compiled, immutable routing configuration.
#[derive(Debug)]
pub struct Pipeline {
    /// Sources by name.
    pub sources: BTreeMap<String, Source>,
    /// Targets by name.
    pub targets: BTreeMap<String, Target>,
    /// Routes in file order.
    pub routes: Vec<Route>,
    /// Every template of every route, compiled.
    pub templates: Templates,
    /// Warnings found while compiling (the file is usable).
    pub warnings: Vec<Diagnostic>,
}

/// Where to read from and how to resolve variables.
pub struct LoadOptions<'a> {
    /// The routes file.
    pub routes: &'a Path,
    /// The templates folder.
    pub templates: &'a Path,
    /// Environment lookup (the process environment in production).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Which unset variables are errors.
    pub unset: Unset<'a>,
}

/// Which variables that are not set (and have no default) are errors. The
/// daemon and `check` need every one; an offline tool only what it uses, so
/// a user can run `simulate` without exporting every secret of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unset<'a> {
    /// Every one is an error (`serve`, `check`, reload).
    Refuse,
    /// Secrets may be unset: sources' `secret` and targets' `token`,
    /// `api_token`, `email` and `headers` (`simulate`, `test`: they verify
    /// nothing and mask credentials).
    AllowSecrets,
    /// Only the named source's values are needed (`sign`).
    AllButSource(&'a str),
    /// Only targets' tokens are needed (`clickup webhooks`: it uses a
    /// clickup target's token and base URL, nothing else).
    AllButTokens,
}

/// What an unset variable at `path` stands for under `unset`, if allowed.
fn stand_in(unset: Unset<'_>, path: &[&str]) -> Option<&'static str> {
    // Valid for every verifier (a Standard Webhooks key is base64) and
    // every URL key; never used for anything but compiling.
    const SECRET: &str = "whsec_dW5zZXQ=";
    const URL: &str = "https://unset.invalid";
    let secret_place = matches!(
        path,
        ["sources", _, "secret", ..]
            | [
                "targets",
                _,
                "token" | "api_token" | "email" | "headers",
                ..
            ]
    );
    match unset {
        Unset::Refuse => None,
        Unset::AllowSecrets => secret_place.then_some(SECRET),
        Unset::AllButTokens => match path {
            ["targets", _, "token"] => None,
            [.., "url" | "base_url" | "webhook_url"] => Some(URL),
            _ => Some(SECRET),
        },
        Unset::AllButSource(name) => match path {
            ["sources", s, ..] if *s == name => None,
            [.., "url" | "base_url" | "webhook_url"] => Some(URL),
            _ => Some(SECRET),
        },
    }
}

/// The process environment, for [`LoadOptions::env`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Pipeline {
    /// Reads and compiles a routes file.
    pub fn load(opts: &LoadOptions<'_>) -> Result<Pipeline, LoadError> {
        let file = opts.routes.display().to_string();
        let text = std::fs::read_to_string(opts.routes).map_err(|e| LoadError {
            diagnostics: vec![Diagnostic {
                file: file.clone(),
                pos: Pos { line: 1, col: 1 },
                severity: crate::routes_file::diag::Severity::Error,
                message: format!(
                    "cannot read the routes file: {e}; pass --routes FILE or set routes in the settings"
                ),
            }],
        })?;
        Self::compile_with(&file, &text, opts.templates, opts.env, opts.unset)
    }

    /// Compiles routes text. `file` is only used in diagnostics.
    pub fn compile(
        file: &str,
        text: &str,
        templates_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Pipeline, LoadError> {
        Self::compile_with(file, text, templates_dir, env, Unset::Refuse)
    }

    /// [`Pipeline::compile`] with a policy for unset variables.
    pub fn compile_with(
        file: &str,
        text: &str,
        templates_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        unset: Unset<'_>,
    ) -> Result<Pipeline, LoadError> {
        let mut d = Diagnostics::new(file);
        let mut root = match yaml::parse(text) {
            Ok(n) => n,
            Err(e) => {
                d.error(
                    e.pos.unwrap_or(Pos { line: 1, col: 1 }),
                    syntax_message(&e.message),
                );
                return Err(LoadError {
                    diagnostics: d.into_sorted(),
                });
            }
        };
        env::expand_tree_with(&mut root, env, &|path| stand_in(unset, path), &mut d);
        let pipeline = compile_tree(&root, templates_dir, &mut d);
        let diagnostics = d.clone().into_sorted();
        match pipeline {
            Some(mut p) if !d.has_errors() => {
                p.warnings = diagnostics;
                Ok(p)
            }
            _ => Err(LoadError { diagnostics }),
        }
    }
}

/// Keeps the first line of a parser message, without the position the
/// diagnostic already carries and without advice about parser options.
fn syntax_message(raw: &str) -> String {
    let first = raw.lines().next().unwrap_or(raw);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let first = match first.find(": ") {
        Some(i) if first[..i].starts_with("line ") => &first[i + 2..],
        _ => first,
    };
    let first = first
        .split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or(first);
    format!("YAML syntax error: {first}")
}

fn declared(root_map: &[(Node, Node)], key: &str, type_key: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some((_, node)) = root_map.iter().find(|(k, _)| k.as_str() == Some(key)) else {
        return out;
    };
    if let Value::Map(entries) = &node.value {
        for (k, v) in entries {
            if let Some(name) = k.as_str() {
                let t = match &v.value {
                    Value::Map(fields) => fields
                        .iter()
                        .find(|(fk, _)| fk.as_str() == Some(type_key))
                        .and_then(|(_, fv)| fv.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    _ => String::new(),
                };
                out.insert(name.to_owned(), t);
            }
        }
    }
    out
}

fn compile_tree(root: &Node, templates_dir: &Path, d: &mut Diagnostics) -> Option<Pipeline> {
    let root_entries = match &root.value {
        Value::Map(e) => e.as_slice(),
        Value::Null => &[],
        other => {
            d.error(
                root.pos,
                format!(
                    "routes file must be a mapping with sources, targets and routes, found {}",
                    other.kind()
                ),
            );
            return None;
        }
    };
    let empty = Node {
        pos: root.pos,
        value: Value::Map(Vec::new()),
    };
    let root_node = if root_entries.is_empty() {
        &empty
    } else {
        root
    };
    let mut r = MapReader::new(root_node, "the routes file", d)?;
    if let Some(v) = r.take("version") {
        match &v.value {
            Value::Int(1) => {}
            Value::Str(s) if s == "1" => {}
            _ => d.error(
                v.pos,
                "unsupported version: this clickup-bridge reads version 1 (or leave version out)",
            ),
        }
    }
    let declared = routes::Declared {
        sources: declared(root_entries, "sources", "verify"),
        targets: declared(root_entries, "targets", "type"),
    };
    let sources = sources::compile(r.take("sources"), d);
    let targets = targets::compile(r.take("targets"), d);
    targets::warn_loopback(&targets, d);
    let mut templates = Templates::new();
    let mut ctx = routes::Ctx {
        declared: &declared,
        targets: &targets,
        templates: &mut templates,
        templates_dir,
    };
    let routes = routes::compile(r.take("routes"), &mut ctx, d);
    r.finish(d);
    for s in sources.values() {
        if let Some(w) = &s.watch
            && targets.get(&w.via).map(|t| t.kind.type_name()) != Some("clickup")
            && declared.targets.get(&w.via).map(String::as_str) != Some("clickup")
        {
            d.error(
                s.pos,
                format!(
                    "watch.via of source \"{}\" must name a clickup target, not \"{}\"",
                    s.name, w.via
                ),
            );
        }
    }
    Some(Pipeline {
        sources,
        targets,
        routes,
        templates,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
