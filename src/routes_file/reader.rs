//! Small typed readers over the node tree that record a diagnostic instead of
//! stopping, so the compiler reports every problem in one pass.

use crate::routes_file::diag::{Diagnostics, suggestion};
use crate::routes_file::yaml::{Node, Pos, Value};

/// Reads the keys of one mapping, remembering which were asked for so that
/// [`MapReader::finish`] can report the rest as unknown, with the nearest
/// known key as a suggestion.
pub struct MapReader<'a> {
    pos: Pos,
    entries: &'a [(Node, Node)],
    used: Vec<bool>,
    asked: Vec<&'static str>,
    what: String,
}

impl<'a> MapReader<'a> {
    /// Opens `node` as a mapping; records an error and returns `None` when it
    /// is not one. `what` names it in messages ("route \"x\"").
    pub fn new(node: &'a Node, what: &str, d: &mut Diagnostics) -> Option<Self> {
        match &node.value {
            Value::Map(entries) => Some(MapReader {
                pos: node.pos,
                entries,
                used: vec![false; entries.len()],
                asked: Vec::new(),
                what: what.to_owned(),
            }),
            other => {
                d.error(
                    node.pos,
                    format!("{what} must be a mapping, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// Where the mapping starts.
    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// Renames the mapping in later messages (once a route's name is known).
    pub fn set_what(&mut self, what: String) {
        self.what = what;
    }

    /// The value of `key`, if present.
    pub fn take(&mut self, key: &'static str) -> Option<&'a Node> {
        if !self.asked.contains(&key) {
            self.asked.push(key);
        }
        let entries = self.entries;
        for (i, (k, v)) in entries.iter().enumerate() {
            if k.as_str() == Some(key) {
                self.used[i] = true;
                return Some(v);
            }
        }
        None
    }

    /// Declares keys this mapping accepts without reading them yet, so that
    /// an unknown key is reported with the whole list (and the nearest one)
    /// even when a branch never asks for some of them.
    pub fn know(&mut self, keys: &[&'static str]) {
        for k in keys {
            if !self.asked.contains(k) {
                self.asked.push(k);
            }
        }
    }

    /// Whether some key of the mapping is a misspelling of `key` (it is not
    /// `key` and `key` is its nearest known name). A check that `key` is
    /// missing would then only repeat the unknown-key error.
    pub fn misspelled(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| {
            k.as_str().is_some_and(|name| {
                name != key
                    && !self.asked.contains(&name)
                    && crate::routes_file::diag::nearest(name, self.asked.iter().copied())
                        == Some(key)
            })
        })
    }

    /// The position of `key` itself, if present.
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, _)| k.pos)
    }

    /// The value of a required `key`; records "missing" when absent.
    pub fn require(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<&'a Node> {
        let v = self.take(key);
        if v.is_none() {
            d.error(
                self.pos,
                format!("{} is missing the required key \"{key}\"", self.what),
            );
        }
        v
    }

    /// Reports every key that was never asked for.
    pub fn finish(self, d: &mut Diagnostics) {
        for (i, (k, _)) in self.entries.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            let name = k.scalar_text().unwrap_or_else(|| "?".to_owned());
            let hint = suggestion(&name, &self.asked, "keys");
            d.error(
                k.pos,
                format!("unknown key \"{name}\" in {}{hint}", self.what),
            );
        }
    }
}

/// The mapping entries of `node` with string keys, recording an error for a
/// node that is not a mapping.
pub fn entries<'a>(
    node: &'a Node,
    what: &str,
    d: &mut Diagnostics,
) -> Vec<(&'a str, &'a Node, &'a Node)> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .filter_map(|(k, v)| match k.as_str() {
                Some(s) => Some((s, k, v)),
                None => {
                    d.error(k.pos, format!("keys of {what} must be strings"));
                    None
                }
            })
            .collect(),
        Value::Null => Vec::new(),
        other => {
            d.error(
                node.pos,
                format!("{what} must be a mapping, found {}", other.kind()),
            );
            Vec::new()
        }
    }
}

/// A string value (numbers and booleans are taken as their text).
pub fn string(node: &Node, what: &str, d: &mut Diagnostics) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(_) | Value::Bool(_) => node.scalar_text(),
        // YAML read it as a decimal number: its text may already be changed
        // (1e3, 12345678901234567890), so ask for quotes instead of guessing.
        Value::Float(_) => {
            d.error(
                node.pos,
                format!("{what} looks like a number to YAML: put it in quotes"),
            );
            None
        }
        other => {
            d.error(
                node.pos,
                format!("{what} must be a string, found {}", other.kind()),
            );
            None
        }
    }
}

/// One string or a list of strings.
pub fn string_or_list(node: &Node, what: &str, d: &mut Diagnostics) -> Vec<(String, Pos)> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .filter_map(|n| string(n, what, d).map(|s| (s, n.pos)))
            .collect(),
        _ => string(node, what, d)
            .map(|s| (s, node.pos))
            .into_iter()
            .collect(),
    }
}

/// A number (a string holding a number is accepted: `${TIMEOUT:-10}`).
pub fn number(node: &Node, what: &str, d: &mut Diagnostics) -> Option<f64> {
    let n = match &node.value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Str(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n.is_finite() && n >= 0.0 => Some(n),
        _ => {
            d.error(
                node.pos,
                format!(
                    "{what} must be a non-negative number, found {}",
                    node.value.kind()
                ),
            );
            None
        }
    }
}

/// A whole number of at least `min`.
pub fn whole(node: &Node, what: &str, min: u64, d: &mut Diagnostics) -> Option<u64> {
    let n = number(node, what, d)?;
    if n.fract() != 0.0 || n < min as f64 {
        d.error(
            node.pos,
            format!("{what} must be a whole number of at least {min}"),
        );
        return None;
    }
    Some(n as u64)
}

/// A boolean (`true`/`false`, or the strings "true"/"false").
pub fn boolean(node: &Node, what: &str, d: &mut Diagnostics) -> Option<bool> {
    match &node.value {
        Value::Bool(b) => Some(*b),
        Value::Str(s) if s == "true" => Some(true),
        Value::Str(s) if s == "false" => Some(false),
        other => {
            d.error(
                node.pos,
                format!("{what} must be true or false, found {}", other.kind()),
            );
            None
        }
    }
}

/// Checks that a name is usable in URLs and templates: letters, digits, `-`, `_`.
pub fn check_name(name: &str, pos: Pos, what: &str, d: &mut Diagnostics) -> bool {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        d.error(
            pos,
            format!("{what} \"{name}\" may only use letters, digits, '-', '_' and '.'"),
        );
    }
    ok
}
