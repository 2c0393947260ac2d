//! One HTTP request of a target, checked when it is planned, and sending it.
//! Shared by every target type, the ClickUp API client and enrichment.

use crate::transform::render::{is_dot_segment, percent_encode};
use crate::verify::Secret;
use serde_json::Value;
use std::time::Duration;

/// Why a URL does not parse.
pub type UrlError = <reqwest::Url as std::str::FromStr>::Err;

/// Why a request cannot be built: the delivery is dead with this reason (the
/// request could never be valid).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// The URL does not parse.
    #[error("invalid URL: {0}")]
    Url(UrlError),
    /// A value used as a whole path segment rendered empty.
    #[error("{what} rendered empty")]
    EmptySegment {
        /// Which field.
        what: String,
    },
    /// A value used as a whole path segment is `.` or `..`.
    #[error(
        "{what} rendered as \"{value}\", which would change the request path; \
         check the value the template reads"
    )]
    DotSegment {
        /// Which field.
        what: String,
        /// Its value.
        value: String,
    },
    /// A rendered http `path` has a `.` or `..` segment.
    #[error(
        "rendered path {path:?} has a \"{segment}\" segment, which would move the request \
         outside the target's url; check the values the path template reads"
    )]
    PathDotSegment {
        /// The path.
        path: String,
        /// The segment.
        segment: String,
    },
    /// A rendered http `path` left the target's url path.
    #[error(
        "rendered path {path} is outside the target's url path {base}; check the \
         step's path and the values it reads"
    )]
    OutsideBase {
        /// The path.
        path: String,
        /// The target's url path.
        base: String,
    },
    /// A rendered http `path` would reach another host.
    #[error("rendered path would change the target host ({0})")]
    OtherHost(String),
    /// Not an HTTP method.
    #[error("invalid method {0}")]
    Method(String),
}

/// One HTTP request, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRequest {
    /// Method.
    pub method: reqwest::Method,
    /// Full URL.
    pub url: reqwest::Url,
    /// Headers (values may be secrets: mask before showing).
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<Value>,
}

impl PlannedRequest {
    /// A request to `url` with these headers, and `Content-Type:
    /// application/json` when it has a body.
    pub fn json(
        method: reqwest::Method,
        url: &str,
        mut headers: Vec<(String, String)>,
        body: Option<Value>,
    ) -> Result<PlannedRequest, RequestError> {
        let url = reqwest::Url::parse(url).map_err(RequestError::Url)?;
        if body.is_some() {
            headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
        }
        Ok(PlannedRequest {
            method,
            url,
            headers,
            body,
        })
    }
}

/// `Content-Type: application/json; charset=utf-8`.
pub fn json_utf8() -> (String, String) {
    (
        "Content-Type".to_owned(),
        "application/json; charset=utf-8".to_owned(),
    )
}

/// `Authorization: Bearer <token>`, the value.
pub fn bearer(token: &Secret) -> String {
    format!("Bearer {}", token.expose())
}

/// A rendered value used as one whole path segment (a task id, an issue
/// key): trimmed, never empty, never `.` or `..` (which would move the
/// request to another API path), percent-encoded. `what` names the field in
/// the error, which becomes the dead delivery's reason.
pub fn segment(what: &str, value: &str) -> Result<String, RequestError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(RequestError::EmptySegment { what: what.into() });
    }
    // Checked on the encoded form, which is what URL parsing sees: `%2e`
    // in the value is sent as `%252e`, one ordinary segment.
    let encoded = percent_encode(v);
    if is_dot_segment(&encoded) {
        return Err(RequestError::DotSegment {
            what: what.into(),
            value: v.into(),
        });
    }
    Ok(encoded)
}

/// An HTTP answer read back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `Retry-After`.
    pub retry_after: Option<String>,
    /// `X-RateLimit-Reset`.
    pub ratelimit_reset: Option<String>,
    /// The body (bounded).
    pub body: Vec<u8>,
}

impl Reply {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON (`null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// reqwest refused to build it (a header value it cannot send...): it
    /// never will.
    #[error("invalid request: {0}")]
    Build(reqwest::Error),
    /// No answer: connection refused or reset, DNS, timeout. Worth retrying.
    #[error("{}", transport_message(.error, *.timeout))]
    Transport {
        /// What reqwest said.
        error: reqwest::Error,
        /// The timeout the request had.
        timeout: Duration,
    },
}

/// Describes a transport error without its URL (a Slack webhook URL is a
/// secret) but with its cause.
pub fn transport_message(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timeout after {:.1} s", timeout.as_secs_f64());
    }
    let mut msg = if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Bytes of a delivery's answer read at most.
pub const READ_BYTES: usize = 64 * 1024;

/// Sends one request (with an Idempotency-Key when given) and reads at most
/// `limit` bytes of the answer.
pub async fn send(
    client: &reqwest::Client,
    req: &PlannedRequest,
    key: Option<&str>,
    timeout: Duration,
    limit: usize,
) -> Result<Reply, SendError> {
    let mut builder = client
        .request(req.method.clone(), req.url.clone())
        .timeout(timeout);
    if let Some(key) = key {
        builder = builder.header("Idempotency-Key", key);
    }
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    if let Some(body) = &req.body {
        builder = builder.body(body.to_string());
    }
    let request = builder
        .build()
        .map_err(|e| SendError::Build(e.without_url()))?;
    let mut resp = client
        .execute(request)
        .await
        .map_err(|error| SendError::Transport { error, timeout })?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header("retry-after");
    let ratelimit_reset = header("x-ratelimit-reset");
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while body.len() < limit {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    Ok(Reply {
        status,
        retry_after,
        ratelimit_reset,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_segment_is_never_empty_or_a_dot_segment() {
        assert_eq!(segment("task_id", " abc "), Ok("abc".to_owned()));
        assert_eq!(segment("task_id", "a/b"), Ok("a%2Fb".to_owned()));
        assert_eq!(
            segment("task_id", "  ").map_err(|e| e.to_string()),
            Err("task_id rendered empty".to_owned())
        );
        assert!(segment("task_id", ".").is_err());
        assert_eq!(segment("task_id", "%2e%2e"), Ok("%252e%252e".to_owned()));
        assert_eq!(segment("task_id", "..."), Ok("...".to_owned()));
        assert_eq!(
            segment("issue", " .. ").map_err(|e| e.to_string()),
            Err("issue rendered as \"..\", which would change the request path; check the value the template reads".to_owned())
        );
    }
}
