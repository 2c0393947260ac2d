//! The OpenAPI document of `/api/v1`: valid, complete, served.

use crate::support::{ROUTES, spawn_app_with};
use serde_json::Value;

const DOC: &str = include_str!("../../src/admin/openapi.json");
const API: &str = include_str!("../../src/admin/api.rs");
const TOKEN: &str = "openapi-test-token";

/// `(path, method)` of every `only("PATH", ...).route(web::METHOD()` in api.rs
/// (the `configure` of the admin API).
fn registered_routes() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in API.split("only(\"").skip(1) {
        let (path, rest) = part.split_once('"').unwrap();
        let method = rest
            .split_once("web::")
            .and_then(|(_, m)| m.split_once("()"))
            .map(|(m, _)| m.to_owned())
            .unwrap();
        out.push((path.to_owned(), method));
    }
    out
}

#[test]
fn document_is_openapi_3_and_lists_every_route() {
    let doc: Value = serde_json::from_str(DOC).expect("openapi.json is valid JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let routes = registered_routes();
    assert!(routes.len() >= 9, "found only {routes:?} in api.rs");
    for (path, method) in &routes {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in openapi.json");
        assert!(
            op["responses"]["200"].is_object(),
            "{method} {path} has no 200 answer in openapi.json"
        );
    }
    // And nothing the code does not serve.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                routes.iter().any(|(p, m)| p == path && m == method),
                "openapi.json has {method} {path}, which api.rs does not register"
            );
        }
    }
    // Every $ref points at something.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let pointer = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
}

#[tokio::test]
async fn served_without_token_while_the_rest_needs_it() {
    let app = spawn_app_with(ROUTES, |s| s.admin_token = Some(TOKEN.into())).await;
    let res = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(res.text().await.unwrap(), DOC);
    let res = app
        .client
        .get(format!("{}/api/v1/events", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn other_methods_answer_405_with_allow() {
    let app = spawn_app_with(ROUTES, |s| s.admin_token = Some(TOKEN.into())).await;
    for (method, path, allow) in [("TRACE", "/activity", "GET"), ("GET", "/reload", "POST")] {
        let res = app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}/api/v1{path}", app.admin_url),
            )
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
    }
}
