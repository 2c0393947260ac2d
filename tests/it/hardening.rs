//! Hostile senders and hostile values: strict JSON at intake, paths that stay
//! inside their target, bounded rendering, bounded senders.

use crate::support::*;

/// A lone surrogate (a JavaScript-truncated emoji), invalid UTF-8 and nesting
/// deeper than the limit are refused 400 before anything is stored, whatever
/// part of the body the source's identity reads.
#[tokio::test]
async fn invalid_json_anywhere_in_the_body_is_400_and_not_stored() {
    let app = spawn_app(ROUTES).await;
    let deep = format!(
        r#"{{"event":"taskCreated","webhook_id":"w","task_id":"t","deep":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let mut bad_utf8 = br#"{"event":"taskCreated","webhook_id":"w","task_id":"caf"#.to_vec();
    bad_utf8.extend_from_slice(&[0xC3, 0x28, b'"', b'}']);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "lone surrogate",
            br#"{"event":"taskCreated","webhook_id":"w","task_id":"t","name":"\ud83d"}"#.to_vec(),
        ),
        ("invalid utf-8", bad_utf8),
        ("too deep", deep.into_bytes()),
    ];
    for (name, body) in cases {
        let (status, json) = app
            .post(
                "clickup",
                body.clone(),
                &clickup_headers(CLICKUP_SECRET, &body),
            )
            .await;
        assert_eq!(status, 400, "{name}: {json}");
        assert!(
            json["error"]
                .as_str()
                .is_some_and(|e| e.contains("not valid JSON")),
            "{name}: {json}"
        );
        let t = now();
        let stripe = String::from_utf8_lossy(&body)
            .replace(r#""event":"taskCreated""#, r#""id":"evt_1","type":"x""#)
            .into_bytes();
        // from_utf8_lossy repaired the UTF-8 case: keep the raw bytes there.
        let stripe = if name == "invalid utf-8" {
            body.clone()
        } else {
            stripe
        };
        let (status, json) = app
            .post(
                "stripe",
                stripe.clone(),
                &stripe_headers("whsec_test_secret", &stripe, t),
            )
            .await;
        assert_eq!(status, 400, "stripe {name}: {json}");
    }
    let good = clickup_event(1);
    let (status, json) = app
        .post(
            "clickup",
            good.clone(),
            &clickup_headers(CLICKUP_SECRET, &good),
        )
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(app.store.count_events().await.unwrap(), 1);
    app.stop().await;
}
