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

/// Runs every vector of the schemes we implement and returns how many ran.
fn run_vectors(file: &str) -> usize {
    let mut ran = 0;
    for v in load(file) {
        let scheme = v["scheme"].as_str().unwrap();
        let verifier = match scheme {
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
            _ => continue,
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
    assert!(ran >= 20, "only {ran} vectors ran");
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
