//! POST /hooks/{source}: the SPEC section 3 status table, signature vectors
//! through the daemon, duplicates, the body cap and concurrent durability.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::HashSet;

#[tokio::test]
async fn a_signed_clickup_event_is_stored_and_acknowledged_with_its_id() {
    let app = spawn_app(ROUTES).await;
    let body = clickup_event(1);
    let (status, json) = app
        .post(
            "clickup",
            body.clone(),
            &clickup_headers(CLICKUP_SECRET, &body),
        )
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["duplicate"], false);
    let id = json["event_id"].as_str().unwrap();
    assert!(id.starts_with("evt_"), "{id}");
    let events = app.store.recent_events(None, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].id.as_str(), id);
    assert_eq!(events[0].payload, body, "the exact bytes are stored");
    assert_eq!(events[0].event_type, "taskStatusUpdated");
    assert_eq!(
        events[0].dedupe_key,
        "7fa3ec74-69a8-4530-a251-8a13730bd204:taskStatusUpdated:1"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_repeat_is_acknowledged_as_duplicate_with_the_same_id_and_stores_nothing() {
    let app = spawn_app(ROUTES).await;
    let body = clickup_event(7);
    let h = clickup_headers(CLICKUP_SECRET, &body);
    let (_, first) = app.post("clickup", body.clone(), &h).await;
    let (status, second) = app.post("clickup", body.clone(), &h).await;
    assert_eq!(status, 200);
    assert_eq!(
        second,
        json!({"event_id": first["event_id"], "duplicate": true})
    );
    // The same history id under another event name is another event.
    let other = String::from_utf8(body)
        .unwrap()
        .replace("taskStatusUpdated", "taskUpdated");
    let (_, third) = app
        .post(
            "clickup",
            other.clone(),
            &clickup_headers(CLICKUP_SECRET, other.as_bytes()),
        )
        .await;
    assert_eq!(third["duplicate"], false);
    assert_eq!(app.store.count_events().await.unwrap(), 2);
    app.stop().await;
}

/// Every row of the status table, and that rejections store nothing and
/// never echo a secret.
#[tokio::test]
async fn the_status_table_holds_row_by_row() {
    let app = spawn_app(ROUTES).await;
    let good = clickup_event(1);
    let sig = clickup_headers(CLICKUP_SECRET, &good);
    let big = vec![b' '; 64 * 1024 + 1];
    let not_json = b"{not json".to_vec();
    // (case, source, body, headers, expected status)
    type Case<'a> = (&'a str, &'a str, Vec<u8>, Vec<(String, String)>, u16);
    let cases: Vec<Case> = vec![
        ("unknown source", "nope", good.clone(), sig.clone(), 404),
        (
            "unknown source beats size",
            "nope",
            big.clone(),
            vec![],
            404,
        ),
        (
            "too large beats signature",
            "clickup",
            big.clone(),
            vec![],
            413,
        ),
        ("missing signature", "clickup", good.clone(), vec![], 403),
        (
            "malformed signature",
            "clickup",
            good.clone(),
            vec![("X-Signature".into(), "zz".into())],
            403,
        ),
        (
            "wrong signature",
            "clickup",
            good.clone(),
            clickup_headers("wrong", &good),
            403,
        ),
        (
            "signature beats JSON",
            "clickup",
            not_json.clone(),
            vec![],
            403,
        ),
        (
            "signed but not JSON",
            "clickup",
            not_json.clone(),
            clickup_headers(CLICKUP_SECRET, &not_json),
            400,
        ),
        (
            "signed JSON without event",
            "clickup",
            b"{}".to_vec(),
            clickup_headers(CLICKUP_SECRET, b"{}"),
            400,
        ),
    ];
    for (name, source, body, headers, want) in cases {
        let (status, json) = app.post(source, body, &headers).await;
        assert_eq!(status, want, "{name}: {json}");
        let text = json.to_string();
        assert!(json["error"].is_string(), "{name}: error body {text}");
        assert!(!text.contains(CLICKUP_SECRET), "{name}: secret echoed");
    }
    assert_eq!(
        app.store.count_events().await.unwrap(),
        0,
        "rejections store nothing"
    );
    let (status, _) = app.post("clickup", good.clone(), &sig).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn an_unavailable_store_answers_503_so_the_sender_retries() {
    let app = spawn_app(ROUTES).await;
    app.store.close().await;
    let body = clickup_event(1);
    let (status, json) = app
        .post(
            "clickup",
            body.clone(),
            &clickup_headers(CLICKUP_SECRET, &body),
        )
        .await;
    assert_eq!(status, 503, "{json}");
    let ready = app
        .client
        .get(format!("{}/readyz", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    app.stop().await;
}

#[tokio::test]
async fn health_is_served_on_both_listeners() {
    let app = spawn_app(ROUTES).await;
    for url in [
        format!("{}/healthz", app.url),
        format!("{}/healthz", app.admin_url),
        format!("{}/readyz", app.admin_url),
    ] {
        let r = app.client.get(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{url}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_body_cap_is_exact_and_also_applies_without_content_length() {
    let app = spawn_app(ROUTES).await;
    // A valid event padded to exactly max_body bytes passes.
    let mut body = clickup_event(3);
    body.pop(); // drop the closing brace
    let pad = 64 * 1024 - body.len() - r#","p":""}"#.len();
    body.extend_from_slice(format!(r#","p":"{}"}}"#, "x".repeat(pad)).as_bytes());
    assert_eq!(body.len(), 64 * 1024);
    let (status, json) = app
        .post(
            "clickup",
            body.clone(),
            &clickup_headers(CLICKUP_SECRET, &body),
        )
        .await;
    assert_eq!(status, 200, "{json}");

    // A chunked body (no Content-Length) one byte over the cap is refused.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024 + 1];
    let mut req = format!(
        "POST /hooks/clickup HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        chunk.len()
    )
    .into_bytes();
    req.extend_from_slice(&chunk);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    s.write_all(&req).await.unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    app.stop().await;
}

fn vectors() -> Vec<Value> {
    let mut all = Vec::new();
    for f in ["signature-vectors.json", "signature-vectors-derived.json"] {
        let text = std::fs::read_to_string(fixtures().join(f)).unwrap();
        let list: Vec<Value> = serde_json::from_str(&text).unwrap();
        all.extend(list);
    }
    all
}

/// Vectors whose only fault is their age: through the daemon (real clock) they
/// are refused whatever the tolerance; the tolerance rule itself is tested
/// below with fresh signatures and in the unit tests with a fixed clock.
const TIME_BASED: &[&str] = &[
    "stripe-dotnet-outdated",
    "stripe-node-receivedAt-too-old",
    "stripe-java-clock-too-old",
];

/// The published Stripe and GitHub vectors, sent to the running daemon: valid
/// ones pass verification (200, or 400 when their payload is not an event),
/// invalid ones are 403.
#[tokio::test]
async fn published_signature_vectors_pass_or_fail_through_the_daemon() {
    let vectors = vectors();
    let mut secrets: Vec<(String, String)> = Vec::new(); // (scheme, secret)
    for v in &vectors {
        let scheme = v["scheme"].as_str().unwrap().to_owned();
        let secret = v["secret"].as_str().unwrap_or_default().to_owned();
        if (scheme == "stripe-v1" || scheme == "github-sha256")
            && !secrets.contains(&(scheme.clone(), secret.clone()))
        {
            secrets.push((scheme, secret));
        }
    }
    let mut routes = String::from("sources:\n");
    for (i, (scheme, secret)) in secrets.iter().enumerate() {
        let secret = if secret.is_empty() { "unused" } else { secret };
        let secret = serde_json::to_string(secret).unwrap();
        if scheme == "stripe-v1" {
            // Valid vectors were signed years ago: a wide tolerance isolates
            // the signature check.
            routes += &format!(
                "  s{i}:\n    verify: stripe\n    secret: {secret}\n    tolerance: 4000000000\n  t{i}:\n    verify: stripe\n    secret: {secret}\n"
            );
        } else {
            routes += &format!(
                "  s{i}:\n    verify: hmac\n    header: X-Hub-Signature-256\n    prefix: \"sha256=\"\n    secret: {secret}\n"
            );
        }
    }
    let app = spawn_app(&routes).await;
    let mut ran = 0;
    for v in &vectors {
        let scheme = v["scheme"].as_str().unwrap();
        let Some(i) = secrets
            .iter()
            .position(|(s, k)| s == scheme && k == v["secret"].as_str().unwrap_or_default())
        else {
            continue;
        };
        let id = v["id"].as_str().unwrap();
        let source = if TIME_BASED.contains(&id) {
            format!("t{i}")
        } else {
            format!("s{i}")
        };
        let payload = v["payload"].as_str().unwrap_or("{}").to_owned();
        let headers: Vec<(String, String)> = v["headers"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, x)| (k.clone(), x.as_str().unwrap().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let (status, json) = app.post(&source, payload.clone(), &headers).await;
        if v["expected"] == "valid" {
            let parsed: Option<Value> = serde_json::from_str(&payload).ok();
            let is_event = scheme != "stripe-v1"
                || parsed.is_some_and(|p| p["id"].is_string() && p["type"].is_string());
            let json_ok = serde_json::from_str::<Value>(&payload).is_ok();
            let want = if is_event && json_ok { 200 } else { 400 };
            assert_eq!(status, want, "{id}: {json}");
        } else {
            assert_eq!(status, 403, "{id}: {json}");
        }
        ran += 1;
    }
    assert!(ran >= 28, "only {ran} vectors ran");
    app.stop().await;
}

#[tokio::test]
async fn stripe_timestamps_older_than_the_tolerance_are_refused_and_future_ones_pass() {
    let app = spawn_app(ROUTES).await;
    let body = br#"{"id":"evt_1","type":"invoice.paid","data":{"object":{}}}"#;
    let (status, _) = app
        .post(
            "stripe",
            body.to_vec(),
            &stripe_headers("whsec_test_secret", body, now() - 301),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .post(
            "stripe",
            body.to_vec(),
            &stripe_headers("whsec_test_secret", body, now() + 120),
        )
        .await;
    assert_eq!(status, 200);
    // Several v1 values: the second one matches (rotation on Stripe's side).
    let t = now();
    let good = stripe_headers("whsec_old", body, t)[0].1.clone();
    let v1 = good.split("v1=").nth(1).unwrap();
    let both = vec![(
        "Stripe-Signature".to_owned(),
        format!("t={t},v1={},v1={v1}", "0".repeat(64)),
    )];
    let (status, json) = app.post("stripe", body.to_vec(), &both).await;
    assert_eq!(
        (status, json["duplicate"].clone()),
        (200, json!(true)),
        "{json}"
    );
    app.stop().await;
}

#[tokio::test]
async fn generic_hmac_sources_take_type_and_id_from_their_jsonpaths() {
    let app = spawn_app(ROUTES).await;
    let body = br#"{"action":"opened","hook_id":42}"#;
    let sig = clickup_bridge::verify::Verifier {
        scheme: clickup_bridge::verify::Scheme::Hmac {
            header: "X-Hub-Signature-256".into(),
            prefix: "sha256=".into(),
            encoding: clickup_bridge::verify::Encoding::Hex,
        },
        secrets: vec![clickup_bridge::verify::Secret::new("mysecret")],
    }
    .sign(body, 0);
    let (status, _) = app.post("github", body.to_vec(), &sig).await;
    assert_eq!(status, 200);
    let ev = &app.store.recent_events(Some("github"), 1).await.unwrap()[0];
    assert_eq!(
        (ev.event_type.as_str(), ev.dedupe_key.as_str()),
        ("opened", "42")
    );
    app.stop().await;
}

/// 200 distinct signed events from 16 concurrent clients: every one is
/// acknowledged once, and every acknowledged one is in the store exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signed_requests_are_all_acknowledged_and_stored_exactly_once() {
    let app = spawn_app(ROUTES).await;
    let url = format!("{}/hooks/clickup", app.url);
    let mut tasks = Vec::new();
    for client_no in 0..16u64 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut ids = Vec::new();
            let mut n = client_no;
            while n < 200 {
                let body = clickup_event(n);
                let mut req = client.post(&url).body(body.clone());
                for (k, v) in clickup_headers(CLICKUP_SECRET, &body) {
                    req = req.header(k, v);
                }
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status().as_u16(), 200);
                let json: Value = resp.json().await.unwrap();
                assert_eq!(json["duplicate"], false);
                ids.push(json["event_id"].as_str().unwrap().to_owned());
                n += 16;
            }
            ids
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(ids.insert(id), "an id was given twice");
        }
    }
    assert_eq!(ids.len(), 200);
    let stored = app.store.recent_events(None, 1000).await.unwrap();
    assert_eq!(stored.len(), 200);
    let stored_ids: HashSet<String> = stored.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(stored_ids, ids);
    app.stop().await;
}

/// Events acknowledged before a stop are found by a new daemon on the same file.
#[tokio::test]
async fn acknowledged_events_survive_a_restart() {
    let app = spawn_app(ROUTES).await;
    let body = clickup_event(11);
    let h = clickup_headers(CLICKUP_SECRET, &body);
    let (_, first) = app.post("clickup", body.clone(), &h).await;
    let location = app.location.clone();
    let _dir = app.stop_keep_dir().await;
    let again = spawn_app_with(ROUTES, |s| s.store = location).await;
    let (status, second) = again.post("clickup", body.clone(), &h).await;
    assert_eq!(status, 200);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["event_id"], first["event_id"]);
    again.stop().await;
}

/// The same event sent by 16 clients at once (so several copies share one
/// group commit): stored once, one answer says new, every answer has its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_of_one_event_are_stored_once() {
    let app = spawn_app(ROUTES).await;
    let body = clickup_event(42);
    let headers = clickup_headers(CLICKUP_SECRET, &body);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (url, body, headers) = (
            format!("{}/hooks/clickup", app.url),
            body.clone(),
            headers.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut req = reqwest::Client::new().post(url).body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let json: Value = req.send().await.unwrap().json().await.unwrap();
            json
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let ids: HashSet<&str> = answers
        .iter()
        .map(|a| a["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(
        answers.iter().filter(|a| a["duplicate"] == false).count(),
        1
    );
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    app.stop().await;
}
