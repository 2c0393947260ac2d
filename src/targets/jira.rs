//! `type: jira`: Jira Cloud REST API v3. Authorization, Atlassian Document
//! Format, the requests of each action, and two quirks when sending: a
//! create retried after an uncertain failure first searches for the issue
//! it may have made, and a transition is chosen from the issue's list.

use super::request::{PlannedRequest, RequestError, segment};
use super::{
    Attempt, Definition, Exchange, Failure, Plan, Render, StepBuilder, StepError, TargetType,
    exchange, id_text, in_order,
};
use crate::routes_file::diag::Diagnostics;
use crate::routes_file::reader::{self, MapReader};
use crate::routes_file::yaml::{Node, Value as Yaml};
use crate::transform::render::TemplateId;
use crate::verify::Secret;
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// The Jira target type.
#[derive(Debug, Clone)]
pub struct Jira;

/// Jira credentials.
#[derive(Debug, Clone)]
pub enum JiraAuth {
    /// `email` + `api_token`: HTTP Basic.
    Basic {
        /// Account e-mail.
        email: String,
        /// API token.
        api_token: Secret,
    },
    /// `token`: Bearer (personal access token).
    Bearer(Secret),
}

/// A Jira Cloud site.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `https://acme.atlassian.net`.
    pub base_url: String,
    /// Credentials.
    pub auth: JiraAuth,
}

/// A Jira step.
#[derive(Debug, Clone)]
pub enum Action {
    /// Create an issue.
    CreateIssue {
        /// Project key.
        project: TemplateId,
        /// Issue type name.
        issue_type: TemplateId,
        /// Summary.
        summary: TemplateId,
        /// Description text, sent as ADF.
        description: Option<TemplateId>,
        /// Labels.
        labels: Vec<TemplateId>,
        /// Extra fields.
        fields: Option<super::BodyNode>,
    },
    /// Comment on an issue.
    Comment {
        /// Issue key.
        issue: TemplateId,
        /// Text, sent as ADF.
        text: TemplateId,
    },
    /// Move an issue to a status.
    Transition {
        /// Issue key.
        issue: TemplateId,
        /// Name of the status to reach.
        to: TemplateId,
    },
}

/// An issue to create, rendered.
struct NewIssue {
    project: String,
    issue_type: String,
    summary: String,
    description: Option<String>,
    labels: Vec<String>,
    fields: Option<Value>,
}

/// A step with its templates rendered.
enum Rendered {
    Create(NewIssue),
    Comment { issue: String, text: String },
    Transition { issue: String, to: String },
}

/// No transition of the issue reaches the status asked for.
#[derive(Debug, thiserror::Error)]
#[error("no transition leads to status \"{to}\"; available: {available}")]
pub struct NoTransition {
    /// The status asked for.
    pub to: String,
    /// The statuses that can be reached, as a list for the message.
    pub available: String,
}

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
        JiraAuth::Bearer(t) => super::request::bearer(t),
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
    e: &Endpoint,
    body: Option<Value>,
) -> Result<PlannedRequest, RequestError> {
    let headers = vec![
        ("Authorization".to_owned(), authorization(&e.auth)),
        ("Accept".to_owned(), "application/json".to_owned()),
    ];
    PlannedRequest::json(method, &url, headers, body)
}

fn issue_url(e: &Endpoint, issue: &str, rest: &str) -> Result<String, RequestError> {
    Ok(format!(
        "{}/rest/api/3/issue/{}{rest}",
        e.base_url,
        segment("issue", issue)?
    ))
}

fn render(a: &Action, t: &Render<'_>) -> Result<Rendered, StepError> {
    Ok(match a {
        Action::CreateIssue {
            project,
            issue_type,
            summary,
            description,
            labels,
            fields,
        } => Rendered::Create(NewIssue {
            project: t.text(project)?,
            issue_type: t.text(issue_type)?,
            summary: t.text(summary)?,
            description: t.opt(description.as_ref())?,
            labels: labels.iter().map(|l| t.text(l)).collect::<Result<_, _>>()?,
            fields: fields.as_ref().map(|f| t.node(f)).transpose()?,
        }),
        Action::Comment { issue, text } => Rendered::Comment {
            issue: t.text(issue)?,
            text: t.text(text)?,
        },
        Action::Transition { issue, to } => Rendered::Transition {
            issue: t.text(issue)?,
            to: t.text(to)?,
        },
    })
}

