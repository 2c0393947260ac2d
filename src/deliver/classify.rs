//! The retry decision, as one pure function with a table test.

use crate::pipeline::RetryPolicy;
use std::time::Duration;

/// Longest wait a target may ask for (`Retry-After`, `X-RateLimit-Reset`).
pub const MAX_TARGET_WAIT: Duration = Duration::from_secs(24 * 3600);

/// What came back from one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// An HTTP answer.
    Response {
        /// Status code.
        status: u16,
        /// `Retry-After`, seconds or HTTP date.
        retry_after: Option<String>,
        /// ClickUp's `X-RateLimit-Reset` (Unix seconds).
        ratelimit_reset: Option<String>,
        /// For Slack's Web API: the `error` of an `{"ok": false}` answer.
        slack_error: Option<String>,
    },
    /// No answer: connection refused or reset, DNS, timeout.
    Transport {
        /// What happened.
        message: String,
    },
    /// Nothing was sent because something of ours failed for a while (the
    /// store could not be read): retried, whatever the budget, never dead.
    Unavailable {
        /// What failed.
        message: String,
    },
    /// The request could not be built (render error, bad header, ...).
    Invalid {
        /// Why.
        message: String,
    },
}

/// The decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done.
    Delivered,
    /// Try again after this long.
    Retry {
        /// The wait.
        after: Duration,
        /// Why this attempt failed.
        reason: String,
    },
    /// Give up (replayable by an operator).
    Dead {
        /// Why.
        reason: String,
    },
}

/// Parses `Retry-After` (delay seconds or an HTTP date) relative to `now`.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses `X-RateLimit-Reset` (Unix seconds) relative to `now`.
fn parse_reset(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    let at = std::time::UNIX_EPOCH + Duration::from_secs(secs);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Exponential backoff for attempt `n` (the one that just failed, from 1),
/// with "equal jitter": between half and all of `initial * 2^(n-1)`, capped
/// at `max`. `jitter` is uniform in [0, 1).
pub fn backoff(n: u32, policy: &RetryPolicy, jitter: f64) -> Duration {
    let exp = policy.initial.as_secs_f64() * 2f64.powi(n.saturating_sub(1).min(60) as i32);
    let full = exp.min(policy.max.as_secs_f64());
    Duration::from_secs_f64(full * (0.5 + 0.5 * jitter.clamp(0.0, 1.0)))
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || (500..=599).contains(&status)
}

/// What an answer says by itself, before the retry budget.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Done.
    Delivered,
    /// Worth trying again, after the wait the target asked for if it did.
    Retryable {
        /// Why this attempt failed.
        reason: String,
        /// `Retry-After` / `X-RateLimit-Reset`, capped at [`MAX_TARGET_WAIT`].
        asked: Option<Duration>,
    },
    /// Never worth trying again.
    Dead {
        /// Why.
        reason: String,
    },
}

/// The status table: which answers are delivered, retryable or dead, and
/// the wait a retryable one asks for. Enrichment's task fetch uses it too
/// (the router applies the retry budget there).
pub fn judge(answer: &Answer, now: std::time::SystemTime) -> Verdict {
    let retryable = |reason: String, asked| Verdict::Retryable { reason, asked };
    match answer {
        Answer::Invalid { message } => Verdict::Dead {
            reason: message.clone(),
        },
        Answer::Transport { message } | Answer::Unavailable { message } => {
            retryable(message.clone(), None)
        }
        Answer::Response {
            status,
            retry_after,
            ratelimit_reset,
            slack_error,
        } => {
            let asked = || {
                let a = retry_after
                    .as_deref()
                    .and_then(|v| parse_retry_after(v, now));
                let r = ratelimit_reset.as_deref().and_then(|v| parse_reset(v, now));
                a.or(r).map(|d| d.min(MAX_TARGET_WAIT))
            };
            if (200..300).contains(status) {
                match slack_error.as_deref() {
                    None => Verdict::Delivered,
                    Some("ratelimited") => retryable("slack error: ratelimited".into(), asked()),
                    Some(e) => Verdict::Dead {
                        reason: format!("slack error: {e}"),
                    },
                }
            } else if retryable_status(*status) {
                retryable(format!("HTTP {status}"), asked())
            } else {
                Verdict::Dead {
                    reason: format!("HTTP {status}"),
                }
            }
        }
    }
}

