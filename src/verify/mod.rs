//! Signature verification: ClickUp, Stripe, generic HMAC-SHA256, Standard
//! Webhooks, and a shared secret sent as a header.
//!
//! Pure functions over headers and the exact body bytes. Comparison is
//! constant time (`Mac::verify_slice`, `subtle`); a received signature is
//! decoded to bytes first, never compared as a hex string. Several secrets may
//! be given (rotation): any one that matches passes.
//!
//! Architecture Invariant: only this module turns a request into a
//! [`VerifiedEvent`]; everything downstream takes that type.

mod event;

pub use event::{
    EventIdentity, Field, IdentityRule, MAX_DEPTH, RejectReason, VerifiedEvent, identify,
    parse_body, verify_event,
};

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<Sha256>;

/// A signing secret. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The raw value, for computing a MAC. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Header access, so verification does not depend on the HTTP framework.
pub trait HeaderLookup {
    /// The value of header `name` (case-insensitive), if present and valid UTF-8.
    fn header(&self, name: &str) -> Option<&str>;
}

impl HeaderLookup for [(String, String)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl HeaderLookup for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

impl HeaderLookup for actix_web::http::header::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How the signature of a generic source is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Lower- or upper-case hexadecimal.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// The signature scheme of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// `X-Signature: hex(HMAC-SHA256(body))`.
    ClickUp,
    /// `Stripe-Signature: t=..,v1=..`, HMAC-SHA256 of `"{t}.{body}"`.
    Stripe {
        /// Oldest accepted timestamp, in seconds before now.
        tolerance_secs: u64,
    },
    /// Any header carrying HMAC-SHA256 of the body.
    Hmac {
        /// The header name.
        header: String,
        /// Stripped from the header value before decoding (`sha256=`).
        prefix: String,
        /// Hex or base64.
        encoding: Encoding,
    },
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature` (or their `svix-` names); HMAC-SHA256 of
    /// `"{id}.{timestamp}.{body}"` keyed with the base64 secret after `whsec_`.
    StandardWebhooks {
        /// Largest accepted distance of the timestamp from now, in seconds,
        /// in the past or the future.
        tolerance_secs: u64,
    },
    /// A shared secret as the whole value of a header.
    Header {
        /// The header name.
        header: String,
    },
}

/// The headers of Standard Webhooks, each also accepted under its `svix-`
/// name (Svix sends those).
pub const STANDARD_WEBHOOKS_HEADERS: [&str; 3] =
    ["webhook-id", "webhook-timestamp", "webhook-signature"];

/// A Standard Webhooks header (`"id"`, `"timestamp"`, `"signature"`):
/// `webhook-{part}`, else `svix-{part}`.
pub fn standard_webhooks_header<'h>(
    headers: &'h (impl HeaderLookup + ?Sized),
    part: &str,
) -> Option<&'h str> {
    headers
        .header(&format!("webhook-{part}"))
        .or_else(|| headers.header(&format!("svix-{part}")))
}

/// Why a Standard Webhooks secret cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The part after `whsec_` is not base64.
    #[error(
        "the secret is not valid base64 after its \"whsec_\" prefix: copy the signing secret exactly as the sender shows it (whsec_...)"
    )]
    NotBase64,
    /// Nothing is left after `whsec_`.
    #[error("the secret is empty after its \"whsec_\" prefix: copy the whole signing secret")]
    Empty,
}

/// Base64 as the official libraries read secrets: padding optional, unused
/// bits of the last symbol ignored.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The HMAC key of a Standard Webhooks secret: the base64 decoding of what
/// follows `whsec_` (a secret without the prefix is the base64 itself).
pub fn standard_webhooks_key(secret: &str) -> Result<Vec<u8>, KeyError> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = LENIENT_BASE64
        .decode(b64)
        .map_err(|_| KeyError::NotBase64)?;
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    Ok(key)
}

/// Why a request was not verified. Every variant answers 403.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The signature header is absent.
    #[error("missing signature header {0}")]
    MissingHeader(String),
    /// The header is present but cannot be parsed.
    #[error("malformed signature header {0}")]
    Malformed(String),
    /// No secret produces the given signature.
    #[error("signature does not match")]
    Mismatch,
    /// Timestamp older than the tolerance (Stripe), or further from now than
    /// the tolerance either way (Standard Webhooks).
    #[error("timestamp outside the tolerance")]
    Expired,
    /// A `header` source's header is absent.
    #[error("missing header {0}, which must carry the shared secret")]
    MissingSecretHeader(String),
    /// A `header` source's header does not hold any configured secret.
    #[error("header {0} does not hold the shared secret")]
    WrongSecret(String),
}

impl VerifyError {
    /// A short, stable reason for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) | VerifyError::MissingSecretHeader(_) => {
                "signature_missing"
            }
            VerifyError::Malformed(_) => "signature_malformed",
            VerifyError::Mismatch | VerifyError::WrongSecret(_) => "signature_mismatch",
            VerifyError::Expired => "timestamp_expired",
        }
    }
}

/// A scheme with its secrets: checks and produces signatures.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// The scheme.
    pub scheme: Scheme,
    /// One or more secrets; any one matching passes.
    pub secrets: Vec<Secret>,
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for p in parts {
        m.update(p);
    }
    m
}

fn matches_any(secrets: &[Secret], parts: &[&[u8]], signature: &[u8]) -> bool {
    secrets.iter().any(|s| {
        mac(s.expose().as_bytes(), parts)
            .verify_slice(signature)
            .is_ok()
    })
}

fn compute_with_key(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    mac(key, parts).finalize().into_bytes().to_vec()
}

fn compute(secret: &Secret, parts: &[&[u8]]) -> Vec<u8> {
    compute_with_key(secret.expose().as_bytes(), parts)
}

/// Whether `value` equals any secret, in time independent of the values and
/// their lengths: the SHA-256 digests are compared, with `subtle`, against
/// every secret (no early exit).
fn holds_a_secret(secrets: &[Secret], value: &str) -> bool {
    let given = Sha256::digest(value.as_bytes());
    let hit = secrets.iter().fold(subtle::Choice::from(0), |acc, s| {
        acc | Sha256::digest(s.expose().as_bytes()).ct_eq(&given)
    });
    bool::from(hit)
}

/// A fresh Standard Webhooks message id, `msg_` and 32 hex digits.
fn fresh_message_id() -> String {
    format!("msg_{}", uuid::Uuid::now_v7().simple())
}

impl Verifier {
    /// The name of the header that carries the signature (for Standard
    /// Webhooks, `webhook-signature`; `webhook-id` and `webhook-timestamp` come
    /// with it).
    pub fn header_name(&self) -> &str {
        match &self.scheme {
            Scheme::ClickUp => "X-Signature",
            Scheme::Stripe { .. } => "Stripe-Signature",
            Scheme::Hmac { header, .. } | Scheme::Header { header } => header,
            Scheme::StandardWebhooks { .. } => "webhook-signature",
        }
    }

    /// Checks the signature of `body` given the request headers, at time `now`
    /// (Unix seconds).
    pub fn verify(
        &self,
        headers: &(impl HeaderLookup + ?Sized),
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        let name = self.header_name();
        let signature_header = || {
            headers
                .header(name)
                .map(str::trim)
                .ok_or_else(|| VerifyError::MissingHeader(name.to_owned()))
        };
        match &self.scheme {
            Scheme::ClickUp => {
                let sig = hex::decode(signature_header()?)
                    .map_err(|_| VerifyError::Malformed(name.to_owned()))?;
                if matches_any(&self.secrets, &[body], &sig) {
                    Ok(())
                } else {
                    Err(VerifyError::Mismatch)
                }
            }
            Scheme::Stripe { tolerance_secs } => verify_stripe(
                &self.secrets,
                signature_header()?,
                body,
                now,
                *tolerance_secs,
            ),
            Scheme::Hmac {
                prefix, encoding, ..
            } => {
                let raw = signature_header()?
                    .strip_prefix(prefix.as_str())
                    .ok_or_else(|| VerifyError::Malformed(name.to_owned()))?;
                let sig = match encoding {
                    Encoding::Hex => hex::decode(raw).ok(),
                    Encoding::Base64 => STANDARD.decode(raw).ok(),
                }
                .ok_or_else(|| VerifyError::Malformed(name.to_owned()))?;
                if matches_any(&self.secrets, &[body], &sig) {
                    Ok(())
                } else {
                    Err(VerifyError::Mismatch)
                }
            }
            Scheme::StandardWebhooks { tolerance_secs } => {
                verify_standard_webhooks(&self.secrets, headers, body, now, *tolerance_secs)
            }
            Scheme::Header { header } => {
                // The whole value as received: a secret is not trimmed.
                let value = headers
                    .header(header)
                    .ok_or_else(|| VerifyError::MissingSecretHeader(header.clone()))?;
                if holds_a_secret(&self.secrets, value) {
                    Ok(())
                } else {
                    Err(VerifyError::WrongSecret(header.clone()))
                }
            }
        }
    }

    /// The header(s) this verifier accepts for `body` at time `now`, signed with
    /// the first secret (for `clickup-bridge sign` and tests). Standard
    /// Webhooks get a fresh `msg_` id.
    pub fn sign(&self, body: &[u8], now: i64) -> Vec<(String, String)> {
        self.sign_message(&fresh_message_id(), body, now)
    }

    /// As [`Verifier::sign`], with the given Standard Webhooks message id
    /// (other schemes have no id and ignore it). Empty when the first secret
    /// cannot sign (none, or a Standard Webhooks secret that is not base64).
    pub fn sign_message(&self, msg_id: &str, body: &[u8], now: i64) -> Vec<(String, String)> {
        let Some(secret) = self.secrets.first() else {
            return Vec::new();
        };
        let value = match &self.scheme {
            Scheme::ClickUp => hex::encode(compute(secret, &[body])),
            Scheme::Stripe { .. } => {
                let t = now.to_string();
                let sig = compute(secret, &[t.as_bytes(), b".", body]);
                format!("t={t},v1={}", hex::encode(sig))
            }
            Scheme::Hmac {
                prefix, encoding, ..
            } => {
                let sig = compute(secret, &[body]);
                let enc = match encoding {
                    Encoding::Hex => hex::encode(sig),
                    Encoding::Base64 => STANDARD.encode(sig),
                };
                format!("{prefix}{enc}")
            }
            Scheme::Header { .. } => secret.expose().to_owned(),
            Scheme::StandardWebhooks { .. } => {
                let Ok(key) = standard_webhooks_key(secret.expose()) else {
                    return Vec::new();
                };
                let t = now.to_string();
                let sig =
                    compute_with_key(&key, &[msg_id.as_bytes(), b".", t.as_bytes(), b".", body]);
                let [id_name, t_name, sig_name] = STANDARD_WEBHOOKS_HEADERS;
                return vec![
                    (id_name.to_owned(), msg_id.to_owned()),
                    (t_name.to_owned(), t),
                    (sig_name.to_owned(), format!("v1,{}", STANDARD.encode(sig))),
                ];
            }
        };
        vec![(self.header_name().to_owned(), value)]
    }
}

/// Standard Webhooks, as in its official libraries: every `v1,<base64>` entry
/// of the space-separated list is a candidate, other versions and undecodable
/// entries are skipped; the timestamp must be within the tolerance of now in
/// both directions. Checked after the signature, as for Stripe, so an
/// unsigned request learns nothing about the clock.
fn verify_standard_webhooks(
    secrets: &[Secret],
    headers: &(impl HeaderLookup + ?Sized),
    body: &[u8],
    now: i64,
    tolerance: u64,
) -> Result<(), VerifyError> {
    let [id_name, t_name, sig_name] = STANDARD_WEBHOOKS_HEADERS;
    let get = |part: &str, name: &str| {
        standard_webhooks_header(headers, part)
            .map(str::trim)
            .ok_or_else(|| VerifyError::MissingHeader(name.to_owned()))
    };
    let id = get("id", id_name)?;
    let t_str = get("timestamp", t_name)?;
    let list = get("signature", sig_name)?;
    let t: i64 = t_str
        .parse()
        .map_err(|_| VerifyError::Malformed(t_name.to_owned()))?;
    let candidates: Vec<Vec<u8>> = list
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    // Secrets are checked when routes.yaml is compiled; one that is not
    // base64 here (built by hand) simply matches nothing.
    let keys: Vec<Vec<u8>> = secrets
        .iter()
        .filter_map(|s| standard_webhooks_key(s.expose()).ok())
        .collect();
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", t_str.as_bytes(), b".", body];
    let ok = candidates.iter().any(|sig| {
        keys.iter()
            .any(|k| mac(k, &parts).verify_slice(sig).is_ok())
    });
    if !ok {
        return Err(VerifyError::Mismatch);
    }
    if now.abs_diff(t) > tolerance {
        return Err(VerifyError::Expired);
    }
    Ok(())
}

/// Stripe's scheme, as in its official libraries: every `v1` value is a
/// candidate, `v0` and unknown keys are ignored, the timestamp must not be older
/// than the tolerance (future timestamps pass).
fn verify_stripe(
    secrets: &[Secret],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: u64,
) -> Result<(), VerifyError> {
    let malformed = || VerifyError::Malformed("Stripe-Signature".to_owned());
    let mut timestamp: Option<&str> = None;
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    for item in header.split(',') {
        let Some((k, v)) = item.trim().split_once('=') else {
            return Err(malformed());
        };
        match k {
            "t" => timestamp = Some(v),
            // An undecodable v1 is skipped: another v1 may still match.
            "v1" => candidates.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let t_str = timestamp.ok_or_else(malformed)?;
    let t: i64 = t_str.parse().map_err(|_| malformed())?;
    if candidates.is_empty() {
        return Err(VerifyError::Mismatch);
    }
    let ok = candidates
        .iter()
        .any(|sig| matches_any(secrets, &[t_str.as_bytes(), b".", body], sig));
    if !ok {
        return Err(VerifyError::Mismatch);
    }
    let age = now.saturating_sub(t);
    if age > i64::try_from(tolerance).unwrap_or(i64::MAX) {
        return Err(VerifyError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
