//! Signature headers: any header values and body, under every scheme,
//! verify or refuse without panicking; what we sign ourselves verifies.
#![no_main]
use clickup_bridge::verify::{Encoding, Scheme, Secret, Verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, Vec<(String, String)>, Vec<u8>, i64)| {
    let (kind, headers, body, now) = input;
    let scheme = match kind % 6 {
        0 => Scheme::ClickUp,
        1 => Scheme::Stripe {
            tolerance_secs: 300,
        },
        2 => Scheme::Hmac {
            header: "X-Hub-Signature-256".into(),
            prefix: "sha256=".into(),
            encoding: Encoding::Hex,
        },
        3 => Scheme::Hmac {
            header: "X-Shopify-Hmac-Sha256".into(),
            prefix: String::new(),
            encoding: Encoding::Base64,
        },
        4 => Scheme::StandardWebhooks {
            tolerance_secs: 300,
        },
        _ => Scheme::Header {
            header: "X-Bridge-Token".into(),
        },
    };
    let verifier = Verifier {
        scheme,
        secrets: vec![Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
    };
    let _ = verifier.verify(&headers, &body, now);
    let now = now.clamp(0, 4_000_000_000);
    let signed = verifier.sign_message("msg_1", &body, now);
    assert!(verifier.verify(&signed, &body, now).is_ok());
});
