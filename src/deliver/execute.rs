//! One attempt of one delivery: render and send the step through its
//! target type ([`crate::targets`]), and report what came back.

use super::classify::Answer;
use crate::pipeline::Pipeline;
use crate::store::ClaimedDelivery;
use crate::targets::{Attempt, Exchange, Failure, Render, SendError};
use handlebars::Context;
use serde_json::Value;

/// Bytes of an answer kept on the attempt record.
pub const EXCERPT_BYTES: usize = 1024;

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
        Self::without_answer(Answer::Invalid { message })
    }

    /// Nothing was sent, for a reason that passes (the store could not be
    /// read): retried, never dead.
    pub fn unavailable(message: String) -> Self {
        Self::without_answer(Answer::Unavailable { message })
    }

    fn without_answer(answer: Answer) -> Self {
        AttemptResult {
            answer,
            status: None,
            excerpt: None,
            detail: None,
            created: None,
        }
    }
}

impl From<Exchange> for AttemptResult {
    fn from(x: Exchange) -> Self {
        AttemptResult {
            answer: Answer::Response {
                status: x.reply.status,
                retry_after: x.reply.retry_after,
                ratelimit_reset: x.reply.ratelimit_reset,
                slack_error: x.refusal,
            },
            status: Some(x.reply.status),
            excerpt: Some(excerpt(&x.reply.body)),
            detail: x.detail,
            created: x.created,
        }
    }
}

impl From<Failure> for AttemptResult {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Send(e @ SendError::Transport { .. }) => {
                Self::without_answer(Answer::Transport {
                    message: e.to_string(),
                })
            }
            other => Self::invalid(other.to_string()),
        }
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
    let render = Render {
        templates: &pipeline.templates,
        ctx: &ctx,
    };
    let at = Attempt {
        http: client,
        key: d.id.as_str(),
        attempts: d.attempts,
        timeout: target.timeout,
    };
    match step.action.send(&render, &at).await {
        Ok(x) => x.into(),
        Err(f) => f.into(),
    }
}
