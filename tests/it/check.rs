//! `clickup-bridge check`: one case per diagnostic kind, exact output.

use crate::support::bin;
use std::process::Command;

/// Runs `check --routes routes.yaml` in a fresh folder holding `routes` (and a
/// templates folder with `bad.hbs` and `ok.hbs`), with only `env` set.
fn check(routes: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/bad.hbs"),
        "{\"text\": \"{{#if x}}\"}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("templates/ok.hbs"),
        "{\"text\": \"{{json x}}\"}",
    )
    .unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["check", "--routes", "routes.yaml"])
        .current_dir(dir.path())
        .env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

const HEAD: &str = "\
sources:
  clickup:
    verify: clickup
    secret: s
targets:
  team-slack:
    type: slack
    webhook_url: https://hooks.slack.com/services/T0/B0/X
";

fn with_route(route: &str) -> String {
    format!("{HEAD}routes:\n{route}")
}

#[test]
fn a_valid_file_prints_a_one_line_summary_and_exits_zero() {
    let text = with_route(
        "  - name: r\n    source: clickup\n    send:\n      - target: team-slack\n        text: hi {{event.task_id}}\n",
    );
    assert_eq!(
        check(&text, &[]),
        (
            0,
            "routes.yaml: ok: 1 sources, 1 targets, 1 routes\n".into()
        )
    );
}

#[test]
fn yaml_syntax_errors_point_at_the_spot() {
    // The parser notices the unclosed "[" on line 3; the mistake is on 2.
    let text = "sources:\n  clickup: [verify: clickup\nroutes: []\n";
    assert_eq!(
        check(text, &[]),
        (1, "routes.yaml:2:12: YAML syntax error: this \"[\" is never closed: add \"]\" (the parser noticed at line 3)\nroutes.yaml: 1 error\n".into())
    );
    let text = "sources:\n  clickup\n    verify: clickup\n";
    assert_eq!(
        check(text, &[]),
        (1, "routes.yaml:2:10: YAML syntax error: missing \":\" after \"clickup\" (the parser noticed at line 3)\nroutes.yaml: 1 error\n".into())
    );
}

#[test]
fn an_unknown_key_in_a_target_lists_that_types_keys_and_the_nearest() {
    let text = "sources: {}\ntargets:\n  s:\n    type: slack\n    webhok_url: https://hooks.slack.com/x\n  j:\n    type: jira\n    base_url: https://x.atlassian.net\n    token: t\n    projekt: OPS\nroutes: []\n";
    assert_eq!(
        check(text, &[]),
        (1, "routes.yaml:5:5: unknown key \"webhok_url\" in target \"s\"; did you mean \"webhook_url\"?\n\
routes.yaml:10:5: unknown key \"projekt\" in target \"j\"; known keys: type, allow_http, base_url, email, api_token, token, timeout, rate_limit, concurrency, retry\n\
routes.yaml: 2 errors\n".into())
    );
    // Without a misspelling, the missing key itself is the error.
    let text = "sources: {}\ntargets:\n  s:\n    type: slack\n    channel: C1\nroutes: []\n";
    let (code, out) = check(text, &[]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with(
            "routes.yaml:4:5: slack target \"s\" needs webhook_url, or token and channel\n"
        ),
        "{out}"
    );
}

