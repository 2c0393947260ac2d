//! `type: clickup`, and the one client of ClickUp's API v2: authorization,
//! the path of every call (task updates, comments and creation; the task
//! fetch of enrichment; the webhook calls of `clickup webhooks` and the
//! health watch) and the reading of its error answers.

use super::request::{PlannedRequest, RequestError, segment};
use super::{BodyNode, Definition, Plan, Render, StepBuilder, StepError, TargetType, id_text};
use crate::routes_file::diag::Diagnostics;
use crate::routes_file::reader::MapReader;
use crate::transform::render::{TemplateId, percent_encode};
use crate::verify::Secret;
use serde_json::{Map, Value, json};

/// The ClickUp target type.
#[derive(Debug, Clone)]
pub struct ClickUp;

/// ClickUp's API for one token: a clickup target's endpoint.
#[derive(Debug, Clone)]
pub struct Api {
    /// API base including `/api/v2`, without a trailing `/`.
    pub base_url: String,
    /// Personal (`pk_...`) or OAuth token.
    pub token: Secret,
}

/// ClickUp's own words in an error answer: `{"err": ..., "ECODE": ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// `err`.
    pub err: String,
    /// `ECODE`, when given.
    pub ecode: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ecode {
            Some(code) => write!(f, "{} ({code})", self.err),
            None => f.write_str(&self.err),
        }
    }
}

/// The error an answer body describes, if it is one of ClickUp's.
pub fn api_error(body: &[u8]) -> Option<ApiError> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let err = v.get("err").and_then(Value::as_str)?.to_owned();
    let ecode = v
        .get("ECODE")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    Some(ApiError { err, ecode })
}

/// The `Authorization` value ClickUp expects: a personal token (`pk_...`) as
/// is, an OAuth access token as `Bearer <token>`.
pub fn authorization(token: &Secret) -> String {
    let t = token.expose();
    if t.starts_with("pk_") || t.starts_with("Bearer ") {
        t.to_owned()
    } else {
        super::request::bearer(token)
    }
}

/// A priority as ClickUp wants it: 1 (urgent) to 4 (low), or null.
fn priority(v: &Value) -> Value {
    match v {
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::Null),
        other => other.clone(),
    }
}