/// The first request of a rendered step (a transition's list of
/// transitions; the one reaching the status is posted after it).
fn first_request(
    e: &Endpoint,
    r: &Rendered,
    delivery_id: &str,
) -> Result<PlannedRequest, RequestError> {
    match r {
        Rendered::Create(issue) => {
            let mut f = Map::new();
            f.insert("project".into(), json!({ "key": issue.project }));
            f.insert("issuetype".into(), json!({ "name": issue.issue_type }));
            f.insert("summary".into(), Value::String(issue.summary.clone()));
            if let Some(d) = &issue.description {
                f.insert("description".into(), adf(d));
            }
            let mut all: Vec<Value> = issue
                .labels
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| Value::String(l.trim().replace(' ', "_")))
                .collect();
            all.push(Value::String(delivery_label(delivery_id)));
            f.insert("labels".into(), Value::Array(all));
            if let Some(Value::Object(extra)) = &issue.fields {
                for (k, v) in extra {
                    f.insert(k.clone(), v.clone());
                }
            }
            let url = format!("{}/rest/api/3/issue", e.base_url);
            request(reqwest::Method::POST, url, e, Some(json!({ "fields": f })))
        }
        Rendered::Comment { issue, text } => request(
            reqwest::Method::POST,
            issue_url(e, issue, "/comment")?,
            e,
            Some(json!({ "body": adf(text) })),
        ),
        Rendered::Transition { issue, .. } => request(
            reqwest::Method::GET,
            issue_url(e, issue, "/transitions")?,
            e,
            None,
        ),
    }
}