#[test]
fn an_event_clickup_never_sends_is_a_warning_naming_the_real_one() {
    let text = with_route(
        "  - name: r\n    source: clickup\n    when: {event: [taskStatusUpdate, \"task*\", \"zzz*\"]}\n    send:\n      - target: team-slack\n        text: hi\n",
    );
    assert_eq!(
        check(&text, &[]),
        (0, "routes.yaml:12:20: warning: ClickUp never sends the event \"taskStatusUpdate\", so this route would not fire; did you mean \"taskStatusUpdated\"?\n\
routes.yaml:12:47: warning: ClickUp never sends the event \"zzz*\", so this route would not fire; known events: taskCreated, taskUpdated, taskDeleted, taskPriorityUpdated, taskStatusUpdated, taskAssigneeUpdated, taskDueDateUpdated, taskTagUpdated, taskMoved, taskCommentPosted, taskCommentUpdated, taskTimeEstimateUpdated, taskTimeTrackedUpdated, listCreated, listUpdated, listDeleted, folderCreated, folderUpdated, folderDeleted, spaceCreated, spaceUpdated, spaceDeleted, goalCreated, goalUpdated, goalDeleted, keyResultCreated, keyResultUpdated, keyResultDeleted\n\
routes.yaml: ok: 1 sources, 1 targets, 1 routes, 2 warnings\n".into())
    );
}

#[test]
fn a_target_on_this_machine_is_a_warning() {
    let text = "sources: {}\ntargets:\n  sink:\n    type: http\n    url: http://127.0.0.1:9999/audit\n  real:\n    type: http\n    url: https://audit.example.com/in\nroutes: []\n";
    assert_eq!(
        check(text, &[]),
        (0, "routes.yaml:4:5: warning: target \"sink\" sends to this machine (http://127.0.0.1:9999): right for a local sink or test server, wrong in production; set its URL to the real service\n\
routes.yaml: ok: 0 sources, 2 targets, 0 routes, 1 warning\n".into())
    );
}

#[test]
fn duplicate_keys_are_syntax_errors() {
    let text = "sources: {}\nsources: {}\n";
    assert_eq!(
        check(text, &[]),
        (1, "routes.yaml:2:1: YAML syntax error: duplicate mapping key: sources\nroutes.yaml: 1 error\n".into())
    );
}

#[test]
fn unknown_keys_suggest_the_nearest_known_one() {
    let text = with_route(
        "  - name: r\n    source: clickup\n    whenn: {}\n    send:\n      - target: team-slack\n        text: hi\n",
    );
    assert_eq!(
        check(&text, &[]),
        (1, "routes.yaml:12:5: unknown key \"whenn\" in route \"r\"; did you mean \"when\"?\nroutes.yaml: 1 error\n".into())
    );
}

#[test]
fn unknown_sources_and_targets_are_named_with_suggestions() {
    let text = with_route(
        "  - name: r\n    source: clikup\n    send:\n      - target: team-slak\n        text: hi\n",
    );
    assert_eq!(
        check(&text, &[]),
        (
            1,
            "routes.yaml:11:13: unknown source \"clikup\"; did you mean \"clickup\"?\n\
             routes.yaml:13:17: unknown target \"team-slak\"; did you mean \"team-slack\"?\n\
             routes.yaml: 2 errors\n"
                .into()
        )
    );
}

#[test]
fn bad_jsonpaths_are_reported_where_written() {
    let text = with_route(
        "  - name: r\n    source: clickup\n    extract:\n      by: $.history_items[0\n    send:\n      - target: team-slack\n        text: hi\n",
    );
    assert_eq!(
        check(&text, &[]),
        (
            1,
            "routes.yaml:13:11: invalid JSONPath \"$.history_items[0\": syntax error at character 17: expected wildcard_selector, slice_selector, or string\nroutes.yaml: 1 error\n".into()
        )
    );
    let text = with_route(
        "  - name: r\n    source: clickup\n    when:\n      match:\n        history_items: x\n    send:\n      - target: team-slack\n        text: hi\n",
    );
    let (_, out) = check(&text, &[]);
    assert!(
        out.starts_with("routes.yaml:14:9: invalid JSONPath \"history_items\": a JSONPath starts with \"$\", e.g. $.event\n"),
        "{out}"
    );
}

#[test]
fn yaml_1_1_boolean_spellings_stay_strings() {
    let text = with_route(
        "  - name: r\n    source: clickup\n    extract:\n      n: $.task_id\n      y: $.event\n    send:\n      - target: team-slack\n        text: \"{{n}} {{y}}\"\n",
    );
    assert_eq!(check(&text, &[]).0, 0);
}

