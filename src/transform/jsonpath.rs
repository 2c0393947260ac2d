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
        let query = parse_json_path(text).map_err(|e| {
            let msg = e.to_string();
            err(msg
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("does not parse")
                .trim()
                .to_owned())
        })?;
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
        assert!(JsonPath::compile("$.a[").is_err());
        assert!(JsonPath::compile("event").is_err());
        assert!(JsonPath::compile("$.nothing").unwrap().select(&v).is_empty());
    }
}
