use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "CLICKUP_WEBHOOK_SECRET" | "STRIPE_WEBHOOK_SECRET" | "GITHUB_WEBHOOK_SECRET" => {
            Some("s3cret".into())
        }
        "SLACK_WEBHOOK_URL" => Some("https://hooks.slack.com/services/T/B/X".into()),
        "JIRA_EMAIL" => Some("ops@example.com".into()),
        "JIRA_API_TOKEN" | "CLICKUP_API_TOKEN" | "FORECAST_TOKEN" => Some("tok".into()),
        _ => None,
    }
}

fn compile(text: &str) -> Result<Pipeline, LoadError> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    Pipeline::compile("routes.yaml", text, &dir, &env)
}

fn errors(text: &str) -> Vec<String> {
    match compile(text) {
        Ok(p) => panic!("compiled: {p:?}"),
        Err(e) => e.diagnostics.iter().map(ToString::to_string).collect(),
    }
}

/// The examples of SPEC sections 3-5, together, compile.
#[test]
fn the_spec_examples_compile() {
    let text = include_str!("spec_example.yaml");
    let p = compile(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.sources.len(), 3);
    assert_eq!(p.targets.len(), 4);
    assert_eq!(p.routes.len(), 3);
    assert!(p.routes[1].enrich_task, "task: implies enrich");
    assert_eq!(p.routes[1].enrich_via.as_deref(), Some("clickup-api"));
    assert_eq!(p.targets["team-slack"].rate_limit.map(|r| r.count), Some(1));
}

#[test]
fn the_shipped_routes_file_compiles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join("routes.yaml")).unwrap();
    let env = |name: &str| {
        if name.ends_with("_URL") {
            Some("http://127.0.0.1:1/x".to_owned())
        } else {
            Some("value".to_owned())
        }
    };
    let p = Pipeline::compile("routes.yaml", &text, &dir.join("templates"), &env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!p.routes.is_empty());
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "\
version: 1
sources:
  clickup:
    verify: clickup
    secret: ${MISSING_SECRET}
targets:
  team-slack:
    type: slack
    webhook_url: ${SLACK_WEBHOOK_URL}
routes:
  - name: a
    sorce: clickup
    source: clickup
    send:
      - target: team-slak
        text: hi
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml:5:13: environment variable MISSING_SECRET is not set; set it, or write ${MISSING_SECRET:-default}",
            "routes.yaml:12:5: unknown key \"sorce\" in route \"a\"; did you mean \"source\"?",
            "routes.yaml:15:17: unknown target \"team-slak\"; did you mean \"team-slack\"?",
        ]
    );
}

#[test]
fn a_route_from_clickup_to_clickup_warns_about_loops() {
    let text = "\
sources:
  clickup: {verify: clickup, secret: x}
targets:
  cu: {type: clickup, token: pk_1}
routes:
  - name: echo
    source: clickup
    send:
      - target: cu
        action: comment
        task_id: '{{event.task_id}}'
        text: hello
";
    let p = compile(text).unwrap();
    assert_eq!(p.warnings.len(), 1);
    assert!(
        p.warnings[0]
            .to_string()
            .starts_with("routes.yaml:9:9: warning: route \"echo\" sends from a clickup source")
    );
}

#[test]
fn versions_other_than_1_are_refused() {
    assert_eq!(
        errors("version: 2\n"),
        [
            "routes.yaml:1:10: unsupported version: this clickup-bridge reads version 1 (or leave version out)"
        ]
    );
}