/// Decides what to do after attempt `n` (from 1) got `answer`.
pub fn classify(
    answer: &Answer,
    n: u32,
    policy: &RetryPolicy,
    now: std::time::SystemTime,
    jitter: f64,
) -> Outcome {
    let (reason, asked) = match judge(answer, now) {
        Verdict::Delivered => return Outcome::Delivered,
        Verdict::Dead { reason } => return Outcome::Dead { reason },
        Verdict::Retryable { reason, asked } => (reason, asked),
    };
    if n >= policy.attempts && !matches!(answer, Answer::Unavailable { .. }) {
        return Outcome::Dead {
            reason: format!("{reason}; gave up after {n} attempts"),
        };
    }
    let after = asked.unwrap_or_else(|| backoff(n, policy, jitter));
    Outcome::Retry { after, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            initial: Duration::from_secs(2),
            max: Duration::from_secs(60),
        }
    }

    fn resp(status: u16) -> Answer {
        Answer::Response {
            status,
            retry_after: None,
            ratelimit_reset: None,
            slack_error: None,
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn the_classification_table() {
        let retry = |s: &str| Outcome::Retry {
            after: Duration::from_secs(2),
            reason: s.to_owned(),
        };
        let dead = |s: &str| Outcome::Dead {
            reason: s.to_owned(),
        };
        let cases: Vec<(Answer, u32, Outcome)> = vec![
            (resp(200), 1, Outcome::Delivered),
            (resp(204), 1, Outcome::Delivered),
            (resp(500), 1, retry("HTTP 500")),
            (resp(503), 1, retry("HTTP 503")),
            (resp(408), 1, retry("HTTP 408")),
            (resp(425), 1, retry("HTTP 425")),
            (resp(429), 1, retry("HTTP 429")),
            (resp(400), 1, dead("HTTP 400")),
            (resp(401), 1, dead("HTTP 401")),
            (resp(404), 1, dead("HTTP 404")),
            (resp(410), 1, dead("HTTP 410")),
            (resp(301), 1, dead("HTTP 301")),
            (resp(500), 5, dead("HTTP 500; gave up after 5 attempts")),
            (
                Answer::Transport {
                    message: "connection refused".into(),
                },
                1,
                retry("connection refused"),
            ),
            (
                Answer::Invalid {
                    message: "render error".into(),
                },
                1,
                dead("render error"),
            ),
            (
                Answer::Unavailable {
                    message: "store down".into(),
                },
                1,
                retry("store down"),
            ),
            (
                Answer::Unavailable {
                    message: "store down".into(),
                },
                5,
                Outcome::Retry {
                    after: Duration::from_secs(32),
                    reason: "store down".into(),
                },
            ),
            (
                Answer::Response {
                    status: 200,
                    retry_after: None,
                    ratelimit_reset: None,
                    slack_error: Some("channel_not_found".into()),
                },
                1,
                dead("slack error: channel_not_found"),
            ),
            (
                Answer::Response {
                    status: 200,
                    retry_after: None,
                    ratelimit_reset: None,
                    slack_error: Some("ratelimited".into()),
                },
                1,
                retry("slack error: ratelimited"),
            ),
        ];
        for (answer, n, want) in cases {
            // jitter 1.0: the full backoff, 2 s after the first attempt.
            assert_eq!(
                classify(&answer, n, &policy(), now(), 1.0),
                want,
                "{answer:?} #{n}"
            );
        }
    }

    #[test]
    fn target_waits_are_honoured_beyond_max_and_capped_at_a_day() {
        let with = |ra: Option<&str>, reset: Option<&str>| Answer::Response {
            status: 429,
            retry_after: ra.map(Into::into),
            ratelimit_reset: reset.map(Into::into),
            slack_error: None,
        };
        let after = |a: Answer| match classify(&a, 1, &policy(), now(), 0.0) {
            Outcome::Retry { after, .. } => after,
            other => panic!("{other:?}"),
        };
        assert_eq!(after(with(Some("2"), None)), Duration::from_secs(2));
        assert_eq!(
            after(with(Some("7200"), None)),
            Duration::from_secs(7200),
            "beyond retry.max"
        );
        assert_eq!(after(with(Some("999999"), None)), MAX_TARGET_WAIT);
        let date = httpdate::fmt_http_date(now() + Duration::from_secs(30));
        assert_eq!(after(with(Some(&date), None)), Duration::from_secs(30));
        assert_eq!(
            after(with(None, Some("1700000045"))),
            Duration::from_secs(45)
        );
        assert_eq!(
            after(with(Some("garbage"), None)),
            Duration::from_secs(1),
            "falls back to backoff"
        );
    }

    #[test]
    fn backoff_grows_exponentially_within_jitter_bounds_and_caps_at_max() {
        let p = policy();
        for n in 1..=10u32 {
            let full = (2.0 * 2f64.powi(n as i32 - 1)).min(60.0);
            let lo = backoff(n, &p, 0.0).as_secs_f64();
            let hi = backoff(n, &p, 0.999_999).as_secs_f64();
            assert!((lo - full / 2.0).abs() < 1e-6, "n={n}: {lo}");
            assert!(hi <= full + 1e-6 && hi > full * 0.99, "n={n}: {hi}");
        }
        assert_eq!(backoff(1000, &p, 1.0), Duration::from_secs(60));
    }
}