/// GET /rest/api/3/search/jql for the issue a delivery created.
pub fn search_by_label(e: &Endpoint, delivery_id: &str) -> Result<PlannedRequest, RequestError> {
    let url = format!("{}/rest/api/3/search/jql", e.base_url);
    let mut r = request(reqwest::Method::GET, url, e, None)?;
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

/// POST /rest/api/3/issue/{issue}/transitions with the chosen id.
pub fn do_transition(
    e: &Endpoint,
    issue: &str,
    transition_id: &str,
) -> Result<PlannedRequest, RequestError> {
    request(
        reqwest::Method::POST,
        issue_url(e, issue, "/transitions")?,
        e,
        Some(json!({ "transition": { "id": transition_id } })),
    )
}

/// Picks the transition whose target status is named `to` (case-insensitive),
/// or says which statuses can be reached.
pub fn pick_transition(answer: &Value, to: &str) -> Result<String, NoTransition> {
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
    Err(NoTransition {
        to: to.to_owned(),
        available: if available.is_empty() {
            "none".to_owned()
        } else {
            available.join(", ")
        },
    })
}

impl TargetType for Jira {
    const NAME: &'static str = "jira";
    type Endpoint = Endpoint;
    type Action = Action;

    fn endpoint(r: &mut MapReader<'_>, t: Definition<'_>, d: &mut Diagnostics) -> Option<Endpoint> {
        r.know(&["base_url", "email", "api_token", "token"]);
        let base_url = r
            .require("base_url", d)
            .and_then(|n| t.url(n, "base_url", d));
        let auth = if r.key_pos("token").is_some() {
            super::secret(r, "token", d).map(JiraAuth::Bearer)
        } else {
            let email = r
                .require("email", d)
                .and_then(|n| reader::string(n, "email", d));
            let api_token = super::secret(r, "api_token", d);
            match (email, api_token) {
                (Some(email), Some(api_token)) => Some(JiraAuth::Basic { email, api_token }),
                _ => None,
            }
        };
        Some(Endpoint {
            base_url: base_url?,
            auth: auth?,
        })
    }

    fn base(e: &Endpoint) -> &str {
        &e.base_url
    }

    fn action(
        r: &mut MapReader<'_>,
        b: &mut StepBuilder<'_>,
        d: &mut Diagnostics,
    ) -> Option<Action> {
        let name = super::step::action_name(r, &["create_issue", "comment", "transition"], d)?;
        match name.as_str() {
            "create_issue" => {
                let project = b.req(r, "project", d);
                let issue_type = b.req(r, "issue_type", d);
                let summary = b.req(r, "summary", d);
                let description = b.opt(r, "description", d);
                let labels = r
                    .take("labels")
                    .map(|n| {
                        reader::string_or_list(n, "label", d)
                            .into_iter()
                            .filter_map(|(s, pos)| {
                                let node = Node {
                                    pos,
                                    value: Yaml::Str(s),
                                };
                                b.tpl(&node, "labels", d)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let fields = r.take("fields").and_then(|n| b.body_node(n, "fields", d));
                Some(Action::CreateIssue {
                    project: project?,
                    issue_type: issue_type?,
                    summary: summary?,
                    description,
                    labels,
                    fields,
                })
            }
            "comment" => b
                .req2(r, ["issue", "text"], d)
                .map(|(issue, text)| Action::Comment { issue, text }),
            _ => b
                .req2(r, ["issue", "to"], d)
                .map(|(issue, to)| Action::Transition { issue, to }),
        }
    }

    fn plan(
        e: &Endpoint,
        a: &Action,
        t: &Render<'_>,
        delivery_id: &str,
    ) -> Result<Plan, StepError> {
        let rendered = render(a, t)?;
        let mut plan = Plan::from(vec![first_request(e, &rendered, delivery_id)?]);
        if let Rendered::Transition { to, .. } = &rendered {
            plan.note = Some(format!(
                "then POST the transition whose target status is \"{to}\", chosen from the answer"
            ));
        }
        Ok(plan)
    }

    async fn send(
        e: &Endpoint,
        a: &Action,
        t: &Render<'_>,
        at: &Attempt<'_>,
    ) -> Result<Exchange, Failure> {
        let rendered = render(a, t)?;
        let first = first_request(e, &rendered, at.key).map_err(StepError::from)?;
        match &rendered {
            // After an uncertain failure the issue may exist already.
            Rendered::Create(_) if at.attempts > 0 => {
                let search = search_by_label(e, at.key).map_err(StepError::from)?;
                let x = exchange::<Jira>(e, at.send(&search).await?);
                if x.failed() {
                    return Ok(x);
                }
                if let Some(found) = id_text(x.reply.json().pointer("/issues/0/key")) {
                    return Ok(Exchange {
                        created: Some(found),
                        ..x
                    });
                }
            }
            // List the transitions, post the one reaching `to`.
            Rendered::Transition { issue, to } => {
                let x = exchange::<Jira>(e, at.send(&first).await?);
                if x.failed() {
                    return Ok(x);
                }
                let id = pick_transition(&x.reply.json(), to).map_err(StepError::from)?;
                let post = do_transition(e, issue, &id).map_err(StepError::from)?;
                return Ok(exchange::<Jira>(e, at.send(&post).await?));
            }
            _ => {}
        }
        in_order::<Jira>(e, a, &[first], at).await
    }

    fn detail(body: &[u8]) -> Option<String> {
        error_summary(body)
    }

    fn created(a: &Action, answer: &Value) -> Option<String> {
        match a {
            Action::CreateIssue { .. } => id_text(answer.get("key")),
            _ => None,
        }
    }
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
                "../../tests/fixtures/jira/adf_minimal_doc.json"
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
            "../../tests/fixtures/jira/get_transitions_response_200.json"
        ))
        .unwrap();
        assert_eq!(
            pick_transition(&answer, "in progress").ok(),
            Some("2".into())
        );
        let e = pick_transition(&answer, "Done").unwrap_err().to_string();
        assert!(e.starts_with("no transition leads to status \"Done\"; available: \"In Progress\" (via \"Close Issue\")"), "{e}");
    }

    #[test]
    fn jira_errors_are_summarised() {
        let body = include_bytes!("../../tests/fixtures/jira/create_issue_response_400.json");
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

    #[test]
    fn an_issue_key_is_one_path_segment() {
        let e = Endpoint {
            base_url: "https://acme.atlassian.net".into(),
            auth: JiraAuth::Bearer(Secret::new("t")),
        };
        let r = Rendered::Comment {
            issue: "OPS-1".into(),
            text: "hi".into(),
        };
        let req = first_request(&e, &r, "dlv_1").unwrap();
        assert_eq!(
            req.url.as_str(),
            "https://acme.atlassian.net/rest/api/3/issue/OPS-1/comment"
        );
        let bad = Rendered::Transition {
            issue: "..".into(),
            to: "Done".into(),
        };
        assert!(matches!(
            first_request(&e, &bad, "dlv_1"),
            Err(RequestError::DotSegment { .. })
        ));
    }
}
