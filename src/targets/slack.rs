//! `type: slack`: an incoming webhook, or the Web API's chat.postMessage.

use super::request::{PlannedRequest, Reply, bearer, json_utf8};
use super::{Definition, Plan, Render, StepBuilder, StepError, TargetType};
use crate::routes_file::diag::Diagnostics;
use crate::routes_file::reader::{self, MapReader};
use crate::transform::render::TemplateId;
use crate::verify::Secret;
use serde_json::{Map, Value, json};

/// The Slack target type.
#[derive(Debug, Clone)]
pub struct Slack;

/// Where a Slack target posts.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// An incoming webhook.
    Webhook {
        /// The hooks.slack.com URL (a secret).
        webhook_url: Secret,
    },
    /// The Web API's chat.postMessage.
    Api {
        /// Bot token.
        token: Secret,
        /// Channel id.
        channel: String,
        /// API base, `https://slack.com/api` by default.
        base_url: String,
    },
}

/// A Slack step: a text message, or a full payload.
#[derive(Debug, Clone)]
pub struct Action {
    /// `text`.
    pub text: Option<TemplateId>,
    /// `body` or `template`.
    pub body: Option<super::Body>,
}

fn payload(a: &Action, t: &Render<'_>) -> Result<Value, StepError> {
    Ok(match (&a.text, &a.body) {
        (_, Some(b)) => t.body(b)?,
        (Some(text), None) => json!({ "text": t.text(text)? }),
        (None, None) => Value::Object(Map::new()),
    })
}

impl TargetType for Slack {
    const NAME: &'static str = "slack";
    const RATE_LIMIT: Option<super::RateLimit> = Some(super::RateLimit::new(1, 1));
    type Endpoint = Endpoint;
    type Action = Action;

    fn endpoint(r: &mut MapReader<'_>, t: Definition<'_>, d: &mut Diagnostics) -> Option<Endpoint> {
        r.know(&["webhook_url", "token", "channel", "base_url"]);
        if r.key_pos("webhook_url").is_some() {
            let u = r
                .take("webhook_url")
                .and_then(|n| t.url(n, "webhook_url", d))?;
            Some(Endpoint::Webhook {
                webhook_url: Secret::new(u),
            })
        } else if r.key_pos("token").is_some() {
            let token = super::secret(r, "token", d);
            let channel = r
                .require("channel", d)
                .and_then(|n| reader::string(n, "channel", d));
            let base_url = t.url_or(r, "base_url", "https://slack.com/api", d);
            Some(Endpoint::Api {
                token: token?,
                channel: channel?,
                base_url: base_url?,
            })
        } else {
            if !r.misspelled("webhook_url") && !r.misspelled("token") {
                d.error(
                    r.pos(),
                    format!(
                        "slack target \"{}\" needs webhook_url, or token and channel",
                        t.name
                    ),
                );
            }
            None
        }
    }

    fn base(e: &Endpoint) -> &str {
        match e {
            Endpoint::Webhook { webhook_url } => webhook_url.expose(),
            Endpoint::Api { base_url, .. } => base_url,
        }
    }

    fn secret_path(e: &Endpoint) -> bool {
        matches!(e, Endpoint::Webhook { .. })
    }

    fn action(
        r: &mut MapReader<'_>,
        b: &mut StepBuilder<'_>,
        d: &mut Diagnostics,
    ) -> Option<Action> {
        let text = b.opt(r, "text", d);
        let text_given = r.key_pos("text").is_some();
        let body = b.body(r, d);
        let body_given = r.key_pos("body").is_some() || r.key_pos("template").is_some();
        match (text_given, body_given) {
            (false, false) => {
                d.error(r.pos(), "a slack step needs text, body or template");
                None
            }
            (true, true) => {
                d.error(
                    r.pos(),
                    "a slack step takes text, or body/template, not both",
                );
                None
            }
            _ => Some(Action { text, body }),
        }
    }

    fn plan(e: &Endpoint, a: &Action, t: &Render<'_>, _: &str) -> Result<Plan, StepError> {
        let mut payload = payload(a, t)?;
        let (url, headers) = match e {
            Endpoint::Webhook { webhook_url } => {
                (webhook_url.expose().to_owned(), vec![json_utf8()])
            }
            Endpoint::Api {
                token,
                channel,
                base_url,
            } => {
                if let Value::Object(m) = &mut payload {
                    m.entry("channel")
                        .or_insert_with(|| Value::String(channel.clone()));
                }
                let auth = ("Authorization".to_owned(), bearer(token));
                (
                    format!("{base_url}/chat.postMessage"),
                    vec![json_utf8(), auth],
                )
            }
        };
        Ok(Plan::from(vec![PlannedRequest {
            method: reqwest::Method::POST,
            url: reqwest::Url::parse(&url).map_err(super::RequestError::Url)?,
            headers,
            body: Some(payload),
        }]))
    }

    /// The Web API answers 200 `{"ok": false, "error": ...}` when it refuses.
    fn refusal(e: &Endpoint, reply: &Reply) -> Option<String> {
        if !matches!(e, Endpoint::Api { .. }) {
            return None;
        }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &str) -> Reply {
        Reply {
            status: 200,
            retry_after: None,
            ratelimit_reset: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn only_the_web_api_refuses_in_a_200() {
        let api = Endpoint::Api {
            token: Secret::new("xoxb"),
            channel: "C1".into(),
            base_url: "https://slack.com/api".into(),
        };
        let hook = Endpoint::Webhook {
            webhook_url: Secret::new("https://hooks.slack.com/x"),
        };
        assert_eq!(Slack::refusal(&api, &reply(r#"{"ok": true}"#)), None);
        assert_eq!(
            Slack::refusal(
                &api,
                &reply(r#"{"ok": false, "error": "channel_not_found"}"#)
            )
            .as_deref(),
            Some("channel_not_found")
        );
        assert_eq!(
            Slack::refusal(&api, &reply("ok")).as_deref(),
            Some("invalid answer")
        );
        assert_eq!(Slack::refusal(&hook, &reply("ok")), None);
    }
}
