//! Route authoring: `simulate`, `test`, `sign` (accepted by the daemon).

use crate::support::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary as the README's demo does: examples/demo.env loaded.
fn run(args: &[&str], dir: &Path) -> (i32, String, String) {
    run_output(
        Command::new(bin())
            .args(args)
            .current_dir(dir)
            .env_clear()
            .envs(demo_env()),
    )
}

/// The shipped routes.yaml is pinned by tests/route_cases: the example cannot rot.
#[test]
fn the_shipped_route_cases_pass() {
    let (code, out, err) = run(&["test", "tests/route_cases"], root());
    assert_eq!(code, 0, "{out}{err}");
    let cases = clickup_bridge::cli::route_test::case_files(&root().join("tests/route_cases"));
    assert!(cases.len() > 30, "{cases:?}");
    assert!(
        out.trim_end()
            .ends_with(&format!("{} passed, 0 failed", cases.len())),
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");
}

/// Every ClickUp fixture event, through the shipped routes: no delivery it
/// creates fails to render (task-audit once went dead on taskDeleted, which
/// has no history_items), and every route it matches is pinned by a route
/// case that sends that very fixture.
#[test]
fn every_clickup_fixture_renders_through_the_shipped_routes_and_is_pinned() {
    let cases: Vec<(String, String)> =
        clickup_bridge::cli::route_test::case_files(&root().join("tests/route_cases"))
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                (f.display().to_string(), text)
            })
            .collect();
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures().join("clickup")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.extension().is_none_or(|x| x != "json") || name.starts_with("signature-vector") {
            continue;
        }
        let (code, out, err) = run(
            &[
                "simulate",
                "--source",
                "clickup",
                "--event",
                path.to_str().unwrap(),
                "--task",
                "examples/task.json",
            ],
            root(),
        );
        assert_eq!(code, 0, "{name}: {err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        for route in v["routes"].as_array().unwrap() {
            if route["matched"] != true {
                continue;
            }
            let route_name = route["route"].as_str().unwrap();
            for d in route["deliveries"].as_array().unwrap() {
                let error = d["error"].as_str().unwrap_or_default();
                // Links come from an earlier delivery; the case gives them.
                assert!(
                    error.is_empty() || error.contains("links."),
                    "{name} through {route_name}: {error}"
                );
            }
            let pinned = cases.iter().any(|(_, text)| {
                text.contains(&format!("event: ../../fixtures/clickup/{name}"))
                    && text
                        .lines()
                        .any(|l| l.trim_start().starts_with("routes:") && l.contains(route_name))
            });
            assert!(pinned, "no route case sends {name} through {route_name}");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} fixture/route pairs");
}

/// Offline tools need only what they use: `sign` the secret of the source
/// it signs for, `simulate` and `test` no secret at all.
#[test]
fn offline_tools_need_only_the_variables_they_use() {
    let out = Command::new(bin())
        .args(["sign", "--source", "stripe", "--event"])
        .arg("examples/events/stripe-invoice-paid.json")
        .current_dir(root())
        .env_clear()
        .env("STRIPE_WEBHOOK_SECRET", "whsec_only_this")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("Stripe-Signature: t="), "{stdout}");

    let out = Command::new(bin())
        .args(["sign", "--source", "stripe", "--event"])
        .arg("examples/events/stripe-invoice-paid.json")
        .current_dir(root())
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("environment variable STRIPE_WEBHOOK_SECRET is not set")
            && !stderr.contains("CLICKUP_WEBHOOK_SECRET"),
        "only the secret sign needs is asked for: {stderr}"
    );

    let no_secrets: Vec<(String, String)> = demo_env()
        .into_iter()
        .filter(|(k, _)| !k.contains("SECRET") && !k.contains("TOKEN"))
        .collect();
    let (code, out, err) = run_output(
        Command::new(bin())
            .args(["simulate", "--source", "stripe", "--event"])
            .arg("examples/events/stripe-invoice-paid.json")
            .current_dir(root())
            .env_clear()
            .envs(no_secrets.clone()),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"matched\": true"), "{out}");
    let (code, out, err) = run_output(
        Command::new(bin())
            .args(["test", "tests/route_cases/task-completed.yaml"])
            .current_dir(root())
            .env_clear()
            .envs(no_secrets),
    );
    assert_eq!(
        (code, out.trim_end()),
        (
            0,
            "ok   tests/route_cases/task-completed.yaml: a completed task is announced in Slack\n1 passed, 0 failed"
        ),
        "{err}"
    );
}

