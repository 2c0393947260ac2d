//! Table tests of every operator, matching and not matching.
use super::*;
use crate::pipeline::Pipeline;
use serde_json::json;

fn route_with(when: &str) -> Route {
    let text = format!(
        "sources:\n  clickup: {{verify: clickup, secret: s}}\ntargets:\n  t: {{type: http, url: 'http://127.0.0.1:1/x'}}\nroutes:\n  - name: r\n    source: clickup\n    when:\n{when}\n    send:\n      - target: t\n        body: {{}}\n"
    );
    let p = Pipeline::compile(
        "routes.yaml",
        &text,
        std::path::Path::new("/nonexistent"),
        &|_| None,
    )
    .unwrap_or_else(|e| panic!("{e}\n{text}"));
    p.routes.into_iter().next().unwrap()
}

fn payload() -> Value {
    json!({
        "event": "taskStatusUpdated",
        "task_id": "1vj38vv",
        "priority": "2",
        "date": "1642736073330",
        "points": 5,
        "tags": [{"name": "bug"}, {"name": "ui"}],
        "labels": ["a", "b"],
        "title": "Fix the login page",
        "history_items": [{"after": {"status": "complete"}, "user": {"id": 183, "username": "John"}}],
        "nothing": null
    })
}

#[test]
fn each_operator_matches_and_does_not_match() {
    // (when-match entry, holds?)
    let cases: &[(&str, bool)] = &[
        ("$.history_items[0].after.status: complete", true),
        ("$.history_items[0].after.status: open", false),
        ("$.points: 5", true),
        ("$.priority: 2", true),
        ("$.history_items[0].user.id: '183'", true),
        ("$.task_id: { equals: 1vj38vv }", true),
        ("$.task_id: { equals: other }", false),
        ("$.task_id: { not_equals: other }", true),
        ("$.task_id: { not_equals: 1vj38vv }", false),
        ("$.missing: { not_equals: x }", true),
        (
            "$.history_items[0].after.status: { in: [closed, complete] }",
            true,
        ),
        (
            "$.history_items[0].after.status: { in: [closed, open] }",
            false,
        ),
        ("$.title: { regex: '^Fix' }", true),
        ("$.title: { regex: '^Break' }", false),
        ("$.points: { regex: '^5$' }", true),
        ("$.task_id: { exists: true }", true),
        ("$.missing: { exists: true }", false),
        ("$.missing: { exists: false }", true),
        ("$.task_id: { exists: false }", false),
        ("$.title: { contains: login }", true),
        ("$.title: { contains: logout }", false),
        ("$.labels: { contains: b }", true),
        ("$.labels: { contains: c }", false),
        ("$.points: { gt: 4 }", true),
        ("$.points: { gt: 5 }", false),
        ("$.points: { gte: 5 }", true),
        ("$.points: { lt: 5 }", false),
        ("$.points: { lte: 5 }", true),
        ("$.date: { gt: 1642736073000 }", true),
        ("$.date: { lt: 1642736073000 }", false),
        ("$.title: { gt: 1 }", false),
        ("$.missing: { gt: 1 }", false),
        ("$.missing: x", false),
        ("$.missing: { contains: x }", false),
        ("$.tags[*].name: bug", true),
        ("$.tags[*].name: feature", false),
        ("$.tags[*].name: { not_equals: bug }", true),
        ("$.nothing: { exists: true }", true),
        ("$.points: { gt: 1, lt: 10 }", true),
        ("$.points: { gt: 1, lt: 3 }", false),
    ];
    for (entry, want) in cases {
        let route = route_with(&format!("      match:\n        {entry}"));
        let got = matches_event(&route, "clickup", "taskStatusUpdated", &payload());
        assert_eq!(got.is_ok(), *want, "{entry}: {got:?}");
    }
}

#[test]
fn event_names_exact_list_and_glob() {
    let cases: &[(&str, &str, bool)] = &[
        ("taskCreated", "taskCreated", true),
        ("taskCreated", "taskUpdated", false),
        ("[taskCreated, taskDeleted]", "taskDeleted", true),
        ("[taskCreated, taskDeleted]", "taskMoved", false),
        ("'task*'", "taskStatusUpdated", true),
        ("'task*'", "listCreated", false),
        ("'task?oved'", "taskMoved", true),
        ("'*Updated'", "taskUpdated", true),
        ("'*Updated'", "taskCreated", false),
    ];
    for (pattern, event, want) in cases {
        let route = route_with(&format!("      event: {pattern}"));
        let got = matches_event(&route, "clickup", event, &payload());
        assert_eq!(got.is_ok(), *want, "{pattern} vs {event}");
    }
}

#[test]
fn any_holds_when_one_group_holds() {
    let route =
        route_with("      any:\n        - $.points: 1\n        - $.title: { contains: login }");
    assert!(matches_event(&route, "clickup", "x", &payload()).is_ok());
    let route =
        route_with("      any:\n        - $.points: 1\n        - $.title: { contains: nope }");
    let err = matches_event(&route, "clickup", "x", &payload()).unwrap_err();
    assert!(
        err.reason.starts_with("no entry of when.any holds"),
        "{err:?}"
    );
}

#[test]
fn a_mismatch_names_the_condition_and_what_was_found() {
    let route = route_with("      match:\n        $.history_items[0].after.status: open");
    let err = matches_event(&route, "clickup", "x", &payload()).unwrap_err();
    assert_eq!(
        err.reason,
        "$.history_items[0].after.status equals \"open\" does not hold (line 10): found \"complete\""
    );
}

#[test]
fn extract_gives_values_arrays_and_leaves_missing_names_out() {
    let text = "sources:\n  clickup: {verify: clickup, secret: s}\ntargets:\n  t: {type: http, url: 'http://127.0.0.1:1/x'}\nroutes:\n  - name: r\n    source: clickup\n    extract:\n      by: $.history_items[0].user.username\n      tags: $.tags[*].name\n      gone: $.missing\n    send:\n      - target: t\n        body: {}\n";
    let p = Pipeline::compile("r.yaml", text, std::path::Path::new("/x"), &|_| None).unwrap();
    let values = extract(&p.routes[0], &payload());
    assert_eq!(
        Value::Object(values),
        json!({"by": "John", "tags": ["bug", "ui"]})
    );
}
