//! One attempt of one delivery: render, send the step's request(s) in order,
//! and report what came back.

use super::classify::Answer;
use super::request::{PlannedRequest, RenderedStep, plan, render_step};
use super::targets::{clickup, jira};
use crate::pipeline::{Pipeline, Target, TargetKind};
use crate::store::ClaimedDelivery;
use handlebars::Context;
use serde_json::Value;
use std::time::Duration;

/// Bytes of an answer kept on the attempt record.
pub const EXCERPT_BYTES: usize = 1024;
/// Bytes of an answer read at most.
const READ_BYTES: usize = 64 * 1024;

/// What one attempt produced, for the classification and the record.
pub struct AttemptResult {
    /// The answer to classify.
    pub answer: Answer,
    /// The last HTTP status.
    pub status: Option<u16>,
    /// A bounded excerpt of the last answer.
    pub excerpt: Option<String>,
    /// The target's own description of a failure (Jira `errorMessages`,
    /// ClickUp `err`), added to the reason.
    pub detail: Option<String>,
    /// What the step created (Jira issue key, ClickUp task id), for `remember`.
    pub created: Option<String>,
}

impl AttemptResult {
    /// A request that can never be valid: dead at once.
    pub fn invalid(message: String) -> Self {
        AttemptResult {
            answer: Answer::Invalid { message },
            status: None,
            excerpt: None,
            detail: None,
            created: None,
        }
    }
}

/// An HTTP answer read back.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `Retry-After`.
    pub retry_after: Option<String>,
    /// `X-RateLimit-Reset`.
    pub ratelimit_reset: Option<String>,
    /// The body (at most 64 KiB).
    pub body: Vec<u8>,
}

impl Reply {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(EXCERPT_BYTES)];
    let s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > EXCERPT_BYTES {
        format!("{s}…")
    } else {
        s
    }
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