impl Api {
    /// The API at `base_url` (including `/api/v2`) with `token`.
    pub fn new(base_url: &str, token: Secret) -> Self {
        Api {
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// A call of `path` (below the base, starting with `/`).
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<PlannedRequest, RequestError> {
        PlannedRequest::json(
            method,
            &format!("{}{path}", self.base_url),
            vec![("Authorization".to_owned(), authorization(&self.token))],
            body,
        )
    }

    /// GET /task/{id} (enrichment).
    pub fn get_task(&self, task_id: &str) -> Result<PlannedRequest, RequestError> {
        let path = format!("/task/{}", segment("task_id", task_id)?);
        let mut req = self.call(reqwest::Method::GET, &path, None)?;
        req.headers
            .push(("Accept".to_owned(), "application/json".to_owned()));
        Ok(req)
    }

    /// `update_task`: one PUT with the task fields, then one POST per custom
    /// field, in order (each is idempotent, so a retry repeats the whole step).
    pub fn update_task(
        &self,
        task_id: &str,
        fields: &Map<String, Value>,
        custom: &[(String, Value)],
    ) -> Result<Vec<PlannedRequest>, RequestError> {
        let task = segment("task_id", task_id)?;
        let mut out = Vec::new();
        if !fields.is_empty() {
            let mut body = fields.clone();
            if let Some(p) = body.get("priority").map(priority) {
                body.insert("priority".into(), p);
            }
            let path = format!("/task/{task}");
            out.push(self.call(reqwest::Method::PUT, &path, Some(Value::Object(body)))?);
        }
        for (field_id, value) in custom {
            let path = format!(
                "/task/{task}/field/{}",
                segment("custom field id", field_id)?
            );
            out.push(self.call(
                reqwest::Method::POST,
                &path,
                Some(json!({ "value": value })),
            )?);
        }
        Ok(out)
    }

    /// `comment`: POST /task/{id}/comment.
    pub fn comment(&self, task_id: &str, text: &str) -> Result<PlannedRequest, RequestError> {
        let path = format!("/task/{}/comment", segment("task_id", task_id)?);
        let body = json!({ "comment_text": text, "notify_all": false });
        self.call(reqwest::Method::POST, &path, Some(body))
    }

    /// `create_task`: POST /list/{id}/task.
    pub fn create_task(
        &self,
        list_id: &str,
        fields: Map<String, Value>,
    ) -> Result<PlannedRequest, RequestError> {
        let path = format!("/list/{}/task", segment("list_id", list_id)?);
        self.call(reqwest::Method::POST, &path, Some(Value::Object(fields)))
    }

    /// GET /team/{team_id}/webhook.
    pub fn list_webhooks(&self, team_id: &str) -> Result<PlannedRequest, RequestError> {
        let path = format!("/team/{}/webhook", percent_encode(team_id));
        self.call(reqwest::Method::GET, &path, None)
    }

    /// POST /team/{team_id}/webhook.
    pub fn create_webhook(
        &self,
        team_id: &str,
        body: Value,
    ) -> Result<PlannedRequest, RequestError> {
        let path = format!("/team/{}/webhook", percent_encode(team_id));
        self.call(reqwest::Method::POST, &path, Some(body))
    }

    /// DELETE /webhook/{id}.
    pub fn delete_webhook(&self, id: &str) -> Result<PlannedRequest, RequestError> {
        let path = format!("/webhook/{}", percent_encode(id));
        self.call(reqwest::Method::DELETE, &path, None)
    }

    /// PUT /webhook/{id}.
    pub fn update_webhook(&self, id: &str, body: Value) -> Result<PlannedRequest, RequestError> {
        let path = format!("/webhook/{}", percent_encode(id));
        self.call(reqwest::Method::PUT, &path, Some(body))
    }
}

/// A clickup step.
#[derive(Debug, Clone)]
pub enum Action {
    /// Update a task.
    UpdateTask {
        /// Task id.
        task_id: TemplateId,
        /// New status.
        status: Option<TemplateId>,
        /// New name.
        name: Option<TemplateId>,
        /// New priority.
        priority: Option<BodyNode>,
        /// Custom field id -> value.
        fields: Vec<(String, BodyNode)>,
    },
    /// Comment on a task.
    Comment {
        /// Task id.
        task_id: TemplateId,
        /// Comment text.
        text: TemplateId,
    },
    /// Create a task in a list.
    CreateTask {
        /// List id.
        list_id: TemplateId,
        /// Task name.
        name: TemplateId,
        /// Description.
        description: Option<TemplateId>,
        /// Status.
        status: Option<TemplateId>,
    },
}

impl TargetType for ClickUp {
    const NAME: &'static str = "clickup";
    const RATE_LIMIT: Option<super::RateLimit> = Some(super::RateLimit::new(100, 60));
    type Endpoint = Api;
    type Action = Action;

    fn endpoint(r: &mut MapReader<'_>, t: Definition<'_>, d: &mut Diagnostics) -> Option<Api> {
        r.know(&["token", "base_url"]);
        let token = super::secret(r, "token", d);
        let base_url = t.url_or(r, "base_url", "https://api.clickup.com/api/v2", d);
        Some(Api::new(&base_url?, token?))
    }

    fn base(e: &Api) -> &str {
        &e.base_url
    }

    fn action(
        r: &mut MapReader<'_>,
        b: &mut StepBuilder<'_>,
        d: &mut Diagnostics,
    ) -> Option<Action> {
        let name = super::step::action_name(r, &["update_task", "comment", "create_task"], d)?;
        match name.as_str() {
            "update_task" => {
                let task_id = b.req(r, "task_id", d);
                let status = b.opt(r, "status", d);
                let name = b.opt(r, "name", d);
                let priority = r
                    .take("priority")
                    .and_then(|n| b.body_node(n, "priority", d));
                let fields = r
                    .take("fields")
                    .map(|n| b.node_map(n, "fields", d))
                    .unwrap_or_default();
                if status.is_none() && name.is_none() && priority.is_none() && fields.is_empty() {
                    d.error(
                        r.pos(),
                        "update_task needs at least one of status, name, priority or fields",
                    );
                }
                Some(Action::UpdateTask {
                    task_id: task_id?,
                    status,
                    name,
                    priority,
                    fields,
                })
            }
            "comment" => b
                .req2(r, ["task_id", "text"], d)
                .map(|(task_id, text)| Action::Comment { task_id, text }),
            _ => {
                let list_id = b.req(r, "list_id", d);
                let name = b.req(r, "name", d);
                let description = b.opt(r, "description", d);
                let status = b.opt(r, "status", d);
                Some(Action::CreateTask {
                    list_id: list_id?,
                    name: name?,
                    description,
                    status,
                })
            }
        }
    }

    fn plan(e: &Api, a: &Action, t: &Render<'_>, _: &str) -> Result<Plan, StepError> {
        let requests = match a {
            Action::UpdateTask {
                task_id,
                status,
                name,
                priority,
                fields,
            } => {
                let mut m = Map::new();
                t.into_map(&mut m, &[("status", status), ("name", name)])?;
                if let Some(p) = priority {
                    m.insert("priority".into(), t.node(p)?);
                }
                let task_id = t.text(task_id)?;
                let custom = fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), t.node(v)?)))
                    .collect::<Result<Vec<_>, StepError>>()?;
                e.update_task(&task_id, &m, &custom)?
            }
            Action::Comment { task_id, text } => {
                let task_id = t.text(task_id)?;
                vec![e.comment(&task_id, &t.text(text)?)?]
            }
            Action::CreateTask {
                list_id,
                name,
                description,
                status,
            } => {
                let mut m = Map::new();
                m.insert("name".into(), Value::String(t.text(name)?));
                t.into_map(&mut m, &[("description", description), ("status", status)])?;
                vec![e.create_task(&t.text(list_id)?, m)?]
            }
        };
        Ok(Plan::from(requests))
    }

    fn detail(body: &[u8]) -> Option<String> {
        api_error(body).map(|e| e.to_string())
    }

    fn created(a: &Action, answer: &Value) -> Option<String> {
        match a {
            Action::CreateTask { .. } => id_text(answer.get("id")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_tokens_go_as_they_are_and_oauth_tokens_as_bearer() {
        assert_eq!(authorization(&Secret::new("pk_1")), "pk_1");
        assert_eq!(authorization(&Secret::new("oauth")), "Bearer oauth");
    }

    #[test]
    fn errors_are_read_with_their_code() {
        let e = api_error(br#"{"err": "Task not found", "ECODE": "ITEM_013"}"#).unwrap();
        assert_eq!(e.err, "Task not found");
        assert_eq!(e.to_string(), "Task not found (ITEM_013)");
        assert_eq!(api_error(b"<html>"), None);
    }

    #[test]
    fn a_priority_given_as_text_becomes_a_number() {
        let api = Api::new("https://api.clickup.com/api/v2/", Secret::new("pk_1"));
        let mut fields = Map::new();
        fields.insert("priority".into(), json!("2"));
        let reqs = api
            .update_task("abc", &fields, &[("f1".into(), json!(5))])
            .unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            reqs[0].url.as_str(),
            "https://api.clickup.com/api/v2/task/abc"
        );
        assert_eq!(reqs[0].body, Some(json!({"priority": 2})));
        assert_eq!(
            reqs[1].url.as_str(),
            "https://api.clickup.com/api/v2/task/abc/field/f1"
        );
    }
}
