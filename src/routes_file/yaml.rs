//! A YAML document as a tree of nodes that each remember their line and
//! column, so every later diagnostic can point at the exact spot.
//!
//! serde-saphyr does the parsing (duplicate keys, alias bombs and syntax errors
//! are its job); this module only captures its `Spanned` locations into a
//! small tree that the compiler walks by hand, which lets it report every
//! problem at once instead of stopping at the first like a derived
//! `Deserialize` would.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

/// A 1-based position in the YAML text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line number, starting at 1.
    pub line: u64,
    /// Column number, starting at 1.
    pub col: u64,
}

/// One YAML node and where it stands in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it holds.
    pub value: Value,
}

/// The value of a node. Mappings keep their order and their keys' positions.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating point number.
    Float(f64),
    /// A string (after `${VAR}` expansion once [`crate::routes_file::env`] ran).
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// A short name of the kind of value, for "expected a string, found a list".
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The string this node holds, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A scalar rendered as text (numbers and booleans too), for keys and
    /// values where YAML's typing is an accident (`team_id: 9012345`).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// Converts the node into JSON (string leaves stay strings).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: s.referenced.line(),
        col: s.referenced.column(),
    }
}

impl From<Spanned<Value>> for Node {
    fn from(s: Spanned<Value>) -> Self {
        let pos = pos_of(&s);
        Node {
            pos,
            value: s.value,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Spanned::<Value>::deserialize(d).map(Node::from)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        match i64::try_from(v) {
            Ok(i) => Ok(Value::Int(i)),
            Err(_) => Ok(Value::Float(v as f64)),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// A YAML syntax error with its position when the parser knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    /// Where, when known.
    pub pos: Option<Pos>,
    /// What the parser said.
    pub message: String,
}

/// Parses YAML text into a [`Node`] tree.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    if text.trim().is_empty() {
        return Ok(Node {
            pos: Pos { line: 1, col: 1 },
            value: Value::Null,
        });
    }
    // YAML 1.2 booleans only: `n`, `y`, `on` and `off` stay strings (a key
    // named `n` must not turn into `false`); ids such as 0123 stay strings.
    let options = serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
    };
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|e| {
        let pos = e.location().map(|l| Pos {
            line: l.line(),
            col: l.column(),
        });
        let message = e.to_string();
        match pos.and_then(|p| locate_mistake(text, p, &message)) {
            Some((pos, message)) => SyntaxError {
                pos: Some(pos),
                message,
            },
            None => SyntaxError { pos, message },
        }
    })
}

/// The parser reports where it noticed a problem, which for the two most
/// common slips is the line after the mistake: a `[` or `{` never closed,
/// and a key without its `:` before an indented block. Point at the mistake
/// itself, and keep where the parser noticed it.
fn locate_mistake(text: &str, at: Pos, message: &str) -> Option<(Pos, String)> {
    if let Some((open, opened)) = unclosed_bracket(text, at)
        && opened.line < at.line
    {
        let close = if open == '[' { ']' } else { '}' };
        return Some((
            opened,
            format!(
                "this \"{open}\" is never closed: add \"{close}\" (the parser noticed at line {})",
                at.line
            ),
        ));
    }
    let at_line = usize::try_from(at.line).ok()?;
    if message.contains("mapping values are not allowed") && at_line >= 2 {
        let lines: Vec<&str> = text.lines().collect();
        let here = lines.get(at_line - 1)?;
        let (n, prev) = lines[..at_line - 1]
            .iter()
            .enumerate()
            .rev()
            .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))?;
        let indent = |l: &str| l.len() - l.trim_start().len();
        let key = prev.trim().trim_start_matches("- ").trim();
        if !prev.contains(':') && indent(prev) < indent(here) && !key.is_empty() {
            return Some((
                Pos {
                    line: num(n + 1),
                    col: num(prev.trim_end().len() + 1),
                },
                format!(
                    "missing \":\" after \"{key}\" (the parser noticed at line {})",
                    at.line
                ),
            ));
        }
    }
    None
}

fn num(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The innermost flow bracket still open at `at`, outside quotes and
/// comments.
fn unclosed_bracket(text: &str, at: Pos) -> Option<(char, Pos)> {
    let mut open: Vec<(char, Pos)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = num(i + 1);
        if line_no > at.line {
            break;
        }
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        let mut escaped = false;
        for (j, c) in line.chars().enumerate() {
            let col = num(j + 1);
            if line_no == at.line && col >= at.col {
                break;
            }
            match quote {
                Some('"') if escaped => escaped = false,
                Some('"') if c == '\\' => escaped = true,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '#' if prev.is_whitespace() => break,
                    '"' | '\'' => quote = Some(c),
                    '[' | '{' => open.push((c, Pos { line: line_no, col })),
                    ']' | '}' => {
                        open.pop();
                    }
                    _ => {}
                },
            }
            prev = c;
        }
    }
    open.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syntax error is reported where the mistake is, not on the line
    /// after, where the parser noticed it.
    #[test]
    fn syntax_errors_point_at_the_mistake() {
        let cases = [
            (
                "a: [1, 2\nb: 3\n",
                (1, 4),
                "this \"[\" is never closed: add \"]\" (the parser noticed at line 2)",
            ),
            (
                "routes:\n  - name: a\n    when: {event: x\n    send: []\n",
                (3, 11),
                "this \"{\" is never closed: add \"}\" (the parser noticed at line 4)",
            ),
            (
                "sources:\n  clickup\n    verify: clickup\n",
                (2, 10),
                "missing \":\" after \"clickup\" (the parser noticed at line 3)",
            ),
        ];
        for (text, (line, col), message) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.pos, Some(Pos { line, col }), "{text}");
            assert_eq!(e.message, message, "{text}");
        }
        // A quote that is never closed is already reported where it opens.
        let e = parse("a:\n  b: \"x\nc: 1\n").unwrap_err();
        assert_eq!(e.pos.map(|p| p.line), Some(2));
    }

    #[test]
    fn keys_and_values_keep_their_positions() {
        let n = parse("a: 1\nb:\n  - x\n  - {c: d}\n").unwrap();
        let Value::Map(entries) = &n.value else {
            panic!("not a map: {n:?}")
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, col: 4 });
        assert_eq!(entries[1].0.pos, Pos { line: 2, col: 1 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(items[0].pos, Pos { line: 3, col: 5 });
        assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
        println!("{n:?}");
    }

    #[test]
    fn only_yaml_1_2_booleans_are_booleans() {
        let n = parse("n: y\non: off\nt: true\nid: 0123\n").unwrap();
        let Value::Map(e) = &n.value else { panic!() };
        assert_eq!(e[0].0.value, Value::Str("n".into()));
        assert_eq!(e[0].1.value, Value::Str("y".into()));
        assert_eq!(e[1].1.value, Value::Str("off".into()));
        assert_eq!(e[2].1.value, Value::Bool(true));
        assert_eq!(e[3].1.value, Value::Str("0123".into()));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = parse("a: [1, 2\nb: c\n").unwrap_err();
        println!("{e:?}");
        assert!(e.pos.is_some());
        let e = parse("a: 1\na: 2\n").unwrap_err();
        println!("{e:?}");
    }
}