/// Sends one request with the delivery's Idempotency-Key.
pub async fn send(
    client: &reqwest::Client,
    req: &PlannedRequest,
    key: Option<&str>,
    timeout: Duration,
) -> Result<Reply, AttemptResult> {
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
        .map_err(|e| AttemptResult::invalid(format!("invalid request: {}", e.without_url())))?;
    let mut resp = client.execute(request).await.map_err(|e| AttemptResult {
        answer: Answer::Transport {
            message: transport_message(&e, timeout),
        },
        status: None,
        excerpt: None,
        detail: None,
        created: None,
    })?;
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
    while body.len() < READ_BYTES {
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

/// The target's own words about a failed answer.
fn detail(kind: &TargetKind, body: &[u8]) -> Option<String> {
    match kind {
        TargetKind::Jira { .. } => jira::error_summary(body),
        TargetKind::ClickUp { .. } => {
            let v: Value = serde_json::from_slice(body).ok()?;
            let err = v.get("err").and_then(Value::as_str)?;
            Some(match v.get("ECODE").and_then(Value::as_str) {
                Some(code) => format!("{err} ({code})"),
                None => err.to_owned(),
            })
        }
        _ => None,
    }
}

fn result_of(kind: &TargetKind, reply: &Reply, slack_api: bool) -> AttemptResult {
    let slack_error = if slack_api && reply.ok() {
        let v = reply.json();
        match v.get("ok") {
            Some(Value::Bool(true)) => None,
            _ => Some(
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("invalid answer")
                    .to_owned(),
            ),
        }
    } else {
        None
    };
    AttemptResult {
        answer: Answer::Response {
            status: reply.status,
            retry_after: reply.retry_after.clone(),
            ratelimit_reset: reply.ratelimit_reset.clone(),
            slack_error,
        },
        status: Some(reply.status),
        excerpt: Some(excerpt(&reply.body)),
        detail: if reply.ok() {
            None
        } else {
            detail(kind, &reply.body)
        },
        created: None,
    }
}

fn delivered(reply: &Reply, created: Option<String>) -> AttemptResult {
    AttemptResult {
        answer: Answer::Response {
            status: reply.status,
            retry_after: None,
            ratelimit_reset: None,
            slack_error: None,
        },
        status: Some(reply.status),
        excerpt: Some(excerpt(&reply.body)),
        detail: None,
        created,
    }
}

fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Renders the step of `d` and sends it to its target.
pub async fn attempt(
    client: &reqwest::Client,
    pipeline: &Pipeline,
    d: &ClaimedDelivery,
    ctx: Value,
) -> AttemptResult {
    let Some(target) = pipeline.targets.get(&d.target) else {
        return AttemptResult::invalid(format!(
            "target \"{}\" is no longer in routes.yaml",
            d.target
        ));
    };
    let Some(step) = pipeline
        .routes
        .iter()
        .find(|r| r.name == d.route)
        .and_then(|r| r.send.get(d.step as usize))
    else {
        return AttemptResult::invalid(format!(
            "route \"{}\" has no send step #{} any more",
            d.route,
            d.step + 1
        ));
    };
    // From the Value itself: `Context::wraps` would serialise a copy.
    let ctx = Context::from(ctx);
    let rendered = match render_step(&pipeline.templates, step, &ctx) {
        Ok(r) => r,
        Err(e) => return AttemptResult::invalid(e.0),
    };
    match send_step(client, target, &rendered, d).await {
        Ok(r) | Err(r) => r,
    }
}

/// Sends a rendered step; `Err` carries a failed attempt.
async fn send_step(
    client: &reqwest::Client,
    target: &Target,
    rendered: &RenderedStep,
    d: &ClaimedDelivery,
) -> Result<AttemptResult, AttemptResult> {
    let key = d.id.as_str();
    let timeout = target.timeout;
    let requests = plan(target, rendered, key).map_err(AttemptResult::invalid)?;
    let slack_api = matches!(target.kind, TargetKind::SlackApi { .. });

    // Jira create after an uncertain failure: the issue may exist already.
    if let (TargetKind::Jira { base_url, auth }, RenderedStep::JiraCreate { .. }) =
        (&target.kind, rendered)
        && d.attempts > 0
    {
        let search = jira::search_by_label(base_url, auth, key).map_err(AttemptResult::invalid)?;
        let reply = send(client, &search, Some(key), timeout).await?;
        if !reply.ok() {
            return Err(result_of(&target.kind, &reply, false));
        }
        if let Some(found) = id_text(reply.json().pointer("/issues/0/key")) {
            return Ok(delivered(&reply, Some(found)));
        }
    }

    // Jira transition: list the transitions, post the one reaching `to`.
    if let (TargetKind::Jira { base_url, auth }, RenderedStep::JiraTransition { issue, to }) =
        (&target.kind, rendered)
    {
        let list = requests
            .first()
            .ok_or_else(|| AttemptResult::invalid("nothing to send".into()))?;
        let reply = send(client, list, Some(key), timeout).await?;
        if !reply.ok() {
            return Err(result_of(&target.kind, &reply, false));
        }
        let id = jira::pick_transition(&reply.json(), to).map_err(AttemptResult::invalid)?;
        let post =
            jira::do_transition(base_url, auth, issue, &id).map_err(AttemptResult::invalid)?;
        let reply = send(client, &post, Some(key), timeout).await?;
        return Ok(result_of(&target.kind, &reply, false));
    }

    let mut last = None;
    for req in &requests {
        let reply = send(client, req, Some(key), timeout).await?;
        let result = result_of(&target.kind, &reply, slack_api);
        let failed = !reply.ok()
            || matches!(
                &result.answer,
                Answer::Response {
                    slack_error: Some(_),
                    ..
                }
            );
        if failed {
            return Err(result);
        }
        last = Some((reply, result));
    }
    let Some((reply, mut result)) = last else {
        return Err(AttemptResult::invalid(
            "the step has nothing to send".into(),
        ));
    };
    result.created = match rendered {
        RenderedStep::JiraCreate { .. } => id_text(reply.json().get("key")),
        RenderedStep::ClickUpCreate { .. } => id_text(reply.json().get("id")),
        RenderedStep::Http { .. } => id_text(reply.json().get("id")),
        _ => None,
    };
    Ok(result)
}

/// GET the ClickUp task (enrichment), through `target`.
pub async fn fetch_task(
    client: &reqwest::Client,
    target: &Target,
    task_id: &str,
) -> Result<Reply, AttemptResult> {
    let TargetKind::ClickUp { token, base_url } = &target.kind else {
        return Err(AttemptResult::invalid(format!(
            "target \"{}\" is not a clickup target",
            target.name
        )));
    };
    let mut req = clickup::get_task(base_url, token, task_id).map_err(AttemptResult::invalid)?;
    req.headers
        .push(("Accept".to_owned(), "application/json".to_owned()));
    send(client, &req, None, target.timeout).await
}
