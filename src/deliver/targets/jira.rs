//! Jira Cloud REST API v3: authorization, Atlassian Document Format, and the
//! requests of each action.

use super::super::request::PlannedRequest;
use crate::pipeline::targets::JiraAuth;
use crate::transform::render::path_segment;
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// `Authorization`: Basic for e-mail + API token, Bearer for a token.
pub fn authorization(auth: &JiraAuth) -> String {
    match auth {
        JiraAuth::Basic { email, api_token } => {
            let raw = format!("{email}:{}", api_token.expose());
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        }
        JiraAuth::Bearer(t) => format!("Bearer {}", t.expose()),
    }
}

/// Rendered text as an ADF document: one paragraph per block of lines
/// separated by a blank line, line breaks inside a block kept as hardBreak.
pub fn adf(text: &str) -> Value {
    let normalized = text.replace("\r\n", "\n");
    let mut paragraphs = Vec::new();
    for block in normalized.split("\n\n") {
        let block = block.trim_matches('\n');
        if block.trim().is_empty() {
            continue;
        }
        let mut content = Vec::new();
        for (i, line) in block.split('\n').enumerate() {
            if i > 0 {
                content.push(json!({"type": "hardBreak"}));
            }
            if !line.is_empty() {
                content.push(json!({"type": "text", "text": line}));
            }
        }
        paragraphs.push(json!({"type": "paragraph", "content": content}));
    }
    json!({"type": "doc", "version": 1, "content": paragraphs})
}

/// The label that marks the issue created by one delivery, so a retry after
/// an uncertain failure can find it instead of creating a second issue.
pub fn delivery_label(delivery_id: &str) -> String {
    format!("clickup-bridge-{delivery_id}")
}

fn request(
    method: reqwest::Method,
    url: String,
    auth: &JiraAuth,
    body: Option<Value>,
) -> Result<PlannedRequest, String> {
    let headers = vec![
        ("Authorization".to_owned(), authorization(auth)),
        ("Accept".to_owned(), "application/json".to_owned()),
    ];
    PlannedRequest::json(method, &url, headers, body)
}

fn key(kind: &str, v: &str) -> Result<String, String> {
    path_segment(kind, v)
}

/// What `create_issue` sends.
pub struct NewIssue<'a> {
    /// Project key.
    pub project: &'a str,
    /// Issue type name.
    pub issue_type: &'a str,
    /// Summary.
    pub summary: &'a str,
    /// Description text.
    pub description: Option<&'a str>,
    /// Labels (the delivery label is added).
    pub labels: &'a [String],
    /// Extra fields, merged over the others.
    pub fields: Option<&'a Value>,
}

/// POST /rest/api/3/issue.
pub fn create_issue(
    base: &str,
    auth: &JiraAuth,
    issue: &NewIssue<'_>,
    delivery_id: &str,
) -> Result<PlannedRequest, String> {
    let mut fields = Map::new();
    fields.insert("project".into(), json!({ "key": issue.project }));
    fields.insert("issuetype".into(), json!({ "name": issue.issue_type }));
    fields.insert("summary".into(), Value::String(issue.summary.to_owned()));
    if let Some(d) = issue.description {
        fields.insert("description".into(), adf(d));
    }
    let mut labels: Vec<Value> = issue
        .labels
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Value::String(l.trim().replace(' ', "_")))
        .collect();
    labels.push(Value::String(delivery_label(delivery_id)));
    fields.insert("labels".into(), Value::Array(labels));
    if let Some(Value::Object(extra)) = issue.fields {
        for (k, v) in extra {
            fields.insert(k.clone(), v.clone());
        }
    }
    request(
        reqwest::Method::POST,
        format!("{base}/rest/api/3/issue"),
        auth,
        Some(json!({ "fields": fields })),
    )
}

/// GET /rest/api/3/search/jql for the issue a delivery created.
pub fn search_by_label(
    base: &str,
    auth: &JiraAuth,
    delivery_id: &str,
) -> Result<PlannedRequest, String> {
    let mut r = request(
        reqwest::Method::GET,
        format!("{base}/rest/api/3/search/jql"),
        auth,
        None,
    )?;
    r.url
        .query_pairs_mut()
        .append_pair(
            "jql",
            &format!("labels = \"{}\"", delivery_label(delivery_id)),
        )
        .append_pair("fields", "key")
        .append_pair("maxResults", "1");
    Ok(r)
}

