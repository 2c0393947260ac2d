use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "CLICKUP_WEBHOOK_SECRET" | "STRIPE_WEBHOOK_SECRET" | "GITHUB_WEBHOOK_SECRET" => {
            Some("s3cret".into())
        }
        "OPENAI_WEBHOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        "CLICKUP_AUTOMATION_TOKEN" => Some("t0k3n".into()),
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
    assert_eq!(p.sources.len(), 5);
    assert_eq!(p.sources["openai"].kind(), "standard-webhooks");
    assert_eq!(p.sources["clickup-automation"].kind(), "header");
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

#[test]
fn standard_webhooks_and_header_sources_compile_with_their_defaults() {
    use crate::verify::{Field, IdentityRule, Scheme};
    let text = "\
sources:
  openai:
    verify: standard-webhooks
    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
  resend:
    verify: standard-webhooks
    secret: [MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_McGXHcB7RO6vSZ/miXVo80qz4S0]
    tolerance: 60
    event_header: X-Kind
    id: $.data.id
  automation:
    verify: header
    header: X-Bridge-Token
    secret: [old, new]
  github:
    verify: hmac
    header: X-Hub-Signature-256
    prefix: sha256=
    secret: s
    event_header: X-GitHub-Event
    id_header: X-GitHub-Delivery
";
    let p = compile(text).unwrap_or_else(|e| panic!("{e}"));
    let s = &p.sources;
    assert_eq!(s["openai"].kind(), "standard-webhooks");
    assert!(matches!(
        s["openai"].verifier.scheme,
        Scheme::StandardWebhooks {
            tolerance_secs: 300
        }
    ));
    assert!(matches!(
        &s["openai"].identity,
        IdentityRule::StandardWebhooks {
            event: Field::Path(_),
            id: None
        }
    ));
    assert!(matches!(
        &s["resend"].identity,
        IdentityRule::StandardWebhooks { event: Field::Header(h), id: Some(Field::Path(_)) } if h == "X-Kind"
    ));
    assert_eq!(s["resend"].verifier.secrets.len(), 2);
    assert_eq!(s["automation"].kind(), "header");
    assert_eq!(s["automation"].verifier.secrets.len(), 2);
    assert!(matches!(
        &s["automation"].identity,
        IdentityRule::Generic {
            event: None,
            id: None
        }
    ));
    assert!(matches!(
        &s["github"].identity,
        IdentityRule::Generic { event: Some(Field::Header(e)), id: Some(Field::Header(i)) }
            if e == "X-GitHub-Event" && i == "X-GitHub-Delivery"
    ));
}

#[test]
fn source_identity_and_secret_mistakes_are_reported_where_they_are() {
    let text = "\
sources:
  openai:
    verify: standard-webhooks
    secret: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_not*base64]
  empty:
    verify: standard-webhooks
    secret: whsec_
  both:
    verify: hmac
    header: X-Sig
    secret: s
    event: $.type
    event_header: X-Type
  clickup:
    verify: clickup
    secret: s
    id_header: X-Id
  stripe:
    verify: stripe
    secret: s
    event: $.kind
  token:
    verify: header
    header: X Bridge Token
    secret: s
  typo:
    verify: standard-webhook
    secret: s
";
    assert_eq!(
        errors(text),
        [
            "routes.yaml:4:54: the secret is not valid base64 after its \"whsec_\" prefix: copy the signing secret exactly as the sender shows it (whsec_...)",
            "routes.yaml:7:13: the secret is empty after its \"whsec_\" prefix: copy the whole signing secret",
            "routes.yaml:13:5: event and event_header are both given: keep one (event is a JSONPath in the body, event_header a request header)",
            "routes.yaml:17:5: id_header does not apply to verify: clickup sources, whose rule is fixed (type $.event; id from webhook_id, event and the history item ids): remove it",
            "routes.yaml:21:5: event does not apply to verify: stripe sources, whose rule is fixed (type $.type, id $.id): remove it",
            "routes.yaml:24:13: header \"X Bridge Token\" is not a valid HTTP header name: use letters, digits and '-'",
            "routes.yaml:27:13: unknown verify kind \"standard-webhook\"; did you mean \"standard-webhooks\"? (clickup, stripe, hmac, standard-webhooks or header)",
        ]
    );
}

/// The commented `header` source in the shipped routes.yaml works once its
/// comment marks are removed.
#[test]
fn the_shipped_commented_header_source_compiles_when_uncommented() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join("routes.yaml")).unwrap();
    let mut in_block = false;
    let uncommented: String = text
        .lines()
        .map(|l| {
            if l.starts_with("  # clickup-automation:") {
                in_block = true;
            } else if !l.starts_with("  #   ") {
                in_block = false;
            }
            if in_block {
                format!("  {}\n", &l[4..])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let env = |name: &str| {
        if name.ends_with("_URL") {
            Some("http://127.0.0.1:1/x".to_owned())
        } else {
            Some("value".to_owned())
        }
    };
    let p = Pipeline::compile("routes.yaml", &uncommented, &dir.join("templates"), &env)
        .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!(p.sources["clickup-automation"].kind(), "header");
}

const ORDER_BASE: &str = "sources:\n  s:\n    verify: clickup\n    secret: x\ntargets:\n  t:\n    type: http\n    url: https://example.com\nroutes:\n  - name: r\n    source: s\n";

/// `order_by` is the task by default, `none` turns it off, a template sets
/// another key, and a template that does not compile is an error naming
/// the route, with what to write instead.
#[test]
fn order_by_compiles_and_a_broken_template_is_reported() {
    let send = "    send:\n      - target: t\n        body: {}\n";
    let p = compile(&format!("{ORDER_BASE}{send}")).unwrap();
    assert_eq!(p.routes[0].order_by, OrderBy::Task);
    let p = compile(&format!("{ORDER_BASE}    order_by: none\n{send}")).unwrap();
    assert_eq!(p.routes[0].order_by, OrderBy::Off);
    let p = compile(&format!(
        "{ORDER_BASE}    order_by: '{{{{event.customer}}}}'\n{send}"
    ))
    .unwrap();
    assert!(matches!(p.routes[0].order_by, OrderBy::Template(_)));
    let errs = errors(&format!("{ORDER_BASE}    order_by: '{{{{event.x'\n{send}"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("order_by of route \"r\"") && errs[0].contains("or none"),
        "{errs:?}"
    );
}

/// The link names a step reads: `links.NAME` names, `*` for `links` read
/// whole, nothing for words that only contain "links".
#[test]
fn a_step_knows_which_links_it_reads() {
    let names = |s: &str| routes::link_names(s).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names("on {{links.jira_issue}} and {{ links.pr }}"),
        ["jira_issue", "pr"]
    );
    assert_eq!(names("{{#each links}}{{this}}{{/each}}"), ["*"]);
    assert!(names("{{event.links}} {{mylinks.x}} {{linksx}}").is_empty());
    let p = compile(&format!(
        "{ORDER_BASE}    send:\n      - target: t\n        body: {{on: '{{{{links.issue}}}}'}}\n"
    ))
    .unwrap();
    assert_eq!(p.routes[0].send[0].reads_links, ["issue"]);
}
