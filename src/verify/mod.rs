//! Signature verification: ClickUp, Stripe and generic HMAC-SHA256.
//!
//! Pure functions over headers and the exact body bytes. Comparison is
//! constant time (`Mac::verify_slice`); a received signature is decoded to
//! bytes first, never compared as a hex string. Several secrets may be given
//! (rotation): any one that matches passes.
//!
//! Architecture Invariant: only this module turns a request into a
//! [`VerifiedEvent`]; everything downstream takes that type.

mod event;

pub use event::{EventIdentity, IdentityRule, RejectReason, VerifiedEvent, identify, verify_event};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use std::fmt;

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
    /// Stripe timestamp older than the tolerance.
    #[error("timestamp outside the tolerance")]
    Expired,
}

impl VerifyError {
    /// A short, stable reason for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "signature_missing",
            VerifyError::Malformed(_) => "signature_malformed",
            VerifyError::Mismatch => "signature_mismatch",
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

fn mac(secret: &Secret) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    match <HmacSha256 as KeyInit>::new_from_slice(secret.expose().as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

fn matches_any(secrets: &[Secret], parts: &[&[u8]], signature: &[u8]) -> bool {
    secrets.iter().any(|s| {
        let mut m = mac(s);
        for p in parts {
            m.update(p);
        }
        m.verify_slice(signature).is_ok()
    })
}

fn compute(secret: &Secret, parts: &[&[u8]]) -> Vec<u8> {
    let mut m = mac(secret);
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

impl Verifier {
    /// The name of the header that carries the signature.
    pub fn header_name(&self) -> &str {
        match &self.scheme {
            Scheme::ClickUp => "X-Signature",
            Scheme::Stripe { .. } => "Stripe-Signature",
            Scheme::Hmac { header, .. } => header,
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
        let value = headers
            .header(name)
            .ok_or_else(|| VerifyError::MissingHeader(name.to_owned()))?
            .trim();
        match &self.scheme {
            Scheme::ClickUp => {
                let sig =
                    hex::decode(value).map_err(|_| VerifyError::Malformed(name.to_owned()))?;
                if matches_any(&self.secrets, &[body], &sig) {
                    Ok(())
                } else {
                    Err(VerifyError::Mismatch)
                }
            }
            Scheme::Stripe { tolerance_secs } => {
                verify_stripe(&self.secrets, value, body, now, *tolerance_secs)
            }
            Scheme::Hmac {
                prefix, encoding, ..
            } => {
                let raw = value
                    .strip_prefix(prefix.as_str())
                    .ok_or_else(|| VerifyError::Malformed(name.to_owned()))?;
                let sig = match encoding {
                    Encoding::Hex => hex::decode(raw).ok(),
                    Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(raw).ok(),
                }
                .ok_or_else(|| VerifyError::Malformed(name.to_owned()))?;
                if matches_any(&self.secrets, &[body], &sig) {
                    Ok(())
                } else {
                    Err(VerifyError::Mismatch)
                }
            }
        }
    }

    /// The header(s) this verifier accepts for `body` at time `now`, signed with
    /// the first secret (for `clickup-bridge sign` and tests).
    pub fn sign(&self, body: &[u8], now: i64) -> Vec<(String, String)> {
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
                    Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(sig),
                };
                format!("{prefix}{enc}")
            }
        };
        vec![(self.header_name().to_owned(), value)]
    }
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