/// POST /rest/api/3/issue/{issue}/comment.
pub fn comment(
    base: &str,
    auth: &JiraAuth,
    issue: &str,
    text: &str,
) -> Result<PlannedRequest, String> {
    request(
        reqwest::Method::POST,
        format!("{base}/rest/api/3/issue/{}/comment", key("issue", issue)?),
        auth,
        Some(json!({ "body": adf(text) })),
    )
}

/// GET /rest/api/3/issue/{issue}/transitions.
pub fn transitions(base: &str, auth: &JiraAuth, issue: &str) -> Result<PlannedRequest, String> {
    request(
        reqwest::Method::GET,
        format!(
            "{base}/rest/api/3/issue/{}/transitions",
            key("issue", issue)?
        ),
        auth,
        None,
    )
}

/// POST /rest/api/3/issue/{issue}/transitions with the chosen id.
pub fn do_transition(
    base: &str,
    auth: &JiraAuth,
    issue: &str,
    transition_id: &str,
) -> Result<PlannedRequest, String> {
    request(
        reqwest::Method::POST,
        format!(
            "{base}/rest/api/3/issue/{}/transitions",
            key("issue", issue)?
        ),
        auth,
        Some(json!({ "transition": { "id": transition_id } })),
    )
}

/// Picks the transition whose target status is named `to` (case-insensitive),
/// or says which statuses can be reached.
pub fn pick_transition(answer: &Value, to: &str) -> Result<String, String> {
    let list = answer
        .get("transitions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let wanted = to.trim().to_lowercase();
    for t in &list {
        let status = t
            .pointer("/to/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if status.to_lowercase() == wanted
            && let Some(id) = t.get("id").and_then(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .or_else(|| v.as_i64().map(|i| i.to_string()))
            })
        {
            return Ok(id);
        }
    }
    let available: Vec<String> = list
        .iter()
        .filter_map(|t| {
            let name = t.get("name").and_then(Value::as_str)?;
            let status = t.pointer("/to/name").and_then(Value::as_str)?;
            Some(format!("\"{status}\" (via \"{name}\")"))
        })
        .collect();
    Err(format!(
        "no transition leads to status \"{to}\"; available: {}",
        if available.is_empty() {
            "none".to_owned()
        } else {
            available.join(", ")
        }
    ))
}

/// Jira's error answer (`errorMessages`, `errors`) as one line.
pub fn error_summary(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let mut parts: Vec<String> = v
        .get("errorMessages")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if let Some(Value::Object(errors)) = v.get("errors") {
        parts.extend(
            errors
                .iter()
                .map(|(k, e)| format!("{k}: {}", e.as_str().unwrap_or(&e.to_string()))),
        );
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adf_has_one_paragraph_per_block_and_hard_breaks_inside() {
        assert_eq!(
            adf("Hello world"),
            serde_json::from_str::<Value>(include_str!(
                "../../../tests/fixtures/jira/adf_minimal_doc.json"
            ))
            .unwrap()
        );
        assert_eq!(
            adf("line one\nline two\n\nsecond\n\n\n"),
            json!({"type": "doc", "version": 1, "content": [
                {"type": "paragraph", "content": [
                    {"type": "text", "text": "line one"}, {"type": "hardBreak"}, {"type": "text", "text": "line two"}]},
                {"type": "paragraph", "content": [{"type": "text", "text": "second"}]}
            ]})
        );
    }

    #[test]
    fn transitions_are_picked_by_target_status_name() {
        let answer: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/jira/get_transitions_response_200.json"
        ))
        .unwrap();
        assert_eq!(pick_transition(&answer, "in progress"), Ok("2".into()));
        let e = pick_transition(&answer, "Done").unwrap_err();
        assert!(e.starts_with("no transition leads to status \"Done\"; available: \"In Progress\" (via \"Close Issue\")"), "{e}");
    }

    #[test]
    fn jira_errors_are_summarised() {
        let body = include_bytes!("../../../tests/fixtures/jira/create_issue_response_400.json");
        assert_eq!(
            error_summary(body).as_deref(),
            Some("Field 'priority' is required")
        );
    }

    #[test]
    fn basic_auth_is_email_and_token() {
        let a = JiraAuth::Basic {
            email: "a@b.c".into(),
            api_token: crate::verify::Secret::new("tok"),
        };
        assert_eq!(authorization(&a), "Basic YUBiLmM6dG9r");
    }
}