#[test]
fn templates_that_do_not_compile_are_reported() {
    let text = with_route(
        "  - name: r\n    source: clickup\n    send:\n      - target: team-slack\n        text: \"paid {{moneyy amount currency}}\"\n",
    );
    assert_eq!(
        check(&text, &[]),
        (
            1,
            "routes.yaml:14:15: template error: helper \"moneyy\" not found; did you mean \"money\"?\nroutes.yaml: 1 error\n".into()
        )
    );
    let text = with_route(
        "  - name: r\n    source: clickup\n    send:\n      - target: team-slack\n        text: \"{{#if x}}open\"\n",
    );
    assert_eq!(
        check(&text, &[]),
        (
            1,
            "routes.yaml:14:15: template error at template line 1, column 14: invalid handlebars syntax (an unclosed or malformed {{...}} or block)\nroutes.yaml: 1 error\n".into()
        )
    );
}

#[test]
fn template_files_are_read_and_compiled() {
    let text = with_route(
        "  - name: r\n    source: clickup\n    send:\n      - target: team-slack\n        template: bad.hbs\n",
    );
    let (code, out) = check(&text, &[]);
    assert_eq!(code, 1);
    assert!(out.starts_with("routes.yaml:14:19: "), "{out}");
    assert!(out.contains("bad.hbs: template error"), "{out}");
    let text = with_route(
        "  - name: r\n    source: clickup\n    send:\n      - target: team-slack\n        template: nope.hbs\n",
    );
    let (_, out) = check(&text, &[]);
    assert!(
        out.starts_with("routes.yaml:14:19: template file "),
        "{out}"
    );
    assert!(out.contains("nope.hbs cannot be read"), "{out}");
    let text = with_route(
        "  - name: r\n    source: clickup\n    send:\n      - target: team-slack\n        template: ok.hbs\n",
    );
    assert_eq!(check(&text, &[]).0, 0);
}

#[test]
fn missing_environment_variables_are_named_and_defaults_apply() {
    let text = "sources:\n  clickup:\n    verify: clickup\n    secret: ${CLICKUP_WEBHOOK_SECRET}\n  other:\n    verify: clickup\n    secret: ${OTHER_SECRET:-fallback}\n";
    assert_eq!(
        check(text, &[]),
        (
            1,
            "routes.yaml:4:13: environment variable CLICKUP_WEBHOOK_SECRET is not set; set it, or write ${CLICKUP_WEBHOOK_SECRET:-default}\nroutes.yaml: 1 error\n".into()
        )
    );
    assert_eq!(
        check(text, &[("CLICKUP_WEBHOOK_SECRET", "x # y: z")]),
        (
            0,
            "routes.yaml: ok: 2 sources, 0 targets, 0 routes\n".into()
        )
    );
}

#[test]
fn wrong_types_and_values_say_what_would_be_right() {
    let text = "sources:\n  clickup:\n    verify: clickupp\n    secret: s\ntargets:\n  t:\n    type: slack\n    webhook_url: not-a-url\n    rate_limit: fast\n    timeout: [1]\n";
    assert_eq!(
        check(text, &[]),
        (
            1,
            "routes.yaml:3:13: unknown verify kind \"clickupp\"; did you mean \"clickup\"? (clickup, stripe, hmac, standard-webhooks or header)\n\
             routes.yaml:8:18: webhook_url must be an absolute http:// or https:// URL\n\
             routes.yaml:9:17: rate_limit \"fast\" is not N/s or N/min (e.g. 1/s, 100/min)\n\
             routes.yaml:10:14: timeout must be a non-negative number, found a list\n\
             routes.yaml: 4 errors\n"
                .into()
        )
    );
}

