//! From verified bytes to a [`VerifiedEvent`]: JSON check, event type and the
//! dedupe id (from the body, or from the request's headers), per the source's
//! rule.

use super::{HeaderLookup, Verifier, VerifyError, standard_webhooks_header};
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
    /// Type from `event` / `event_header` (else `""`); id from `id` /
    /// `id_header` (else the body hash).
    Generic {
        /// Where the event type is.
        event: Option<Field>,
        /// Where the dedupe id is.
        id: Option<Field>,
    },
    /// Standard Webhooks: type from `event` (`$.type` unless overridden); id
    /// from `id` when given, else the `webhook-id` (`svix-id`) header.
    StandardWebhooks {
        /// Where the event type is.
        event: Field,
        /// Where the dedupe id is, when not the message id.
        id: Option<Field>,
    },
}

/// Where a value of the event is read: a JSONPath in the body or a header.
#[derive(Debug, Clone)]
pub enum Field {
    /// The first match of a JSONPath in the body.
    Path(JsonPath),
    /// The value of a request header (case-insensitive name).
    Header(String),
}

impl Field {
    /// The text of the field, `None` when the path matches nothing or the
    /// header is absent or empty (an empty id would make every event a repeat).
    fn read(
        &self,
        headers: &(impl HeaderLookup + ?Sized),
        body: &serde_json::Value,
    ) -> Option<String> {
        match self {
            Field::Path(p) => p.first(body).map(text_of),
            Field::Header(name) => headers
                .header(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
        }
    }
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
    /// The body parsed (once, by the check that it is JSON): routing at
    /// acceptance reads it instead of parsing the bytes again.
    payload: serde_json::Value,
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
    /// The body, parsed.
    pub fn payload(&self) -> &serde_json::Value {
        &self.payload
    }

    /// Takes the parsed payload out (leaving `null`), for a delivery that is
    /// started from it once the event is stored.
    pub fn take_payload(&mut self) -> serde_json::Value {
        std::mem::take(&mut self.payload)
    }

    /// Takes the event apart (the store keeps the body without copying it;
    /// the parsed payload is dropped).
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
    let payload = parse_body(&body)?;
    let identity = identify_parsed(rule, headers, &body, &payload)?;
    Ok(VerifiedEvent {
        source: source.to_owned(),
        identity,
        body,
        payload,
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

/// The deepest nesting of arrays and objects an event may have (serde_json's
/// own recursion limit: a deeper body could be stored but never read back).
pub const MAX_DEPTH: usize = 128;

/// Parses the whole body strictly: UTF-8, escapes (a lone surrogate such as
/// `"\ud83d"`, what a JavaScript sender leaves of a truncated emoji, is
/// refused) and nesting up to [`MAX_DEPTH`]. What passes here parses again
/// later in the router and the deliverer, so a stored payload is never read
/// as null.
pub fn parse_body(body: &[u8]) -> Result<serde_json::Value, RejectReason> {
    // serde_json reports invalid UTF-8 inside strings, lone surrogates in
    // `\u` escapes and "recursion limit exceeded" past 128 levels when it
    // builds a `Value` (its skipping parsers do not: that is why the whole
    // body is built, not only the fields identity needs).
    serde_json::from_slice(body).map_err(not_json)
}

fn head<'a, T: Deserialize<'a>>(value: &'a serde_json::Value) -> Result<T, RejectReason> {
    T::deserialize(value).map_err(|e| {
        RejectReason::BadBody(format!("body is JSON but not an event of this source: {e}"))
    })
}

/// Derives the event type and dedupe key from a body and the request's
/// headers (pure; used by tests and `simulate` too). The whole body is
/// validated first ([`parse_body`]).
pub fn identify(
    rule: &IdentityRule,
    headers: &(impl HeaderLookup + ?Sized),
    body: &[u8],
) -> Result<EventIdentity, RejectReason> {
    identify_parsed(rule, headers, body, &parse_body(body)?)
}

/// [`identify`] of a body parsed already.
fn identify_parsed(
    rule: &IdentityRule,
    headers: &(impl HeaderLookup + ?Sized),
    body: &[u8],
    value: &serde_json::Value,
) -> Result<EventIdentity, RejectReason> {
    match rule {
        IdentityRule::ClickUp => {
            let head: ClickUpHead = head(value)?;
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
            let head: StripeHead = head(value)?;
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
            let event_type = event
                .as_ref()
                .and_then(|f| f.read(headers, value))
                .unwrap_or_default();
            let dedupe_key = id
                .as_ref()
                .and_then(|f| f.read(headers, value))
                .unwrap_or_else(|| sha256_hex(body));
            Ok(EventIdentity {
                event_type,
                dedupe_key,
            })
        }
        IdentityRule::StandardWebhooks { event, id } => {
            let event_type = event.read(headers, value).unwrap_or_default();
            let dedupe_key = match id {
                Some(f) => f.read(headers, value),
                None => standard_webhooks_header(headers, "id")
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned),
            }
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

    const NO_HEADERS: &[(String, String)] = &[];

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn generic_rules_read_headers_and_fall_back_when_they_are_missing() {
        let rule = IdentityRule::Generic {
            event: Some(Field::Header("X-GitHub-Event".into())),
            id: Some(Field::Header("X-GitHub-Delivery".into())),
        };
        let body = br#"{"action":"opened"}"#;
        let with = h(&[("x-github-event", "issues"), ("X-GitHub-Delivery", "d-1")]);
        let i = identify(&rule, &with, body).unwrap();
        assert_eq!(
            (i.event_type.as_str(), i.dedupe_key.as_str()),
            ("issues", "d-1")
        );
        let i = identify(&rule, NO_HEADERS, body).unwrap();
        assert_eq!(i.event_type, "");
        assert_eq!(i.dedupe_key, sha256_hex(body));
        let empty = h(&[("X-GitHub-Delivery", "  ")]);
        assert_eq!(
            identify(&rule, &empty, body).unwrap().dedupe_key,
            sha256_hex(body)
        );
    }

    #[test]
    fn standard_webhooks_rule_takes_the_message_id_unless_told_otherwise() {
        let rule = IdentityRule::StandardWebhooks {
            event: Field::Path(JsonPath::compile("$.type").unwrap()),
            id: None,
        };
        let body = br#"{"type":"response.completed","id":"x"}"#;
        for name in ["webhook-id", "svix-id"] {
            let i = identify(&rule, &h(&[(name, "msg_1")]), body).unwrap();
            assert_eq!(
                (i.event_type.as_str(), i.dedupe_key.as_str()),
                ("response.completed", "msg_1"),
                "{name}"
            );
        }
        assert_eq!(
            identify(&rule, NO_HEADERS, body).unwrap().dedupe_key,
            sha256_hex(body)
        );
        let by_body = IdentityRule::StandardWebhooks {
            event: Field::Header("X-Kind".into()),
            id: Some(Field::Path(JsonPath::compile("$.id").unwrap())),
        };
        let i = identify(
            &by_body,
            &h(&[("webhook-id", "msg_1"), ("x-kind", "k")]),
            body,
        )
        .unwrap();
        assert_eq!((i.event_type.as_str(), i.dedupe_key.as_str()), ("k", "x"));
    }

    #[test]
    fn clickup_key_includes_the_event_name_and_history_ids() {
        let a =
            br#"{"event":"taskUpdated","webhook_id":"w","history_items":[{"id":"1"},{"id":2}]}"#;
        let b = br#"{"event":"taskStatusUpdated","webhook_id":"w","history_items":[{"id":"1"},{"id":2}]}"#;
        let ia = identify(&IdentityRule::ClickUp, NO_HEADERS, a).unwrap();
        let ib = identify(&IdentityRule::ClickUp, NO_HEADERS, b).unwrap();
        assert_eq!(ia.dedupe_key, "w:taskUpdated:1,2");
        assert_eq!(ib.dedupe_key, "w:taskStatusUpdated:1,2");
        assert_eq!(ia.event_type, "taskUpdated");
    }

    #[test]
    fn clickup_without_history_uses_the_body_hash() {
        let body = br#"{"webhook_id":"w","event":"taskCreated","task_id":"c0j"}"#;
        let id = identify(&IdentityRule::ClickUp, NO_HEADERS, body).unwrap();
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
                let id = identify(&IdentityRule::ClickUp, NO_HEADERS, &body)
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
            NO_HEADERS,
            br#"{"id":"evt_1","type":"invoice.paid"}"#,
        )
        .unwrap();
        assert_eq!(
            (s.event_type.as_str(), s.dedupe_key.as_str()),
            ("invoice.paid", "evt_1")
        );
        let g = IdentityRule::Generic {
            event: Some(Field::Path(JsonPath::compile("$.action").unwrap())),
            id: Some(Field::Path(JsonPath::compile("$.hook_id").unwrap())),
        };
        let i = identify(&g, NO_HEADERS, br#"{"action":"opened","hook_id":42}"#).unwrap();
        assert_eq!(
            (i.event_type.as_str(), i.dedupe_key.as_str()),
            ("opened", "42")
        );
        let bare = IdentityRule::Generic {
            event: None,
            id: None,
        };
        let i = identify(&bare, NO_HEADERS, b"{}").unwrap();
        assert_eq!(i.event_type, "");
        assert_eq!(i.dedupe_key, sha256_hex(b"{}"));
        assert!(matches!(
            identify(&bare, NO_HEADERS, b"{nope"),
            Err(RejectReason::BadBody(_))
        ));
    }

    #[test]
    fn the_whole_body_is_validated_for_every_rule() {
        let deep = format!(
            "{{\"event\":\"x\",\"type\":\"x\",\"id\":\"1\",\"deep\":{}{}}}",
            "[".repeat(MAX_DEPTH + 10),
            "]".repeat(MAX_DEPTH + 10)
        );
        let ok_depth = format!(
            "{{\"event\":\"x\",\"type\":\"x\",\"id\":\"1\",\"deep\":{}{}}}",
            "[".repeat(MAX_DEPTH - 2),
            "]".repeat(MAX_DEPTH - 2)
        );
        let mut bad_utf8 = br#"{"event":"x","type":"x","id":"1","note":"caf"#.to_vec();
        bad_utf8.extend_from_slice(&[0xC3, 0x28]);
        bad_utf8.extend_from_slice(br#""}"#);
        let bad: Vec<(&str, Vec<u8>)> = vec![
            (
                "lone surrogate",
                br#"{"event":"x","type":"x","id":"1","note":"\ud83d"}"#.to_vec(),
            ),
            (
                "lone low surrogate",
                br#"{"event":"x","type":"x","id":"1","note":"\ude00 x"}"#.to_vec(),
            ),
            ("invalid utf-8", bad_utf8),
            ("too deep", deep.into_bytes()),
        ];
        let rules = [
            IdentityRule::ClickUp,
            IdentityRule::Stripe,
            IdentityRule::Generic {
                event: None,
                id: None,
            },
            IdentityRule::StandardWebhooks {
                event: Field::Path(JsonPath::compile("$.type").unwrap()),
                id: None,
            },
        ];
        for rule in &rules {
            for (name, body) in &bad {
                let got = identify(rule, NO_HEADERS, body);
                assert!(
                    matches!(&got, Err(RejectReason::BadBody(m)) if m.contains("not valid JSON")),
                    "{name} under {rule:?}: {got:?}"
                );
            }
            let paired = br#"{"event":"x","type":"x","id":"1","note":"\ud83d\ude00"}"#;
            assert!(identify(rule, NO_HEADERS, paired).is_ok(), "{rule:?}");
            assert!(
                identify(rule, NO_HEADERS, ok_depth.as_bytes()).is_ok(),
                "{rule:?}"
            );
        }
    }
}
