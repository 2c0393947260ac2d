//! From a send step and a render context to the exact HTTP request(s).
//! Pure: `simulate` and the delivery worker share it.

use crate::pipeline::{Action, Body, BodyNode, SendStep, Target, TargetKind};
use crate::transform::render::{RenderError, Templates, is_dot_segment};
use handlebars::Context;
use serde_json::{Map, Value};

/// A step with every template rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum RenderedStep {
    /// Slack: the message payload.
    Slack {
        /// `{"text": ...}` or the rendered body.
        payload: Value,
    },
    /// Generic HTTP.
    Http {
        /// Method override.
        method: Option<String>,
        /// Rendered path (values percent-encoded).
        path: Option<String>,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Query parameters.
        query: Vec<(String, String)>,
        /// Body.
        body: Option<Value>,
    },
    /// Jira: create an issue.
    JiraCreate {
        /// Project key.
        project: String,
        /// Issue type name.
        issue_type: String,
        /// Summary.
        summary: String,
        /// Description text.
        description: Option<String>,
        /// Labels.
        labels: Vec<String>,
        /// Extra fields.
        fields: Option<Value>,
    },
    /// Jira: comment.
    JiraComment {
        /// Issue key.
        issue: String,
        /// Text.
        text: String,
    },
    /// Jira: transition to a status.
    JiraTransition {
        /// Issue key.
        issue: String,
        /// Target status name.
        to: String,
    },
    /// ClickUp: update a task.
    ClickUpUpdate {
        /// Task id.
        task_id: String,
        /// status, name, priority.
        fields: Map<String, Value>,
        /// Custom field id -> value.
        custom: Vec<(String, Value)>,
    },
    /// ClickUp: comment.
    ClickUpComment {
        /// Task id.
        task_id: String,
        /// Text.
        text: String,
    },
    /// ClickUp: create a task.
    ClickUpCreate {
        /// List id.
        list_id: String,
        /// name, description, status.
        fields: Map<String, Value>,
    },
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
    ) -> Result<PlannedRequest, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
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

fn render_body_node(t: &Templates, node: &BodyNode, ctx: &Context) -> Result<Value, RenderError> {
    Ok(match node {
        BodyNode::Template(id) => t.render_value(id, ctx)?,
        BodyNode::Literal(v) => v.clone(),
        BodyNode::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| render_body_node(t, i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        BodyNode::Object(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                m.insert(k.clone(), render_body_node(t, v, ctx)?);
            }
            Value::Object(m)
        }
    })
}

/// Renders each given template into `m` under its key; absent ones are left out.
fn render_optional(
    t: &Templates,
    ctx: &Context,
    m: &mut Map<String, Value>,
    fields: &[(&str, &Option<crate::transform::render::TemplateId>)],
) -> Result<(), RenderError> {
    for (key, tpl) in fields {
        if let Some(id) = tpl {
            m.insert((*key).to_owned(), Value::String(t.render_text(id, ctx)?));
        }
    }
    Ok(())
}

fn render_body(t: &Templates, body: &Body, ctx: &Context) -> Result<Value, RenderError> {
    match body {
        Body::Json(node) => render_body_node(t, node, ctx),
        Body::File(id) => t.render_value(id, ctx),
    }
}