#[test]
fn a_failing_case_prints_a_readable_diff_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let event = root().join("examples/events/stripe-invoice-paid.json");
    let case = format!(
        "name: wrong status\nsource: stripe\nevent: {}\nexpect:\n  routes: [invoice-paid-updates-task, task-audit]\n  requests:\n    - route: invoice-paid-updates-task\n      body: {{ status: done }}\n",
        event.display()
    );
    std::fs::write(dir.path().join("case.yaml"), case).unwrap();
    std::fs::write(
        dir.path().join("broken.yaml"),
        "source: stripe\nevnt: x.json\nexpect: {}\n",
    )
    .unwrap();
    let routes = root().join("routes.yaml");
    let templates = root().join("templates");
    let out = Command::new(bin())
        .args([
            "test",
            "--routes",
            routes.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ])
        .env_clear()
        .envs(demo_env())
        .env("CLICKUP_BRIDGE_TEMPLATES", templates.to_str().unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let d = dir.path().display();
    let expected = format!(
        "FAIL {d}/broken.yaml: the case file has errors
    {d}/broken.yaml:1:1: a route test case is missing the required key \"event\"
    {d}/broken.yaml:2:1: unknown key \"evnt\" in a route test case; did you mean \"event\"?
FAIL {d}/case.yaml: wrong status
    matched routes differ:
      expected [\"invoice-paid-updates-task\", \"task-audit\"]
      actual   [\"invoice-paid-updates-task\"]
      task-audit did not match: source is stripe, the route takes clickup
    {d}/case.yaml:7:7: request #1 of \"invoice-paid-updates-task\": body differs
      --- expected
      +++ actual
      @@ -1,3 +1,3 @@
       {{
      -  \"status\": \"done\"
      +  \"status\": \"paid\"
       }}
0 passed, 2 failed
"
    );
    assert_eq!(text, expected);
}

#[test]
fn simulate_shows_matches_with_masked_requests_and_why_others_do_not_match() {
    let (code, out, err) = run(
        &[
            "simulate",
            "--source",
            "stripe",
            "--event",
            "examples/events/stripe-invoice-paid.json",
        ],
        root(),
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["event_type"], "invoice.paid");
    assert_eq!(v["dedupe_key"], "evt_1Q2w3e4R5t6Y7u8I");
    let routes = v["routes"].as_array().unwrap();
    let paid = routes
        .iter()
        .find(|r| r["route"] == "invoice-paid-updates-task")
        .unwrap();
    assert_eq!(paid["matched"], true);
    let put = &paid["deliveries"][0]["requests"][0];
    assert_eq!(put["method"], "PUT");
    assert_eq!(
        put["url"],
        "http://127.0.0.1:9999/clickup/api/v2/task/1vj38vv"
    );
    assert_eq!(
        put["headers"]["Authorization"], "pk_***",
        "the token is masked"
    );
    assert_eq!(put["body"], serde_json::json!({"status": "paid"}));
    let slack = routes
        .iter()
        .find(|r| r["route"] == "task-completed-to-slack")
        .unwrap();
    assert_eq!(slack["matched"], false);
    assert_eq!(slack["reason"], "source is stripe, the route takes clickup");

    // A condition that fails is named with what was found.
    let (_, out, _) = run(
        &[
            "simulate",
            "--source",
            "clickup",
            "--event",
            "tests/fixtures/clickup/taskStatusUpdated.json",
        ],
        root(),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let slack = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "task-completed-to-slack")
        .unwrap();
    let reason = slack["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("$.history_items[0].after.status in [\"complete\",\"completed\",\"closed\",\"done\"] does not hold (line "),
        "{reason}"
    );
    assert!(reason.ends_with("): found \"in progress\""), "{reason}");
    // Without --task a route that needs the task says so.
    let (_, out, _) = run(
        &[
            "simulate",
            "--source",
            "clickup",
            "--event",
            "examples/events/clickup-task-completed.json",
        ],
        root(),
    );
    assert!(out.contains("pass --task FILE"), "{out}");
}

#[test]
fn simulate_refuses_what_the_daemon_would_refuse() {
    let (code, _, err) = run(
        &[
            "simulate",
            "--source",
            "nope",
            "--event",
            "examples/events/stripe-invoice-paid.json",
        ],
        root(),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown source \"nope\"; known sources: clickup, stripe"),
        "{err}"
    );
}

/// `sign` prints headers that the running daemon accepts, for each verifier.
#[tokio::test]
async fn sign_output_is_accepted_by_the_daemon_for_every_verifier() {
    let app = spawn_app(ROUTES).await;
    let routes = app.dir.path().join("routes.yaml");
    let cases = [
        ("clickup", clickup_event(77)),
        (
            "stripe",
            br#"{"id":"evt_sign_1","type":"invoice.paid"}"#.to_vec(),
        ),
        ("github", br#"{"action":"opened","hook_id":7}"#.to_vec()),
        (
            "openai",
            br#"{"type":"response.completed","data":{"id":"resp_1"}}"#.to_vec(),
        ),
        ("automation", br#"{"task":"86a1"}"#.to_vec()),
    ];
    for (source, body) in cases {
        let file = app.dir.path().join(format!("{source}.json"));
        std::fs::write(&file, &body).unwrap();
        let out = Command::new(bin())
            .args([
                "sign",
                "--routes",
                routes.to_str().unwrap(),
                "--source",
                source,
                "--event",
                file.to_str().unwrap(),
            ])
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let headers: Vec<(String, String)> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(": ").unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        match source {
            "openai" => {
                assert_eq!(
                    names,
                    ["webhook-id", "webhook-timestamp", "webhook-signature"]
                );
                assert!(headers[0].1.starts_with("msg_"), "{headers:?}");
                let t: i64 = headers[1].1.parse().unwrap();
                assert!((t - now()).abs() < 60, "the current time: {t}");
            }
            "automation" => assert_eq!(
                headers,
                [("X-Bridge-Token".to_owned(), "old-token".to_owned())]
            ),
            _ => assert_eq!(headers.len(), 1, "{headers:?}"),
        }
        let (status, json) = app.post(source, body, &headers).await;
        assert_eq!(status, 200, "{source}: {json}");
        assert_eq!(json["duplicate"], false, "{source}: {json}");
    }
    app.stop().await;
}

/// `simulate` of a stored event is what the daemon sent for it, byte for
/// byte: the same delivery ids (so the same `Idempotency-Key`, Jira delivery
/// label and `meta.delivery_id`), URLs, headers and bodies.
#[tokio::test]
async fn simulate_of_a_stored_event_sends_the_bytes_the_daemon_sent() {
    use clickup_bridge::ids::EventId;
    use clickup_bridge::pipeline::{LoadOptions, Pipeline, Unset, process_env};
    use clickup_bridge::simulate::{EventStamp, Input, RouteOutcome, simulate};
    use clickup_bridge::store::DeliveryStatus;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/api/3/issue"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"id": "10000", "key": "OPS-1"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/audit"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let text = format!(
        r#"
sources:
  clickup: {{ verify: clickup, secret: {CLICKUP_SECRET} }}
targets:
  jira: {{ type: jira, base_url: "{uri}", email: ops@example.com, api_token: tok }}
  audit: {{ type: http, url: "{uri}/audit", headers: {{ X-Api-Key: k3y }} }}
routes:
  - name: bug
    source: clickup
    extract: {{ by: "$.history_items[0].user.username" }}
    send:
      - target: jira
        action: create_issue
        project: OPS
        issue_type: Bug
        summary: "Bug {{{{event.task_id}}}} by {{{{by}}}}"
        labels: [clickup]
      - target: audit
        body: {{ delivery: "{{{{meta.delivery_id}}}}", event: "{{{{meta.event_id}}}}", at: "{{{{meta.received_at}}}}" }}
"#,
        uri = server.uri()
    );
    let app = spawn_app(&text).await;
    let id = app.post_clickup(&clickup_event(5)).await;
    let rows = app.settled(&id, 20).await;
    assert!(
        rows.len() == 2 && rows.iter().all(|d| d.status == DeliveryStatus::Delivered),
        "{rows:?}"
    );
    let stored = app
        .store
        .event(&EventId::from_stored(id.clone()))
        .await
        .unwrap()
        .unwrap();
    let pipeline = Pipeline::load(&LoadOptions {
        routes: &app.dir.path().join("routes.yaml"),
        templates: &app.dir.path().join("templates"),
        env: &process_env,
        unset: Unset::Refuse,
    })
    .unwrap();
    let sim = simulate(
        &pipeline,
        &Input {
            source: "clickup",
            body: &stored.payload,
            headers: &[],
            task: None,
            links: serde_json::Map::new(),
            stored: Some(EventStamp {
                id: stored.id.clone(),
                received_at: stored.received_at,
            }),
        },
    )
    .unwrap();
    let RouteOutcome::Matched(steps) = &sim.routes[0].outcome else {
        panic!("{sim:?}");
    };
    assert_eq!(steps.len(), 2, "{sim:?}");
    let sent = server.received_requests().await.unwrap();
    assert_eq!(sent.len(), 2, "one request per step: {sent:?}");
    for (step, got) in steps.iter().zip(&sent) {
        let row = rows.iter().find(|d| d.step == step.step).unwrap();
        assert_eq!(step.delivery_id, row.id, "the daemon's delivery id");
        let planned = step.outcome.as_ref().unwrap();
        assert_eq!(planned.requests.len(), 1);
        let want = &planned.requests[0];
        assert_eq!(got.method.as_str(), want.method.as_str());
        // wiremock rebuilds the URL from the path; the host is in Host.
        assert_eq!(
            (got.url.path(), got.url.query()),
            (want.url.path(), want.url.query())
        );
        let host = format!(
            "{}:{}",
            want.url.host_str().unwrap(),
            want.url.port().unwrap()
        );
        assert_eq!(
            got.headers.get("host").and_then(|v| v.to_str().ok()),
            Some(host.as_str())
        );
        assert_eq!(idempotency_key(got), step.delivery_id.as_str());
        for (name, value) in &want.headers {
            assert_eq!(
                got.headers.get(name.as_str()).and_then(|v| v.to_str().ok()),
                Some(value.as_str()),
                "header {name}"
            );
        }
        let want_body = want
            .body
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&got.body),
            want_body,
            "the body of step {}",
            step.step + 1
        );
    }
    // What the bytes hold: the delivery label and meta are the daemon's.
    let label = format!("clickup-bridge-{}", steps[0].delivery_id);
    assert!(
        String::from_utf8_lossy(&sent[0].body).contains(&label),
        "{label}"
    );
    let audit: Value = serde_json::from_slice(&sent[1].body).unwrap();
    assert_eq!(audit["delivery"], steps[1].delivery_id.as_str());
    assert_eq!(audit["event"], id.as_str());
    app.stop().await;
}
