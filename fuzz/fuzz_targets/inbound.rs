//! Inbound bodies: whatever a sender posts, identity is derived or the body
//! refused (400), never a panic; a body that is accepted parses again as
//! JSON later (a stored payload is never read back as null).
#![no_main]
use clickup_bridge::transform::jsonpath::JsonPath;
use clickup_bridge::verify::{Field, IdentityRule, identify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<(String, String)>, Vec<u8>)| {
    let (headers, body) = input;
    let path = |p: &str| Field::Path(JsonPath::compile(p).unwrap_or_else(|e| panic!("{e}")));
    let rules = [
        IdentityRule::ClickUp,
        IdentityRule::Stripe,
        IdentityRule::Generic {
            event: Some(path("$.action")),
            id: Some(Field::Header("X-GitHub-Delivery".into())),
        },
        IdentityRule::StandardWebhooks {
            event: path("$.type"),
            id: None,
        },
    ];
    for rule in &rules {
        if identify(rule, &headers, &body).is_ok() {
            let again: Result<serde_json::Value, _> = serde_json::from_slice(&body);
            assert!(again.is_ok(), "accepted but does not parse again");
        }
    }
});
