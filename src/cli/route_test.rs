//! `clickup-bridge test [PATH]`: route test cases, YAML files that each hold
//! an event and what routes.yaml must do with it.
//!
//! ```yaml
//! name: a completed task is announced in Slack   # optional
//! source: clickup
//! event: ../../examples/events/clickup-task-completed.json  # a file, or inline
//! headers: { X-GitHub-Event: issues }    # optional: request headers, for sources
//!                                        # that read the type or id from one
//! task: { name: Ship v2, url: https://app.clickup.com/t/1 } # optional: the enriched task
//! links: { jira_issue: OPS-1 }                               # optional
//! expect:
//!   routes: [task-completed-to-slack, task-audit]   # exactly the routes that match
//!   requests:                                       # optional, per route, in order
//!     - route: task-completed-to-slack
//!       method: POST
//!       url: http://127.0.0.1:9999/slack
//!       headers: { Content-Type: application/json; charset=utf-8 }  # a subset
//!       body: { text: ... }                         # exact; or body_includes: a subset
//! ```

use super::outln;
use crate::pipeline::Pipeline;
use crate::pipeline::reader::{self, MapReader};
use crate::routes_file::diag::Diagnostics;
use crate::routes_file::yaml::{self, Node, Value as Y};
use crate::simulate::{Input, RouteOutcome, simulate};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Every `*.yaml` / `*.yml` under `path` (or `path` itself), sorted.
pub fn case_files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if path.is_file() {
        out.push(path.to_path_buf());
    } else if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(case_files(&p));
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

struct Case {
    name: String,
    source: String,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    task: Option<Value>,
    links: Map<String, Value>,
    routes: Option<Vec<String>>,
    requests: Vec<(Node, Value)>,
}

fn json_or_file(
    node: &Node,
    base: &Path,
    what: &str,
    d: &mut Diagnostics,
) -> Option<(Vec<u8>, Value)> {
    match &node.value {
        Y::Str(p) => {
            let full = base.join(p);
            match std::fs::read(&full) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(v) => Some((bytes, v)),
                    Err(e) => {
                        d.error(
                            node.pos,
                            format!("{what} file {} is not JSON: {e}", full.display()),
                        );
                        None
                    }
                },
                Err(e) => {
                    d.error(
                        node.pos,
                        format!("{what} file {} cannot be read: {e}", full.display()),
                    );
                    None
                }
            }
        }
        Y::Map(_) => {
            let v = node.to_json();
            Some((serde_json::to_vec(&v).unwrap_or_default(), v))
        }
        other => {
            d.error(
                node.pos,
                format!(
                    "{what} must be a file path or a mapping, found {}",
                    other.kind()
                ),
            );
            None
        }
    }
}

