//! From verified bytes to a [`VerifiedEvent`]: JSON check, event type and the
//! dedupe id, per SPEC section 3.

use super::{HeaderLookup, Verifier, VerifyError};
use crate::transform::jsonpath::JsonPath;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// How a source names its events and their dedupe ids.
#[derive(Debug, Clone)]
pub enum IdentityRule {
    /// Type `$.event`; id `{webhook_id}:{event}:{history ids}` or the body hash.
    ClickUp,
    /// Type `$.type`; id `$.id`.
    Stripe,
    /// Type from `event` (else `""`); id from `id` (else the body hash).
    Generic {
        /// JSONPath of the event type.
        event: Option<JsonPath>,
        /// JSONPath of the dedupe id.
        id: Option<JsonPath>,
    },
}

/// The type and dedupe id of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventIdentity {
    /// The event type routes match on (`taskStatusUpdated`, `invoice.paid`).
    pub event_type: String,
    /// The key a repeat is recognised by, unique per source.
    pub dedupe_key: String,
}

/// An event whose signature was checked and whose body is JSON. Only
/// [`verify_event`] builds one.
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    source: String,
    identity: EventIdentity,
    body: Vec<u8>,
}

impl VerifiedEvent {
    /// The source name (the `{source}` of `/hooks/{source}`).
    pub fn source(&self) -> &str {
        &self.source
    }
    /// Type and dedupe key.
    pub fn identity(&self) -> &EventIdentity {
        &self.identity
    }
    /// The exact bytes received.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Takes the event apart (the store keeps the body without copying it).
    pub fn into_parts(self) -> (String, EventIdentity, Vec<u8>) {
        (self.source, self.identity, self.body)
    }
}

/// Why an inbound request is refused after the source was found.
#[derive(Debug, thiserror::Error)]
pub enum RejectReason {
    /// Signature problems: 403.
    #[error(transparent)]
    Signature(#[from] VerifyError),
    /// The body is not JSON, or lacks what the source's events must carry: 400.
    #[error("{0}")]
    BadBody(String),
}

/// Verifies the signature, then checks the body and derives its identity.
pub fn verify_event(
    source: &str,
    verifier: &Verifier,
    rule: &IdentityRule,
    headers: &(impl HeaderLookup + ?Sized),
    body: Vec<u8>,
    now: i64,
) -> Result<VerifiedEvent, RejectReason> {
    verifier.verify(headers, &body, now)?;
    let identity = identify(rule, &body)?;
    Ok(VerifiedEvent {
        source: source.to_owned(),
        identity,
        body,
    })
}

fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[derive(Deserialize)]
struct ClickUpHead<'a> {
    #[serde(borrow)]
    event: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    webhook_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    history_items: Vec<HistoryHead>,
}

#[derive(Deserialize)]
struct HistoryHead {
    id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StripeHead<'a> {
    #[serde(borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    kind: Option<std::borrow::Cow<'a, str>>,
}

fn not_json(e: serde_json::Error) -> RejectReason {
    RejectReason::BadBody(format!("body is not valid JSON: {e}"))
}

fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Derives the event type and dedupe key from a body (pure; used by tests and
/// `simulate` too).
pub fn identify(rule: &IdentityRule, body: &[u8]) -> Result<EventIdentity, RejectReason> {
    match rule {
        IdentityRule::ClickUp => {
            let head: ClickUpHead = serde_json::from_slice(body).map_err(not_json)?;
            let event = head.event.ok_or_else(|| {
                RejectReason::BadBody("clickup event has no \"event\" field".into())
            })?;
            let webhook = head.webhook_id.unwrap_or_default();
            let ids: Vec<String> = head
                .history_items
                .iter()
                .filter_map(|h| h.id.as_ref().map(text_of))
                .collect();
            let tail = if ids.is_empty() {
                sha256_hex(body)
            } else {
                ids.join(",")
            };
            Ok(EventIdentity {
                dedupe_key: format!("{webhook}:{event}:{tail}"),
                event_type: event.into_owned(),
            })
        }
        IdentityRule::Stripe => {
            let head: StripeHead = serde_json::from_slice(body).map_err(not_json)?;
            let id = head
                .id
                .ok_or_else(|| RejectReason::BadBody("stripe event has no \"id\" field".into()))?;
            let kind = head.kind.ok_or_else(|| {
                RejectReason::BadBody("stripe event has no \"type\" field".into())
            })?;
            Ok(EventIdentity {
                event_type: kind.into_owned(),
                dedupe_key: id.into_owned(),
            })
        }
        IdentityRule::Generic { event, id } => {
            let value: serde_json::Value = serde_json::from_slice(body).map_err(not_json)?;
            let event_type = event
                .as_ref()
                .and_then(|p| p.first(&value))
                .map(text_of)
                .unwrap_or_default();
            let dedupe_key = id
                .as_ref()
                .and_then(|p| p.first(&value))
                .map(text_of)
                .unwrap_or_else(|| sha256_hex(body));
            Ok(EventIdentity {
                event_type,
                dedupe_key,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clickup_key_includes_the_event_name_and_history_ids() {
        let a =
            br#"{"event":"taskUpdated","webhook_id":"w","history_items":[{"id":"1"},{"id":2}]}"#;
        let b = br#"{"event":"taskStatusUpdated","webhook_id":"w","history_items":[{"id":"1"},{"id":2}]}"#;
        let ia = identify(&IdentityRule::ClickUp, a).unwrap();
        let ib = identify(&IdentityRule::ClickUp, b).unwrap();
        assert_eq!(ia.dedupe_key, "w:taskUpdated:1,2");
        assert_eq!(ib.dedupe_key, "w:taskStatusUpdated:1,2");
        assert_eq!(ia.event_type, "taskUpdated");
    }

    #[test]
    fn clickup_without_history_uses_the_body_hash() {
        let body = br#"{"webhook_id":"w","event":"taskCreated","task_id":"c0j"}"#;
        let id = identify(&IdentityRule::ClickUp, body).unwrap();
        assert_eq!(id.dedupe_key, format!("w:taskCreated:{}", sha256_hex(body)));
    }

    #[test]
    fn every_clickup_fixture_identifies() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clickup");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.extension().is_some_and(|e| e == "json") && !name.starts_with("signature") {
                let body = std::fs::read(&path).unwrap();
                let id = identify(&IdentityRule::ClickUp, &body)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(
                    name.starts_with(&id.event_type),
                    "{name} -> {}",
                    id.event_type
                );
                n += 1;
            }
        }
        assert!(n > 40);
    }

    #[test]
    fn stripe_and_generic_rules() {
        let s = identify(
            &IdentityRule::Stripe,
            br#"{"id":"evt_1","type":"invoice.paid"}"#,
        )
        .unwrap();
        assert_eq!(
            (s.event_type.as_str(), s.dedupe_key.as_str()),
            ("invoice.paid", "evt_1")
        );
        let g = IdentityRule::Generic {
            event: Some(JsonPath::compile("$.action").unwrap()),
            id: Some(JsonPath::compile("$.hook_id").unwrap()),
        };
        let i = identify(&g, br#"{"action":"opened","hook_id":42}"#).unwrap();
        assert_eq!(
            (i.event_type.as_str(), i.dedupe_key.as_str()),
            ("opened", "42")
        );
        let bare = IdentityRule::Generic {
            event: None,
            id: None,
        };
        let i = identify(&bare, b"{}").unwrap();
        assert_eq!(i.event_type, "");
        assert_eq!(i.dedupe_key, sha256_hex(b"{}"));
        assert!(matches!(
            identify(&bare, b"{nope"),
            Err(RejectReason::BadBody(_))
        ));
    }
}