/// Renders every template of a step.
pub fn render_step(
    t: &Templates,
    step: &SendStep,
    ctx: &Context,
) -> Result<RenderedStep, RenderError> {
    Ok(match &step.action {
        Action::Slack { text, body } => {
            let payload = match (text, body) {
                (_, Some(b)) => render_body(t, b, ctx)?,
                (Some(text), None) => serde_json::json!({ "text": t.render_text(text, ctx)? }),
                (None, None) => Value::Object(Map::new()),
            };
            RenderedStep::Slack { payload }
        }
        Action::Http {
            method,
            path,
            headers,
            query,
            body,
        } => RenderedStep::Http {
            method: method.clone(),
            path: path.as_ref().map(|p| t.render_text(p, ctx)).transpose()?,
            headers: headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), t.render_text(v, ctx)?)))
                .collect::<Result<_, RenderError>>()?,
            query: query
                .iter()
                .map(|(k, v)| Ok((k.clone(), t.render_text(v, ctx)?)))
                .collect::<Result<_, RenderError>>()?,
            body: body.as_ref().map(|b| render_body(t, b, ctx)).transpose()?,
        },
        Action::JiraCreateIssue {
            project,
            issue_type,
            summary,
            description,
            labels,
            fields,
        } => RenderedStep::JiraCreate {
            project: t.render_text(project, ctx)?,
            issue_type: t.render_text(issue_type, ctx)?,
            summary: t.render_text(summary, ctx)?,
            description: description
                .as_ref()
                .map(|d| t.render_text(d, ctx))
                .transpose()?,
            labels: labels
                .iter()
                .map(|l| t.render_text(l, ctx))
                .collect::<Result<_, _>>()?,
            fields: fields
                .as_ref()
                .map(|f| render_body_node(t, f, ctx))
                .transpose()?,
        },
        Action::JiraComment { issue, text } => RenderedStep::JiraComment {
            issue: t.render_text(issue, ctx)?,
            text: t.render_text(text, ctx)?,
        },
        Action::JiraTransition { issue, to } => RenderedStep::JiraTransition {
            issue: t.render_text(issue, ctx)?,
            to: t.render_text(to, ctx)?,
        },
        Action::ClickUpUpdateTask {
            task_id,
            status,
            name,
            priority,
            fields,
        } => {
            let mut m = Map::new();
            render_optional(t, ctx, &mut m, &[("status", status), ("name", name)])?;
            if let Some(p) = priority {
                m.insert("priority".into(), render_body_node(t, p, ctx)?);
            }
            RenderedStep::ClickUpUpdate {
                task_id: t.render_text(task_id, ctx)?,
                fields: m,
                custom: fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), render_body_node(t, v, ctx)?)))
                    .collect::<Result<_, RenderError>>()?,
            }
        }
        Action::ClickUpComment { task_id, text } => RenderedStep::ClickUpComment {
            task_id: t.render_text(task_id, ctx)?,
            text: t.render_text(text, ctx)?,
        },
        Action::ClickUpCreateTask {
            list_id,
            name,
            description,
            status,
        } => {
            let mut m = Map::new();
            m.insert("name".into(), Value::String(t.render_text(name, ctx)?));
            render_optional(
                t,
                ctx,
                &mut m,
                &[("description", description), ("status", status)],
            )?;
            RenderedStep::ClickUpCreate {
                list_id: t.render_text(list_id, ctx)?,
                fields: m,
            }
        }
    })
}

fn parse_url(s: &str) -> Result<reqwest::Url, String> {
    reqwest::Url::parse(s).map_err(|e| format!("invalid URL: {e}"))
}

fn json_headers() -> Vec<(String, String)> {
    vec![(
        "Content-Type".to_owned(),
        "application/json; charset=utf-8".to_owned(),
    )]
}

/// Refuses a rendered http `path` with a `.` or `..` segment (also
/// percent-encoded): URL parsing would resolve it and move the request
/// elsewhere on the host, above the target's `url`.
fn check_path(path: &str) -> Result<(), String> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    match path.split(['/', '\\']).find(|s| is_dot_segment(s)) {
        Some(seg) => Err(format!(
            "rendered path {path:?} has a \"{seg}\" segment, which would move the request \
             outside the target's url; check the values the path template reads"
        )),
        None => Ok(()),
    }
}

