//! JSONPath (RFC 9535 through jsonpath-rust), compiled once at load time.

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;
use std::fmt;

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