fn parse_case(file: &Path, text: &str) -> Result<Case, Vec<String>> {
    let mut d = Diagnostics::new(file.display().to_string());
    let root = match yaml::parse(text) {
        Ok(n) => n,
        Err(e) => {
            let pos = e.pos.unwrap_or_default();
            return Err(vec![format!(
                "{}:{}:{}: YAML syntax error: {}",
                file.display(),
                pos.line,
                pos.col,
                e.message.lines().next().unwrap_or("")
            )]);
        }
    };
    let base = file.parent().unwrap_or(Path::new("."));
    let mut case = Case {
        name: file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source: String::new(),
        body: Vec::new(),
        headers: Vec::new(),
        task: None,
        links: Map::new(),
        routes: None,
        requests: Vec::new(),
    };
    if let Some(mut r) = MapReader::new(&root, "a route test case", &mut d) {
        if let Some(n) = r
            .take("name")
            .and_then(|n| reader::string(n, "name", &mut d))
        {
            case.name = n;
        }
        case.source = r
            .require("source", &mut d)
            .and_then(|n| reader::string(n, "source", &mut d))
            .unwrap_or_default();
        if let Some((bytes, _)) = r
            .require("event", &mut d)
            .and_then(|n| json_or_file(n, base, "event", &mut d))
        {
            case.body = bytes;
        }
        if let Some(n) = r.take("headers") {
            for (k, _, v) in reader::entries(n, "headers", &mut d) {
                if let Some(v) = reader::string(v, "a header value", &mut d) {
                    case.headers.push((k.to_owned(), v));
                }
            }
        }
        case.task = r
            .take("task")
            .and_then(|n| json_or_file(n, base, "task", &mut d))
            .map(|(_, v)| v);
        if let Some(n) = r.take("links") {
            for (k, _, v) in reader::entries(n, "links", &mut d) {
                case.links.insert(k.to_owned(), v.to_json());
            }
        }
        if let Some(e) = r.require("expect", &mut d)
            && let Some(mut x) = MapReader::new(e, "expect", &mut d)
        {
            if let Some(n) = x.take("routes") {
                case.routes = Some(
                    reader::string_or_list(n, "a route name", &mut d)
                        .into_iter()
                        .map(|(s, _)| s)
                        .collect(),
                );
            }
            if let Some(n) = x.take("requests") {
                match &n.value {
                    Y::Seq(items) => {
                        for it in items {
                            if let Some(mut q) = MapReader::new(it, "an expected request", &mut d) {
                                q.require("route", &mut d);
                                for k in
                                    ["method", "url", "headers", "body", "body_includes", "error"]
                                {
                                    q.take(k);
                                }
                                q.finish(&mut d);
                                case.requests.push((it.clone(), it.to_json()));
                            }
                        }
                    }
                    other => d.error(
                        n.pos,
                        format!("requests must be a list, found {}", other.kind()),
                    ),
                }
            }
            x.finish(&mut d);
        }
        r.finish(&mut d);
    }
    if d.has_errors() {
        return Err(d.into_sorted().iter().map(ToString::to_string).collect());
    }
    Ok(case)
}

/// Whether `want` is contained in `got` (objects: every key of `want`
/// present and contained; other values: equal).
pub fn contains(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| g.get(k).is_some_and(|gv| contains(gv, wv))),
        _ => got == want,
    }
}

