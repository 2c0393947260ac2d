//! Signature vectors from tests/fixtures (the vendors' published vectors).
use super::*;
use serde_json::Value;

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn headers_of(v: &Value) -> Vec<(String, String)> {
    v["headers"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The verifier a vector's scheme names, `None` for schemes we do not
/// implement (Slack, Twilio, bare HMAC primitives).
fn verifier_for(v: &Value) -> Option<Verifier> {
    let scheme = v["scheme"].as_str().unwrap();
    Some(match scheme {
        "stripe-v1" => Verifier {
            scheme: Scheme::Stripe {
                tolerance_secs: v["tolerance_s"].as_u64().unwrap_or(300),
            },
            secrets: vec![Secret::new(v["secret"].as_str().unwrap())],
        },
        "github-sha256" => Verifier {
            scheme: Scheme::Hmac {
                header: "X-Hub-Signature-256".into(),
                prefix: "sha256=".into(),
                encoding: Encoding::Hex,
            },
            secrets: vec![Secret::new(v["secret"].as_str().unwrap())],
        },
        "shopify-hmac-sha256-base64" => Verifier {
            scheme: Scheme::Hmac {
                header: "X-Shopify-Hmac-Sha256".into(),
                prefix: String::new(),
                encoding: Encoding::Base64,
            },
            secrets: vec![Secret::new(v["secret"].as_str().unwrap())],
        },
        s if s.starts_with("standard-webhooks-v1") => Verifier {
            scheme: Scheme::StandardWebhooks {
                tolerance_secs: v["tolerance_s"].as_u64().unwrap_or(300),
            },
            secrets: vec![Secret::new(v["secret"].as_str().unwrap())],
        },
        _ => return None,
    })
}

/// Runs every vector of the schemes we implement and returns how many ran.
fn run_vectors(file: &str) -> usize {
    let mut ran = 0;
    for v in load(file) {
        let Some(verifier) = verifier_for(&v) else {
            continue;
        };
        let now = v["now"].as_i64().or(v["timestamp"].as_i64()).unwrap_or(0);
        let body = v["payload"].as_str().unwrap_or("{}").as_bytes();
        let got = verifier.verify(&headers_of(&v), body, now);
        let want_valid = v["expected"] == "valid";
        assert_eq!(got.is_ok(), want_valid, "vector {}: {got:?}", v["id"]);
        ran += 1;
    }
    ran
}

#[test]
fn official_signature_vectors_verify_as_published() {
    let ran = run_vectors("signature-vectors.json");
    assert!(ran >= 31, "only {ran} vectors ran");
}

#[test]
fn derived_stripe_vectors_verify_as_expected() {
    let ran = run_vectors("signature-vectors-derived.json");
    assert!(ran >= 8, "only {ran} vectors ran");
}

#[test]
fn clickup_constructed_vector_verifies_and_pretty_printed_body_does_not() {
    let text =
        std::fs::read_to_string(fixtures().join("clickup/signature-vector-constructed.json"))
            .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let verifier = Verifier {
        scheme: Scheme::ClickUp,
        secrets: vec![Secret::new(v["secret"].as_str().unwrap())],
    };
    let body = v["raw_body"].as_str().unwrap().as_bytes();
    let good = vec![(
        "x-signature".to_owned(),
        v["x_signature"].as_str().unwrap().to_owned(),
    )];
    assert_eq!(verifier.verify(&good, body, 0), Ok(()));
    let pretty = vec![(
        "X-Signature".to_owned(),
        v["raw_body_pretty_printed_signature_differs"]
            .as_str()
            .unwrap()
            .to_owned(),
    )];
    assert_eq!(
        verifier.verify(&pretty, body, 0),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verifier.sign(body, 0),
        vec![(
            "X-Signature".to_owned(),
            v["x_signature"].as_str().unwrap().to_owned()
        )]
    );
}

#[test]
fn rotation_accepts_any_listed_secret() {
    let verifier = Verifier {
        scheme: Scheme::ClickUp,
        secrets: vec![Secret::new("old"), Secret::new("new")],
    };
    let signed_new = Verifier {
        scheme: Scheme::ClickUp,
        secrets: vec![Secret::new("new")],
    }
    .sign(b"{}", 0);
    assert_eq!(verifier.verify(&signed_new, b"{}", 0), Ok(()));
    let signed_other = Verifier {
        scheme: Scheme::ClickUp,
        secrets: vec![Secret::new("other")],
    }
    .sign(b"{}", 0);
    assert_eq!(
        verifier.verify(&signed_other, b"{}", 0),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn missing_and_malformed_headers_are_distinguished() {
    let v = Verifier {
        scheme: Scheme::ClickUp,
        secrets: vec![Secret::new("s")],
    };
    let none: Vec<(String, String)> = vec![];
    assert!(matches!(
        v.verify(&none, b"{}", 0),
        Err(VerifyError::MissingHeader(_))
    ));
    let bad = vec![("X-Signature".to_owned(), "not-hex".to_owned())];
    assert!(matches!(
        v.verify(&bad, b"{}", 0),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn sign_round_trips_for_every_scheme() {
    let schemes = [
        Scheme::ClickUp,
        Scheme::Stripe {
            tolerance_secs: 300,
        },
        Scheme::Hmac {
            header: "X-Hub-Signature-256".into(),
            prefix: "sha256=".into(),
            encoding: Encoding::Hex,
        },
        Scheme::Hmac {
            header: "X-Sig".into(),
            prefix: String::new(),
            encoding: Encoding::Base64,
        },
    ];
    for scheme in schemes {
        let v = Verifier {
            scheme: scheme.clone(),
            secrets: vec![Secret::new("k")],
        };
        let h = v.sign(b"{\"a\":1}", 1_700_000_000);
        assert_eq!(
            v.verify(&h, b"{\"a\":1}", 1_700_000_010),
            Ok(()),
            "{scheme:?}"
        );
        assert!(
            v.verify(&h, b"{\"a\":2}", 1_700_000_010).is_err(),
            "{scheme:?}"
        );
    }
}

#[test]
fn secret_debug_is_redacted() {
    assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
}

/// The published Standard Webhooks vectors one by one, with the reason each
/// invalid one must give (the metrics label an operator sees).
#[test]
fn standard_webhooks_vectors_fail_for_their_own_reason() {
    let mut seen = Vec::new();
    for v in load("signature-vectors.json") {
        let id = v["id"].as_str().unwrap().to_owned();
        if !id.starts_with("stdwh-") {
            continue;
        }
        let verifier = verifier_for(&v).unwrap();
        let got = verifier.verify(
            &headers_of(&v),
            v["payload"].as_str().unwrap().as_bytes(),
            v["now"].as_i64().unwrap(),
        );
        let want = match id.as_str() {
            "stdwh-sign-vector"
            | "stdwh-secret-without-prefix"
            | "stdwh-svix-headers"
            | "stdwh-multi-signature" => Ok(()),
            "stdwh-bad-signature" | "stdwh-partial-signature" => Err(VerifyError::Mismatch),
            "stdwh-too-old" | "stdwh-too-new" => Err(VerifyError::Expired),
            other => panic!("a new vector {other}: say what it must give"),
        };
        assert_eq!(got, want, "{id}");
        seen.push(id);
    }
    assert_eq!(seen.len(), 8, "{seen:?}");
}

fn standard(secret: &str) -> Verifier {
    Verifier {
        scheme: Scheme::StandardWebhooks {
            tolerance_secs: 300,
        },
        secrets: vec![Secret::new(secret)],
    }
}

const STDWH_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STDWH_BODY: &[u8] = br#"{"test": 2432232314}"#;
const STDWH_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn stdwh_headers(signature: &str, t: &str) -> Vec<(String, String)> {
    vec![
        ("webhook-id".into(), "msg_p5jXN8AQM9LWM0D4loKWxJek".into()),
        ("webhook-timestamp".into(), t.into()),
        ("webhook-signature".into(), signature.into()),
    ]
}

#[test]
fn standard_webhooks_sign_reproduces_the_published_signature() {
    for secret in [STDWH_SECRET, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
        let h =
            standard(secret).sign_message("msg_p5jXN8AQM9LWM0D4loKWxJek", STDWH_BODY, 1614265330);
        assert_eq!(h, stdwh_headers(STDWH_SIG, "1614265330"), "{secret}");
    }
}

#[test]
fn standard_webhooks_skips_other_versions_and_bounds_the_clock_both_ways() {
    let v = standard(STDWH_SECRET);
    let t = 1614265330;
    // The right signature under another version tag is not a v1 signature.
    let other = STDWH_SIG.replacen("v1,", "v1a,", 1);
    assert_eq!(
        v.verify(&stdwh_headers(&other, "1614265330"), STDWH_BODY, t),
        Err(VerifyError::Mismatch)
    );
    // Undecodable entries are skipped; a later good one still passes.
    let list = format!("v1,%%% v1a,abc {STDWH_SIG}");
    assert_eq!(
        v.verify(&stdwh_headers(&list, "1614265330"), STDWH_BODY, t),
        Ok(())
    );
    // Exactly the tolerance away passes, one second more does not.
    let h = stdwh_headers(STDWH_SIG, "1614265330");
    for (now, ok) in [
        (t + 300, true),
        (t - 300, true),
        (t + 301, false),
        (t - 301, false),
    ] {
        assert_eq!(
            v.verify(&h, STDWH_BODY, now).is_ok(),
            ok,
            "now = t{:+}",
            now - t
        );
    }
    // A signature for another body does not pass.
    assert_eq!(
        v.verify(&h, b"{\"test\": 1}", t),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn standard_webhooks_missing_and_malformed_headers() {
    let v = standard(STDWH_SECRET);
    let full = stdwh_headers(STDWH_SIG, "1614265330");
    for (i, name) in STANDARD_WEBHOOKS_HEADERS.iter().enumerate() {
        let mut h = full.clone();
        h.remove(i);
        assert_eq!(
            v.verify(&h, STDWH_BODY, 1614265330),
            Err(VerifyError::MissingHeader((*name).to_owned()))
        );
    }
    assert_eq!(
        v.verify(&stdwh_headers(STDWH_SIG, "soon"), STDWH_BODY, 1614265330),
        Err(VerifyError::Malformed("webhook-timestamp".into()))
    );
}

#[test]
fn standard_webhooks_keys_decode_as_the_libraries_do() {
    assert_eq!(
        standard_webhooks_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").map(|k| k.len()),
        Ok(24)
    );
    // Padding is optional, as in the official libraries.
    assert_eq!(
        standard_webhooks_key("whsec_McGXHcB7RO6vSZ/miXVo80qz4S0"),
        standard_webhooks_key("whsec_McGXHcB7RO6vSZ/miXVo80qz4S0=")
    );
    // Unused bits of the last symbol are ignored, as Python's b64decode does.
    assert_eq!(
        standard_webhooks_key("whsec_McGXHcB7RO6vSZ/miXVo80qz4S1"),
        standard_webhooks_key("whsec_McGXHcB7RO6vSZ/miXVo80qz4S0")
    );
    assert_eq!(
        standard_webhooks_key("whsec_not base64!"),
        Err(KeyError::NotBase64)
    );
    assert_eq!(standard_webhooks_key("whsec_"), Err(KeyError::Empty));
    // A verifier built by hand with a bad secret refuses, it does not panic.
    let bad = standard("whsec_***");
    assert_eq!(
        bad.verify(
            &stdwh_headers(STDWH_SIG, "1614265330"),
            STDWH_BODY,
            1614265330
        ),
        Err(VerifyError::Mismatch)
    );
    assert!(bad.sign(STDWH_BODY, 0).is_empty());
}

/// Signatures made by the official Python library (provenance in the file).
#[test]
fn standard_webhooks_vectors_made_by_the_python_library_verify() {
    let vectors = load("standard-webhooks-library-vectors.json");
    for v in &vectors {
        let verifier = verifier_for(v).unwrap();
        let body = v["payload"].as_str().unwrap().as_bytes();
        let now = v["now"].as_i64().unwrap();
        assert_eq!(
            verifier.verify(&headers_of(v), body, now),
            Ok(()),
            "{}",
            v["id"]
        );
        let h = headers_of(v);
        let ours = verifier.sign_message(h.header("webhook-id").unwrap(), body, now);
        assert_eq!(
            ours.header("webhook-signature"),
            h.header("webhook-signature"),
            "{}: ours signs as the library does",
            v["id"]
        );
    }
    assert_eq!(vectors.len(), 2);
}

fn shared(secrets: &[&str]) -> Verifier {
    Verifier {
        scheme: Scheme::Header {
            header: "X-Bridge-Token".into(),
        },
        secrets: secrets.iter().map(|s| Secret::new(*s)).collect(),
    }
}

#[test]
fn header_secret_compares_the_whole_value_and_rotates() {
    let v = shared(&["old-token", "new-token"]);
    let h = |value: &str| vec![("x-bridge-token".to_owned(), value.to_owned())];
    assert_eq!(v.verify(&h("new-token"), b"{}", 0), Ok(()));
    assert_eq!(v.verify(&h("old-token"), b"{}", 0), Ok(()));
    for wrong in ["new-token2", "new-toke", "NEW-TOKEN", "", " new-token"] {
        assert_eq!(
            v.verify(&h(wrong), b"{}", 0),
            Err(VerifyError::WrongSecret("X-Bridge-Token".into())),
            "{wrong:?}"
        );
    }
    let none: Vec<(String, String)> = vec![];
    let missing = v.verify(&none, b"{}", 0);
    assert_eq!(
        missing,
        Err(VerifyError::MissingSecretHeader("X-Bridge-Token".into()))
    );
    assert_eq!(missing.unwrap_err().reason(), "signature_missing");
    assert_eq!(
        VerifyError::WrongSecret(String::new()).reason(),
        "signature_mismatch"
    );
    assert_eq!(
        v.sign(b"{}", 0),
        vec![("X-Bridge-Token".to_owned(), "old-token".to_owned())]
    );
}

#[test]
fn sign_round_trips_for_the_new_schemes() {
    for v in [standard(STDWH_SECRET), shared(&["t0k3n"])] {
        let h = v.sign(b"{\"a\":1}", 1_700_000_000);
        assert_eq!(
            v.verify(&h, b"{\"a\":1}", 1_700_000_010),
            Ok(()),
            "{:?}",
            v.scheme
        );
    }
    let a = standard(STDWH_SECRET).sign(b"{}", 0);
    let b = standard(STDWH_SECRET).sign(b"{}", 0);
    assert!(a[0].1.starts_with("msg_"), "{a:?}");
    assert_ne!(a[0].1, b[0].1, "each signing gets a fresh message id");
}