/// Builds the request(s) of a rendered step for `target`. An error is a
/// reason for a dead delivery (the request can never be valid).
///
/// For a Jira transition this is the first request only (the transitions
/// are listed, then the one reaching the status is posted); a Jira create
/// retried after an uncertain failure is preceded by a search. The delivery
/// worker adds those steps; `delivery_id` goes into the Jira label.
pub fn plan(
    target: &Target,
    rendered: &RenderedStep,
    delivery_id: &str,
) -> Result<Vec<PlannedRequest>, String> {
    use super::targets::{clickup, jira};
    match (&target.kind, rendered) {
        (
            TargetKind::ClickUp { token, base_url },
            RenderedStep::ClickUpUpdate {
                task_id,
                fields,
                custom,
            },
        ) => clickup::update_task(base_url, token, task_id, fields, custom),
        (
            TargetKind::ClickUp { token, base_url },
            RenderedStep::ClickUpComment { task_id, text },
        ) => Ok(vec![clickup::comment(base_url, token, task_id, text)?]),
        (
            TargetKind::ClickUp { token, base_url },
            RenderedStep::ClickUpCreate { list_id, fields },
        ) => Ok(vec![clickup::create_task(
            base_url,
            token,
            list_id,
            fields.clone(),
        )?]),
        (
            TargetKind::Jira { base_url, auth },
            RenderedStep::JiraCreate {
                project,
                issue_type,
                summary,
                description,
                labels,
                fields,
            },
        ) => {
            let issue = jira::NewIssue {
                project,
                issue_type,
                summary,
                description: description.as_deref(),
                labels,
                fields: fields.as_ref(),
            };
            Ok(vec![jira::create_issue(
                base_url,
                auth,
                &issue,
                delivery_id,
            )?])
        }
        (TargetKind::Jira { base_url, auth }, RenderedStep::JiraComment { issue, text }) => {
            Ok(vec![jira::comment(base_url, auth, issue, text)?])
        }
        (TargetKind::Jira { base_url, auth }, RenderedStep::JiraTransition { issue, .. }) => {
            Ok(vec![jira::transitions(base_url, auth, issue)?])
        }
        (TargetKind::SlackWebhook { webhook_url }, RenderedStep::Slack { payload }) => {
            Ok(vec![PlannedRequest {
                method: reqwest::Method::POST,
                url: parse_url(webhook_url.expose())?,
                headers: json_headers(),
                body: Some(payload.clone()),
            }])
        }
        (
            TargetKind::SlackApi {
                token,
                channel,
                base_url,
            },
            RenderedStep::Slack { payload },
        ) => {
            let mut payload = payload.clone();
            if let Value::Object(m) = &mut payload {
                m.entry("channel")
                    .or_insert_with(|| Value::String(channel.clone()));
            }
            let mut headers = json_headers();
            headers.push((
                "Authorization".to_owned(),
                format!("Bearer {}", token.expose()),
            ));
            Ok(vec![PlannedRequest {
                method: reqwest::Method::POST,
                url: parse_url(&format!("{base_url}/chat.postMessage"))?,
                headers,
                body: Some(payload),
            }])
        }
        (
            TargetKind::Http {
                url,
                method: default_method,
                headers: target_headers,
            },
            RenderedStep::Http {
                method,
                path,
                headers,
                query,
                body,
            },
        ) => {
            let base = parse_url(url)?;
            let mut full = match path.as_deref() {
                None | Some("") => base.clone(),
                Some(p) => {
                    check_path(p)?;
                    let sep = if p.starts_with('/') { "" } else { "/" };
                    parse_url(&format!("{}{sep}{p}", url.trim_end_matches('/')))?
                }
            };
            // The same guarantee for the base path: whatever was rendered,
            // the request stays under the target's `url`.
            let base_path = base.path().trim_end_matches('/');
            let under = full
                .path()
                .strip_prefix(base_path)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if !under {
                return Err(format!(
                    "rendered path {} is outside the target's url path {}; check the \
                     step's path and the values it reads",
                    full.path(),
                    base.path()
                ));
            }
            // Architecture Invariant: a target's host comes from routes.yaml
            // alone. Path values are percent-encoded when rendered; this
            // check makes the guarantee independent of that.
            if full.scheme() != base.scheme()
                || full.host_str() != base.host_str()
                || full.port() != base.port()
            {
                return Err(format!(
                    "rendered path would change the target host ({})",
                    full.host_str().unwrap_or("")
                ));
            }
            if !query.is_empty() {
                let mut pairs = full.query_pairs_mut();
                for (k, v) in query {
                    pairs.append_pair(k, v);
                }
            }
            let method_name = method.as_deref().unwrap_or(default_method);
            let method = reqwest::Method::from_bytes(method_name.as_bytes())
                .map_err(|_| format!("invalid method {method_name}"))?;
            let mut all_headers: Vec<(String, String)> = if body.is_some() {
                json_headers()
            } else {
                Vec::new()
            };
            all_headers.extend(
                target_headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_owned())),
            );
            all_headers.extend(headers.iter().cloned());
            Ok(vec![PlannedRequest {
                method,
                url: full,
                headers: all_headers,
                body: body.clone(),
            }])
        }
        (kind, _) => Err(format!(
            "step does not fit {} target \"{}\"",
            kind.type_name(),
            target.name
        )),
    }
}
