//! `${VAR}` and `${VAR:-default}` expansion on string values.
//!
//! Expansion runs on the parsed tree, never on the raw text, so a secret that
//! contains `#`, `: ` or a newline stays one string value and cannot change the
//! structure of the file. `$${` gives a literal `${`.

use super::diag::Diagnostics;
use super::yaml::{Node, Value};

/// Replaces every `${VAR}` in every string value and mapping key of `node`,
/// using `lookup` for the environment. Missing variables without a default are
/// reported at the string's position, all of them.
pub fn expand_tree(
    node: &mut Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
) {
    expand_tree_with(node, lookup, &|_| None, diags);
}

/// A stand-in for unset variables at a place in the file, given as the path
/// of mapping keys to it (`["sources", "stripe", "secret"]`; `"[]"` for a
/// list item). Offline tools that never use a value (`simulate` never
/// verifies a signature) pass one, so they run without that secret.
pub type StandIn<'a> = dyn Fn(&[&str]) -> Option<&'static str> + 'a;

/// [`expand_tree`], where a variable that is not set and has no default is
/// replaced by `stand_in`'s value for that place, when it gives one.
pub fn expand_tree_with(
    node: &mut Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    stand_in: &StandIn<'_>,
    diags: &mut Diagnostics,
) {
    let mut path = Vec::new();
    walk(node, &mut path, lookup, stand_in, diags);
}

fn walk(
    node: &mut Node,
    path: &mut Vec<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
    stand_in: &StandIn<'_>,
    diags: &mut Diagnostics,
) {
    match &mut node.value {
        Value::Str(s) => {
            if s.contains('$') {
                let keys: Vec<&str> = path.iter().map(String::as_str).collect();
                let fill = stand_in(&keys);
                let lookup = |name: &str| lookup(name).or_else(|| fill.map(str::to_owned));
                match expand(s, &lookup) {
                    Ok(v) => *s = v,
                    Err(errors) => {
                        for e in errors {
                            diags.error(node.pos, e);
                        }
                    }
                }
            }
        }
        Value::Seq(items) => {
            path.push("[]".to_owned());
            for n in items.iter_mut() {
                walk(n, path, lookup, stand_in, diags);
            }
            path.pop();
        }
        Value::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                path.push(k.scalar_text().unwrap_or_default());
                walk(v, path, lookup, stand_in, diags);
                path.pop();
            }
        }
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) => {}
    }
}

/// Expands one string. Returns every problem found in it.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(s.len());
    let mut errors = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(lit) = after.strip_prefix("${") {
            out.push_str("${");
            rest = lit;
            continue;
        }
        let Some(inner_start) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = inner_start.find('}') else {
            errors.push(
                "unclosed \"${\": write ${NAME} or ${NAME:-default} (or $${ for a literal)"
                    .to_owned(),
            );
            rest = "";
            break;
        };
        let inner = &inner_start[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            errors.push(format!(
                "\"${{{inner}}}\" is not a valid variable reference: names use letters, digits and _"
            ));
        } else {
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => errors.push(format!(
                    "environment variable {name} is not set; set it, or write ${{{name}:-default}}"
                )),
            }
        }
        rest = &inner_start[end + 1..];
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "HASH" => Some("x # y: z".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("plain", Ok("plain")),
            ("${A}", Ok("alpha")),
            ("pre-${A}-post", Ok("pre-alpha-post")),
            ("${HASH}", Ok("x # y: z")),
            ("${MISSING:-fallback}", Ok("fallback")),
            ("${MISSING:-}", Ok("")),
            ("${EMPTY:-d}", Ok("")),
            ("cost $5", Ok("cost $5")),
            ("$${A}", Ok("${A}")),
            ("${MISSING}", Err("environment variable MISSING is not set")),
            ("${A", Err("unclosed")),
            ("${1X}", Err("not a valid variable")),
        ];
        for (input, want) in cases {
            let got = expand(input, &env);
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(&g, w, "{input}"),
                (Err(w), Err(g)) => assert!(g[0].contains(w), "{input}: {g:?}"),
                (w, g) => panic!("{input}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn every_missing_variable_is_reported() {
        let errs = expand("${X} and ${Y}", &env).unwrap_err();
        assert_eq!(errs.len(), 2);
    }
}
