//! ClickUp API v2: authorization and the requests of each action.

use super::super::request::PlannedRequest;
use crate::transform::render::path_segment;
use crate::verify::Secret;
use serde_json::{Map, Value, json};

/// The `Authorization` value ClickUp expects: a personal token (`pk_...`) as
/// is, an OAuth access token as `Bearer <token>`.
pub fn authorization(token: &Secret) -> String {
    let t = token.expose();
    if t.starts_with("pk_") || t.starts_with("Bearer ") {
        t.to_owned()
    } else {
        format!("Bearer {t}")
    }
}

fn request(
    method: reqwest::Method,
    url: &str,
    token: &Secret,
    body: Option<Value>,
) -> Result<PlannedRequest, String> {
    PlannedRequest::json(
        method,
        url,
        vec![("Authorization".to_owned(), authorization(token))],
        body,
    )
}

fn id(kind: &str, v: &str) -> Result<String, String> {
    path_segment(kind, v)
}

/// GET the task (enrichment).
pub fn get_task(base: &str, token: &Secret, task_id: &str) -> Result<PlannedRequest, String> {
    request(
        reqwest::Method::GET,
        &format!("{base}/task/{}", id("task_id", task_id)?),
        token,
        None,
    )
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

/// `update_task`: one PUT with the task fields, then one POST per custom
/// field, in order (each is idempotent, so a retry repeats the whole step).
pub fn update_task(
    base: &str,
    token: &Secret,
    task_id: &str,
    fields: &Map<String, Value>,
    custom: &[(String, Value)],
) -> Result<Vec<PlannedRequest>, String> {
    let task = id("task_id", task_id)?;
    let mut out = Vec::new();
    if !fields.is_empty() {
        let mut body = fields.clone();
        if let Some(p) = body.get("priority").map(priority) {
            body.insert("priority".into(), p);
        }
        out.push(request(
            reqwest::Method::PUT,
            &format!("{base}/task/{task}"),
            token,
            Some(Value::Object(body)),
        )?);
    }
    for (field_id, value) in custom {
        out.push(request(
            reqwest::Method::POST,
            &format!(
                "{base}/task/{task}/field/{}",
                id("custom field id", field_id)?
            ),
            token,
            Some(json!({ "value": value })),
        )?);
    }
    Ok(out)
}

/// `comment`: POST /task/{id}/comment.
pub fn comment(
    base: &str,
    token: &Secret,
    task_id: &str,
    text: &str,
) -> Result<PlannedRequest, String> {
    request(
        reqwest::Method::POST,
        &format!("{base}/task/{}/comment", id("task_id", task_id)?),
        token,
        Some(json!({ "comment_text": text, "notify_all": false })),
    )
}

/// `create_task`: POST /list/{id}/task.
pub fn create_task(
    base: &str,
    token: &Secret,
    list_id: &str,
    fields: Map<String, Value>,
) -> Result<PlannedRequest, String> {
    request(
        reqwest::Method::POST,
        &format!("{base}/list/{}/task", id("list_id", list_id)?),
        token,
        Some(Value::Object(fields)),
    )
}