#[test]
fn a_secret_that_yaml_reads_as_a_decimal_number_must_be_quoted() {
    let text = "sources:\n  clickup:\n    verify: clickup\n    secret: 12345678901234567890123\n";
    assert_eq!(
        check(text, &[]),
        (1, "routes.yaml:4:13: secret looks like a number to YAML: put it in quotes\nroutes.yaml: 1 error\n".into())
    );
}

#[test]
fn unknown_operators_and_bad_regexes_are_reported() {
    let text = with_route(
        "  - name: r\n    source: clickup\n    when:\n      match:\n        $.event: { equal: x }\n        $.task_id: { regex: \"(\" }\n    send:\n      - target: team-slack\n        text: hi\n",
    );
    let (code, out) = check(&text, &[]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "routes.yaml:14:20: unknown operator \"equal\"; did you mean \"equals\"?"
    );
    assert!(
        lines[1].starts_with("routes.yaml:15:29: invalid regex \"(\""),
        "{out}"
    );
}

#[test]
fn a_clickup_to_clickup_route_passes_with_a_loop_warning() {
    let text = "sources:\n  clickup: {verify: clickup, secret: s}\ntargets:\n  cu: {type: clickup, token: pk_1}\nroutes:\n  - name: echo\n    source: clickup\n    send:\n      - target: cu\n        action: comment\n        task_id: \"{{event.task_id}}\"\n        text: hi\n";
    let (code, out) = check(text, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("routes.yaml:9:9: warning: route \"echo\" sends from a clickup source to clickup target \"cu\""), "{out}");
    assert!(
        out.ends_with("routes.yaml: ok: 1 sources, 1 targets, 1 routes, 1 warning\n"),
        "{out}"
    );
}

fn check_shipped(env: Vec<(String, String)>) -> (i32, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(bin())
        .args(["check", "--routes", "routes.yaml"])
        .current_dir(root)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Following the deploy env file reaches the real services: with its values
/// (as an operator fills them in) nothing points at this machine, and the
/// ClickUp API is api.clickup.com. The demo env points every target at the
/// local sink and says so.
#[test]
fn the_shipped_routes_reach_the_real_services_and_the_demo_says_it_is_local() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let deploy = crate::support::env_file(&root.join("deploy/clickup-bridge.env"));
    assert_eq!(
        check_shipped(deploy.clone()),
        (
            0,
            "routes.yaml: ok: 2 sources, 4 targets, 5 routes\n".into()
        )
    );
    let (code, out) = check_shipped(crate::support::demo_env());
    assert_eq!(code, 0, "{out}");
    for t in ["team-slack", "ops-jira", "clickup-api", "audit"] {
        assert!(
            out.contains(&format!(
                "warning: target \"{t}\" sends to this machine (http://127.0.0.1:9999)"
            )),
            "{t}: {out}"
        );
    }
    assert!(out.ends_with("5 routes, 4 warnings\n"), "{out}");

    // The deploy env file names every variable routes.yaml reads.
    let text = std::fs::read_to_string(root.join("routes.yaml")).unwrap();
    let deploy_text = std::fs::read_to_string(root.join("deploy/clickup-bridge.env")).unwrap();
    let mut rest = text.as_str();
    let mut seen = 0;
    while let Some(i) = rest.find("${") {
        let name: String = rest[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + 2..];
        if text
            .lines()
            .any(|l| l.trim_start().starts_with('#') && l.contains(&format!("${{{name}}}")))
        {
            continue; // only in a commented example
        }
        seen += 1;
        assert!(
            deploy_text.contains(&format!("\n{name}="))
                || deploy_text.contains(&format!("\n# {name}=")),
            "deploy/clickup-bridge.env does not list {name}"
        );
    }
    assert!(seen >= 9, "{seen}");
    // ... and so does the demo, every one set.
    let demo = crate::support::demo_env();
    for (k, _) in deploy
        .iter()
        .filter(|(k, _)| !k.starts_with("CLICKUP_BRIDGE_"))
    {
        assert!(
            demo.iter().any(|(d, _)| d == k),
            "examples/demo.env lacks {k}"
        );
    }
}
