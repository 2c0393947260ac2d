//! JSONPath (RFC 9535 through jsonpath-rust), compiled once at load time.

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;
use std::fmt;

/// The longest JSONPath accepted.
pub const MAX_PATH_LEN: usize = 512;

/// The deepest nesting of `[` and `(` accepted (outside quoted strings).
pub const MAX_PATH_NESTING: usize = 8;

/// The deepest nesting of `[` and `(` in `text`, ignoring quoted strings.
fn nesting(text: &str) -> usize {
    let (mut depth, mut max, mut quote) = (0usize, 0usize, None::<char>);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '(') => {
                depth += 1;
                max = max.max(depth);
            }
            (None, ']' | ')') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A compiled JSONPath and its source text.
#[derive(Clone)]
pub struct JsonPath {
    text: String,
    query: JpQuery,
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPath({})", self.text)
    }
}

/// A JSONPath that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid JSONPath \"{path}\": {reason}")]
pub struct JsonPathError {
    /// The text given.
    pub path: String,
    /// What the parser said, first line only.
    pub reason: String,
}

impl JsonPath {
    /// Compiles `text`. Paths must start with `$`.
    pub fn compile(text: &str) -> Result<JsonPath, JsonPathError> {
        let err = |reason: String| JsonPathError {
            path: text.to_owned(),
            reason,
        };
        if !text.starts_with('$') {
            return Err(err("a JSONPath starts with \"$\", e.g. $.event".to_owned()));
        }
        // The parser backtracks: a few unclosed nested filters
        // (`$[?length($[?length(...`) took it seconds per level (found by
        // fuzzing), enough to hang `check` and every reload. Real paths are
        // short and shallow.
        if text.len() > MAX_PATH_LEN {
            return Err(err(format!(
                "longer than {MAX_PATH_LEN} characters; split it into several extracts"
            )));
        }
        if nesting(text) > MAX_PATH_NESTING {
            return Err(err(format!(
                "brackets and parentheses nested deeper than {MAX_PATH_NESTING}; simplify the filter"
            )));
        }
        let query = parse_json_path(text).map_err(|e| err(describe(&e.to_string())))?;
        Ok(JsonPath {
            text: text.to_owned(),
            query,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Every node the path selects in `value` (empty when none).
    pub fn select<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        js_path_process(&self.query, value)
            .map(|refs| refs.into_iter().map(|r| r.val()).collect())
            .unwrap_or_default()
    }

    /// The first node the path selects, if any.
    pub fn first<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.select(value).into_iter().next()
    }
}

/// Turns the parser's multi-line report into one line: where and what.
fn describe(raw: &str) -> String {
    let col = raw
        .lines()
        .find_map(|l| l.split_once("--> ").map(|(_, pos)| pos))
        .and_then(|pos| pos.split(':').nth(1))
        .map(str::trim);
    let expected = raw
        .lines()
        .find_map(|l| l.trim().strip_prefix("= "))
        .map(str::trim);
    match (col, expected) {
        (Some(c), Some(x)) => format!("syntax error at character {c}: {x}"),
        (Some(c), None) => format!("syntax error at character {c}"),
        _ => raw
            .lines()
            .next()
            .unwrap_or("does not parse")
            .trim()
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Found by `cargo fuzz run jsonpath`: unclosed nested filters made the
    /// parser backtrack for over 10 s. Refused at once now; real filters pass.
    #[test]
    fn deeply_nested_paths_are_refused_quickly() {
        let bomb = "$[?length(\nin( $[?length(\nin(  $\r.Z".repeat(6);
        let started = std::time::Instant::now();
        let e = JsonPath::compile(&bomb).unwrap_err().to_string();
        assert!(e.contains("nested deeper than 8"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(JsonPath::compile(&format!("$.{}", "a".repeat(600))).is_err());
        let real = "$.history_items[?(@.field == 'tag' && @.after[0].name == \"[bug(\")].id";
        assert!(JsonPath::compile(real).is_ok(), "{real}");
    }

    #[test]
    fn selects_nodes_and_reports_bad_paths() {
        let v = json!({"history_items": [{"id": "1", "user": {"username": "John"}}, {"id": "2"}], "tags": [{"name": "bug"}]});
        let p = JsonPath::compile("$.history_items[0].user.username").unwrap();
        assert_eq!(p.first(&v), Some(&json!("John")));
        let all = JsonPath::compile("$.history_items[*].id").unwrap();
        assert_eq!(all.select(&v), vec![&json!("1"), &json!("2")]);
        let e = JsonPath::compile("$.a[").unwrap_err().to_string();
        println!("{e}");
        assert!(
            e.starts_with("invalid JSONPath \"$.a[\": syntax error at character 5"),
            "{e}"
        );
        assert!(JsonPath::compile("event").is_err());
        assert!(
            JsonPath::compile("$.nothing")
                .unwrap()
                .select(&v)
                .is_empty()
        );
    }
}
