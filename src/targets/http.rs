//! `type: http`: any HTTP endpoint, under the target's `url`.

use super::request::{PlannedRequest, RequestError, json_utf8};
use super::{Body, Definition, Plan, Render, StepBuilder, StepError, TargetType};
use crate::routes_file::diag::Diagnostics;
use crate::routes_file::reader::{self, MapReader};
use crate::routes_file::yaml::Node;
use crate::transform::render::{Kind, TemplateId, is_dot_segment};
use crate::verify::Secret;
use serde_json::Value;

/// The HTTP target type.
#[derive(Debug, Clone)]
pub struct Http;

/// An HTTP target.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The URL.
    pub url: String,
    /// Default method.
    pub method: String,
    /// Headers sent with every request (values may hold secrets).
    pub headers: Vec<(String, Secret)>,
}

/// An http step.
#[derive(Debug, Clone)]
pub struct Action {
    /// Overrides the target's method.
    pub method: Option<String>,
    /// Appended to the target URL (rendered values are percent-encoded).
    pub path: Option<TemplateId>,
    /// Extra headers.
    pub headers: Vec<(String, TemplateId)>,
    /// Query parameters.
    pub query: Vec<(String, TemplateId)>,
    /// `body` or `template`.
    pub body: Option<Body>,
}

/// An HTTP method name.
pub fn method(node: &Node, d: &mut Diagnostics) -> Option<String> {
    let m = reader::string(node, "method", d)?.to_ascii_uppercase();
    const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
    if METHODS.contains(&m.as_str()) {
        Some(m)
    } else {
        d.error(
            node.pos,
            format!("unknown method \"{m}\"; use GET, POST, PUT, PATCH or DELETE"),
        );
        None
    }
}

/// Refuses a rendered `path` with a `.` or `..` segment (also
/// percent-encoded): URL parsing would resolve it and move the request
/// elsewhere on the host, above the target's `url`.
fn check_path(path: &str) -> Result<(), RequestError> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    match path.split(['/', '\\']).find(|s| is_dot_segment(s)) {
        Some(seg) => Err(RequestError::PathDotSegment {
            path: path.to_owned(),
            segment: seg.to_owned(),
        }),
        None => Ok(()),
    }
}

/// The target's `url` with a rendered `path` appended; whatever was
/// rendered, the result stays under the target's `url` on its host.
pub fn full_url(url: &str, path: Option<&str>) -> Result<reqwest::Url, RequestError> {
    let base = reqwest::Url::parse(url).map_err(RequestError::Url)?;
    let full = match path {
        None | Some("") => base.clone(),
        Some(p) => {
            check_path(p)?;
            let sep = if p.starts_with('/') { "" } else { "/" };
            reqwest::Url::parse(&format!("{}{sep}{p}", url.trim_end_matches('/')))
                .map_err(RequestError::Url)?
        }
    };
    let base_path = base.path().trim_end_matches('/');
    let under = full
        .path()
        .strip_prefix(base_path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if !under {
        return Err(RequestError::OutsideBase {
            path: full.path().to_owned(),
            base: base.path().to_owned(),
        });
    }
    // Architecture Invariant: a target's host comes from routes.yaml alone.
    // Path values are percent-encoded when rendered; this check makes the
    // guarantee independent of that.
    if full.scheme() != base.scheme()
        || full.host_str() != base.host_str()
        || full.port() != base.port()
    {
        return Err(RequestError::OtherHost(
            full.host_str().unwrap_or("").to_owned(),
        ));
    }
    Ok(full)
}

impl TargetType for Http {
    const NAME: &'static str = "http";
    type Endpoint = Endpoint;
    type Action = Action;

    fn endpoint(r: &mut MapReader<'_>, t: Definition<'_>, d: &mut Diagnostics) -> Option<Endpoint> {
        r.know(&["url", "method", "headers"]);
        let url = r.require("url", d).and_then(|n| t.url(n, "url", d));
        let method = match r.take("method") {
            Some(n) => method(n, d),
            None => Some("POST".to_owned()),
        };
        let headers = r
            .take("headers")
            .map(|n| {
                reader::entries(n, "headers", d)
                    .into_iter()
                    .filter_map(|(k, _, v)| {
                        reader::string(v, "a header value", d)
                            .map(|v| (k.to_owned(), Secret::new(v)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Endpoint {
            url: url?,
            method: method?,
            headers,
        })
    }

    fn base(e: &Endpoint) -> &str {
        &e.url
    }

    fn secret_headers(e: &Endpoint) -> Vec<String> {
        e.headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect()
    }

    fn action(
        r: &mut MapReader<'_>,
        b: &mut StepBuilder<'_>,
        d: &mut Diagnostics,
    ) -> Option<Action> {
        let method = r.take("method").and_then(|n| method(n, d));
        let path = r
            .take("path")
            .and_then(|n| b.tpl_kind(n, "path", Kind::UrlPath, d));
        let headers = r
            .take("headers")
            .map(|n| b.string_map(n, "headers", d))
            .unwrap_or_default();
        let query = r
            .take("query")
            .map(|n| b.string_map(n, "query", d))
            .unwrap_or_default();
        let body = b.body(r, d);
        Some(Action {
            method,
            path,
            headers,
            query,
            body,
        })
    }

    fn plan(e: &Endpoint, a: &Action, t: &Render<'_>, _: &str) -> Result<Plan, StepError> {
        let path = t.opt(a.path.as_ref())?;
        let headers = t.pairs(&a.headers)?;
        let query = t.pairs(&a.query)?;
        let body = a.body.as_ref().map(|b| t.body(b)).transpose()?;
        let mut url = full_url(&e.url, path.as_deref())?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &query {
                pairs.append_pair(k, v);
            }
        }
        let name = a.method.as_deref().unwrap_or(&e.method);
        let method = reqwest::Method::from_bytes(name.as_bytes())
            .map_err(|_| RequestError::Method(name.to_owned()))?;
        let mut all: Vec<(String, String)> = body.iter().map(|_| json_utf8()).collect();
        all.extend(
            e.headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned())),
        );
        all.extend(headers);
        Ok(Plan::from(vec![PlannedRequest {
            method,
            url,
            headers: all,
            body,
        }]))
    }

    fn created(_: &Action, answer: &Value) -> Option<String> {
        super::id_text(answer.get("id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_path_stays_under_the_targets_url() {
        let ok = full_url("https://h.example/base", Some("a/b")).unwrap();
        assert_eq!(ok.as_str(), "https://h.example/base/a/b");
        let e = |p: &str| {
            full_url("https://h.example/base", Some(p))
                .unwrap_err()
                .to_string()
        };
        assert!(
            e("../x").starts_with("rendered path \"../x\" has a \"..\" segment"),
            "{}",
            e("../x")
        );
        assert!(e("%2e%2e/x").contains("has a \"%2e%2e\" segment"));
        assert_eq!(
            full_url("https://h.example/base", Some(""))
                .unwrap()
                .as_str(),
            "https://h.example/base"
        );
    }
}