fn diff(want: &Value, got: &Value) -> String {
    let w = serde_json::to_string_pretty(want).unwrap_or_default() + "\n";
    let g = serde_json::to_string_pretty(got).unwrap_or_default() + "\n";
    similar::TextDiff::from_lines(&w, &g)
        .unified_diff()
        .header("expected", "actual")
        .to_string()
        .lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs one case; the failures, each a readable paragraph.
fn run_case(pipeline: &Pipeline, file: &Path, case: &Case) -> Vec<String> {
    let mut failures = Vec::new();
    let input = Input {
        source: &case.source,
        body: &case.body,
        headers: &case.headers,
        task: case.task.clone(),
        links: case.links.clone(),
        stored: None,
    };
    let result = match simulate(pipeline, &input) {
        Ok(r) => r,
        Err(e) => return vec![format!("the event is refused: {e}")],
    };
    let matched: Vec<String> = result.matched().map(|r| r.route.clone()).collect();
    if let Some(want) = &case.routes {
        let mut w = want.clone();
        let mut g = matched.clone();
        w.sort();
        g.sort();
        if w != g {
            let mut msg =
                format!("matched routes differ:\n      expected {w:?}\n      actual   {g:?}");
            for name in w.iter().filter(|n| !g.contains(n)) {
                let why = result
                    .routes
                    .iter()
                    .find(|r| r.route == *name)
                    .and_then(|r| match &r.outcome {
                        RouteOutcome::NoMatch(reason) => Some(reason.as_str()),
                        RouteOutcome::Matched(_) => None,
                    })
                    .unwrap_or("no such route in routes.yaml");
                msg.push_str(&format!("\n      {name} did not match: {why}"));
            }
            failures.push(msg);
        }
    }
    let mut seen_per_route: std::collections::HashMap<String, usize> =
        std::collections::HashMap::new();
    for (node, want) in &case.requests {
        let route = want["route"].as_str().unwrap_or_default().to_owned();
        let index = seen_per_route.entry(route.clone()).or_insert(0);
        let at = format!("{}:{}:{}", file.display(), node.pos.line, node.pos.col);
        // Each request as shown (secrets masked, as a case is written), or
        // the reason a delivery would be dead.
        let actual: Vec<(Value, Option<String>)> = result
            .routes
            .iter()
            .filter(|r| r.route == route)
            .flat_map(|r| match &r.outcome {
                RouteOutcome::Matched(steps) => steps.as_slice(),
                RouteOutcome::NoMatch(_) => &[],
            })
            .flat_map(|d| match &d.outcome {
                Ok(_) => d.shown().into_iter().map(|q| (q, None)).collect::<Vec<_>>(),
                Err(e) => vec![(Value::Null, Some(e.clone()))],
            })
            .collect();
        let Some((got, err)) = actual.get(*index) else {
            failures.push(format!(
                "{at}: route \"{route}\" sends {} request(s); no request #{} to compare",
                actual.len(),
                *index + 1
            ));
            *index += 1;
            continue;
        };
        *index += 1;
        let n = *index;
        if let Some(expected_err) = want.get("error").and_then(Value::as_str) {
            match err {
                Some(e) if e.contains(expected_err) => {}
                Some(e) => failures.push(format!("{at}: request #{n} of \"{route}\": error \"{e}\" does not contain \"{expected_err}\"")),
                None => failures.push(format!("{at}: request #{n} of \"{route}\": expected an error, the request renders fine")),
            }
            continue;
        }
        if let Some(e) = err {
            failures.push(format!(
                "{at}: request #{n} of \"{route}\" cannot be built: {e}"
            ));
            continue;
        }
        for key in ["method", "url"] {
            if let Some(w) = want.get(key)
                && got.get(key) != Some(w)
            {
                failures.push(format!(
                    "{at}: request #{n} of \"{route}\": {key} is {}, expected {w}",
                    got[key]
                ));
            }
        }
        if let Some(w) = want.get("headers") {
            let lower = |v: &Value| -> Value {
                Value::Object(
                    v.as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            };
            if !contains(&lower(&got["headers"]), &lower(w)) {
                failures.push(format!(
                    "{at}: request #{n} of \"{route}\": headers differ\n{}",
                    diff(w, &got["headers"])
                ));
            }
        }
        if let Some(w) = want.get("body")
            && &got["body"] != w
        {
            failures.push(format!(
                "{at}: request #{n} of \"{route}\": body differs\n{}",
                diff(w, &got["body"])
            ));
        }
        if let Some(w) = want.get("body_includes")
            && !contains(&got["body"], w)
        {
            failures.push(format!(
                "{at}: request #{n} of \"{route}\": body does not include the expected fields\n{}",
                diff(w, &got["body"])
            ));
        }
    }
    failures
}

/// Runs every case under `path`; prints a line per case, the failures, and a
/// summary. Returns (passed, failed).
pub fn run(pipeline: &Pipeline, path: &Path) -> (usize, usize) {
    let files = case_files(path);
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                outln!("FAIL {}: cannot be read: {e}", file.display());
                failed += 1;
                continue;
            }
        };
        match parse_case(file, &text) {
            Err(errors) => {
                outln!("FAIL {}: the case file has errors", file.display());
                for e in errors {
                    outln!("    {e}");
                }
                failed += 1;
            }
            Ok(case) => {
                let failures = run_case(pipeline, file, &case);
                if failures.is_empty() {
                    outln!("ok   {}: {}", file.display(), case.name);
                    passed += 1;
                } else {
                    outln!("FAIL {}: {}", file.display(), case.name);
                    for f in failures {
                        outln!("    {f}");
                    }
                    failed += 1;
                }
            }
        }
    }
    if files.is_empty() {
        outln!("no route test cases under {}", path.display());
    }
    (passed, failed)
}
