//! Console sessions: a stateless, signed cookie, and a CSRF token bound to it.
//!
//! The cookie is `v1.<expires ms>.<nonce>.<mac>`, the MAC an HMAC-SHA256 of
//! the rest under a key derived from `admin_token`. Nothing is kept in
//! memory, so every instance that shares the token (and the database) accepts
//! every other instance's sessions, a restart keeps them, and changing the
//! token ends them all. The CSRF token of a form is an HMAC of the session
//! cookie under the same key: only a page served to that session can carry
//! it.
//!
//! Without `admin_token` (the admin listener is then loopback-only) no login
//! is asked, as for the API; the console still issues an anonymous session
//! cookie, signed with a random per-process key, so that POSTs can carry a
//! CSRF token bound to it.

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use std::time::Duration;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The session cookie's name.
pub const COOKIE: &str = "clickup_bridge_console";

/// How long a session lasts after login: a working day.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// What the key is derived for; a new version makes every old cookie invalid.
const KEY_CONTEXT: &[u8] = b"clickup-bridge console session key v1";

/// The console's keys: for signing session cookies and CSRF tokens.
#[derive(Clone)]
pub struct Keys {
    key: [u8; 32],
    /// The admin token, when set: then a login is required.
    token: Option<String>,
    ttl: Duration,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("login_required", &self.token.is_some())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m = match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for p in parts {
        m.update(p);
    }
    m
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        // The OS random source failing is not something a console can fix;
        // fall back to a clock- and counter-seeded generator so the daemon
        // keeps serving (the MAC, not the nonce, is what protects a cookie).
        let mut rng = fastrand::Rng::new();
        rng.fill(&mut buf);
    }
    hex::encode(buf)
}

impl Keys {
    /// Keys derived from `admin_token`, or random ones (no login) without.
    pub fn new(admin_token: Option<&str>) -> Keys {
        let key: [u8; 32] = match admin_token {
            Some(t) => hmac(t.as_bytes(), &[KEY_CONTEXT])
                .finalize()
                .into_bytes()
                .into(),
            None => {
                let mut k = [0u8; 32];
                if getrandom::fill(&mut k).is_err() {
                    fastrand::Rng::new().fill(&mut k);
                }
                k
            }
        };
        Keys {
            key,
            token: admin_token.map(str::to_owned),
            ttl: SESSION_TTL,
        }
    }

    /// Whether a login is needed (an admin token is set).
    pub fn login_required(&self) -> bool {
        self.token.is_some()
    }

    /// How long a new session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether `given` is the admin token (constant time).
    pub fn token_matches(&self, given: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| crate::admin::token_matches(given, t))
    }

    /// A session cookie value that expires at `expires_at` (Unix ms).
    pub fn session_value(&self, expires_at: i64) -> String {
        let body = format!("v1.{expires_at}.{}", random_hex(16));
        let mac = hex::encode(hmac(&self.key, &[body.as_bytes()]).finalize().into_bytes());
        format!("{body}.{mac}")
    }

    /// A new session, starting `now` (Unix ms).
    pub fn new_session(&self, now: i64) -> String {
        let ttl = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        self.session_value(now.saturating_add(ttl))
    }

    /// Whether `value` is a cookie this key signed that has not expired.
    pub fn session_valid(&self, value: &str, now: i64) -> bool {
        let Some((body, mac)) = value.rsplit_once('.') else {
            return false;
        };
        let mut parts = body.split('.');
        let (Some("v1"), Some(expires), Some(_nonce), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(mac) = hex::decode(mac) else {
            return false;
        };
        if hmac(&self.key, &[body.as_bytes()])
            .verify_slice(&mac)
            .is_err()
        {
            return false;
        }
        expires.parse::<i64>().is_ok_and(|e| now < e)
    }

    /// The CSRF token of forms served to the session `value`.
    pub fn csrf(&self, session: &str) -> String {
        hex::encode(
            hmac(&self.key, &[b"csrf\0", session.as_bytes()])
                .finalize()
                .into_bytes(),
        )
    }

    /// Whether `given` is the CSRF token of `session` (constant time).
    pub fn csrf_valid(&self, session: &str, given: &str) -> bool {
        let Ok(given) = hex::decode(given.trim()) else {
            return false;
        };
        hmac(&self.key, &[b"csrf\0", session.as_bytes()])
            .verify_slice(&given)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_until_it_expires_and_only_under_its_key() {
        let keys = Keys::new(Some("token-a"));
        let now = 1_000_000;
        let s = keys.new_session(now);
        assert!(keys.session_valid(&s, now));
        let ttl = i64::try_from(SESSION_TTL.as_millis()).unwrap_or(i64::MAX);
        assert!(keys.session_valid(&s, now + ttl - 1));
        assert!(!keys.session_valid(&s, now + ttl), "expired");
        assert!(
            !Keys::new(Some("token-b")).session_valid(&s, now),
            "other token"
        );
        assert!(
            Keys::new(Some("token-a")).session_valid(&s, now),
            "another instance with the same token accepts it"
        );
    }

    #[test]
    fn a_tampered_cookie_is_refused() {
        let keys = Keys::new(Some("t"));
        let s = keys.session_value(5_000);
        let later = s.replacen("v1.5000.", "v1.9999999999999.", 1);
        assert_ne!(s, later);
        assert!(!keys.session_valid(&later, 0));
        for junk in ["", "v1", "v1.1.2", "v1.x.y.zz", "v2.5000.ab.cd"] {
            assert!(!keys.session_valid(junk, 0), "{junk:?}");
        }
    }

    #[test]
    fn a_csrf_token_belongs_to_one_session() {
        let keys = Keys::new(Some("t"));
        let (a, b) = (keys.new_session(0), keys.new_session(0));
        assert!(keys.csrf_valid(&a, &keys.csrf(&a)));
        assert!(!keys.csrf_valid(&b, &keys.csrf(&a)));
        assert!(!keys.csrf_valid(&a, ""));
        assert!(!keys.csrf_valid(&a, "not hex"));
    }

    #[test]
    fn without_a_token_no_login_is_needed_and_no_token_matches() {
        let keys = Keys::new(None);
        assert!(!keys.login_required());
        assert!(!keys.token_matches(""));
        let s = keys.new_session(0);
        assert!(keys.session_valid(&s, 0));
        assert!(!Keys::new(None).session_valid(&s, 0), "random per process");
    }
}
