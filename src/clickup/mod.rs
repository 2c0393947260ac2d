//! ClickUp's webhook API: list, create, delete, reactivate. Used by the
//! `clickup webhooks` commands and the health watch. The requests are those
//! of the one ClickUp client, [`crate::targets::clickup::Api`].

pub mod watch;

use crate::targets::PlannedRequest;
use crate::targets::clickup::{Api, api_error};
use crate::targets::request::{self, RequestError, SendError};
use crate::verify::Secret;
use serde_json::{Value, json};

/// A ClickUp webhook as the API describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// Its id.
    pub id: String,
    /// Where ClickUp posts.
    pub endpoint: String,
    /// Subscribed events.
    pub events: Vec<String>,
    /// `active`, `failing` or `suspended`.
    pub status: String,
    /// Consecutive failures ClickUp counted.
    pub fail_count: i64,
    /// The signing secret (ClickUp returns it on create and list).
    pub secret: Option<String>,
    /// The location it is scoped to (`space 1234`, `list 9876`...), if any.
    pub scope: Option<String>,
}

impl Webhook {
    fn from_json(v: &Value) -> Option<Webhook> {
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let scope = ["task_id", "list_id", "folder_id", "space_id"]
            .iter()
            .find_map(|k| {
                v.get(*k)
                    .and_then(text)
                    .map(|id| format!("{} {id}", k.trim_end_matches("_id")))
            });
        Some(Webhook {
            id: text(v.get("id")?)?,
            endpoint: v.get("endpoint").and_then(text).unwrap_or_default(),
            events: v
                .get("events")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(text).collect())
                .unwrap_or_default(),
            status: v
                .pointer("/health/status")
                .and_then(text)
                .unwrap_or_else(|| "unknown".into()),
            fail_count: v
                .pointer("/health/fail_count")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            secret: v.get("secret").and_then(text),
            scope,
        })
    }
}

/// A webhook to create.
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    /// The public URL of `/hooks/{source}`.
    pub endpoint: String,
    /// Events to subscribe to (`*` for all).
    pub events: Vec<String>,
    /// Optional scope.
    pub space_id: Option<String>,
    /// Optional scope.
    pub folder_id: Option<String>,
    /// Optional scope.
    pub list_id: Option<String>,
    /// Optional scope.
    pub task_id: Option<String>,
}

/// What went wrong talking to ClickUp.
#[derive(Debug, thiserror::Error)]
pub enum ClickUpError {
    /// OAUTH_171.
    #[error(
        "ClickUp already has a webhook for this endpoint, events and location (OAUTH_171); list them with `clickup-bridge clickup webhooks list --team ID` and delete or reuse it"
    )]
    AlreadyExists,
    /// Any other error answer.
    #[error("ClickUp answered {status}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// `err (ECODE)`, or the body.
        message: String,
    },
    /// No answer.
    #[error("cannot reach ClickUp: {0}")]
    Transport(String),
    /// The request cannot be built.
    #[error("cannot call ClickUp: {0}; check --base-url or the target's base_url")]
    Request(#[from] RequestError),
    /// An answer of an unexpected shape.
    #[error("unexpected answer from ClickUp: {0}")]
    BadAnswer(String),
}

/// The most of an answer read (a team's list of webhooks can be long).
const READ_BYTES: usize = 4 * 1024 * 1024;

/// ClickUp's webhook calls for one token, sent and read.
pub struct ClickUpApi {
    client: reqwest::Client,
    api: Api,
}

impl ClickUpApi {
    /// A client for `base_url` (including `/api/v2`) and `token`.
    pub fn new(client: reqwest::Client, base_url: &str, token: Secret) -> Self {
        ClickUpApi {
            client,
            api: Api::new(base_url, token),
        }
    }

    async fn call(&self, req: Result<PlannedRequest, RequestError>) -> Result<Value, ClickUpError> {
        let timeout = std::time::Duration::from_secs(30);
        let reply = request::send(&self.client, &req?, None, timeout, READ_BYTES)
            .await
            .map_err(|e| {
                let cause = match &e {
                    SendError::Transport { error, .. } => crate::errors::root_cause(error),
                    SendError::Build(_) => e.to_string(),
                };
                ClickUpError::Transport(format!(
                    "{cause} at {}; check the network, or the target's base_url",
                    self.api.base_url
                ))
            })?;
        if reply.ok() {
            return Ok(reply.json());
        }
        let error = api_error(&reply.body);
        if error.as_ref().and_then(|e| e.ecode.as_deref()) == Some("OAUTH_171") {
            return Err(ClickUpError::AlreadyExists);
        }
        let message = match error {
            Some(e) => e.to_string(),
            None => crate::transform::helpers::truncate_chars(
                &String::from_utf8_lossy(&reply.body),
                300,
            ),
        };
        Err(ClickUpError::Http {
            status: reply.status,
            message,
        })
    }

    /// GET /team/{team_id}/webhook.
    pub async fn list_webhooks(&self, team_id: &str) -> Result<Vec<Webhook>, ClickUpError> {
        let v = self.call(self.api.list_webhooks(team_id)).await?;
        let list = v
            .get("webhooks")
            .and_then(Value::as_array)
            .ok_or_else(|| ClickUpError::BadAnswer("no \"webhooks\" list".into()))?;
        Ok(list.iter().filter_map(Webhook::from_json).collect())
    }

    /// POST /team/{team_id}/webhook.
    pub async fn create_webhook(
        &self,
        team_id: &str,
        new: &NewWebhook,
    ) -> Result<Webhook, ClickUpError> {
        let mut body = json!({ "endpoint": new.endpoint, "events": new.events });
        for (k, v) in [
            ("space_id", &new.space_id),
            ("folder_id", &new.folder_id),
            ("list_id", &new.list_id),
            ("task_id", &new.task_id),
        ] {
            if let Some(v) = v {
                // ClickUp's ids of spaces, folders and lists are numbers.
                body[k] = if k == "task_id" {
                    json!(v)
                } else {
                    v.parse::<i64>()
                        .map(Value::from)
                        .unwrap_or_else(|_| json!(v))
                };
            }
        }
        let v = self.call(self.api.create_webhook(team_id, body)).await?;
        v.get("webhook")
            .and_then(Webhook::from_json)
            .ok_or_else(|| ClickUpError::BadAnswer("no \"webhook\" in the answer".into()))
    }

    /// DELETE /webhook/{id}.
    pub async fn delete_webhook(&self, id: &str) -> Result<(), ClickUpError> {
        self.call(self.api.delete_webhook(id)).await.map(|_| ())
    }

    /// PUT /webhook/{id} with status active (keeping its endpoint and events).
    pub async fn reactivate(&self, hook: &Webhook) -> Result<Webhook, ClickUpError> {
        let events: Value = if hook.events.is_empty() {
            json!("*")
        } else {
            json!(hook.events)
        };
        let body = json!({ "endpoint": hook.endpoint, "events": events, "status": "active" });
        let v = self.call(self.api.update_webhook(&hook.id, body)).await?;
        v.get("webhook")
            .and_then(Webhook::from_json)
            .ok_or_else(|| ClickUpError::BadAnswer("no \"webhook\" in the answer".into()))
    }
}
