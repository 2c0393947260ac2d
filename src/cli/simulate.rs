//! What routes.yaml would do with one event, without network: which routes
//! match (and for the others, the first condition that fails), and the exact
//! requests that would be sent, secrets masked. Shared by `simulate` and
//! `test`.

use crate::deliver::render_context;
use crate::ids::{DeliveryId, EventId, now_millis};
use crate::pipeline::{Pipeline, Target};
use crate::route::matcher;
use crate::store::{ClaimedDelivery, EventToRoute};
use crate::targets::{PlannedRequest, Render};
use crate::verify::identify;
use handlebars::Context;
use serde_json::{Map, Value, json};

/// The input of a simulation.
pub struct Input<'a> {
    /// Source name.
    pub source: &'a str,
    /// The exact body.
    pub body: &'a [u8],
    /// Request headers, for sources that take the event type or id from one
    /// (`event_header`, `id_header`, Standard Webhooks' `webhook-id`).
    pub headers: &'a [(String, String)],
    /// Stands in for the enriched ClickUp task.
    pub task: Option<Value>,
    /// Stands in for remembered links.
    pub links: Map<String, Value>,
}

fn mask_auth(v: &str) -> String {
    match v.split_once(' ') {
        Some((scheme, _)) => format!("{scheme} ***"),
        None if v.starts_with("pk_") => "pk_***".to_owned(),
        None => "***".to_owned(),
    }
}

/// A request as shown: secrets masked (authorization values, Slack webhook
/// paths, headers configured on the target).
pub fn show_request(target: &Target, r: &PlannedRequest) -> Value {
    let secret_headers = target.kind.secret_headers();
    let mut headers = Map::new();
    for (k, v) in &r.headers {
        let lower = k.to_ascii_lowercase();
        let shown = if lower == "authorization" {
            mask_auth(v)
        } else if secret_headers.contains(&lower) {
            "***".to_owned()
        } else {
            v.clone()
        };
        headers.insert(k.clone(), Value::String(shown));
    }
    let url = if target.kind.secret_path() {
        let port = r.url.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{}{port}/***",
            r.url.scheme(),
            r.url.host_str().unwrap_or_default()
        )
    } else {
        r.url.to_string()
    };
    json!({
        "method": r.method.as_str(),
        "url": url,
        "headers": headers,
        "body": r.body.clone().unwrap_or(Value::Null),
    })
}

/// Runs the simulation. The error is for input that the daemon would refuse
/// (unknown source, a body that is not an event of that source).
pub fn simulate(pipeline: &Pipeline, input: &Input<'_>) -> Result<Value, String> {
    let source = pipeline.sources.get(input.source).ok_or_else(|| {
        let known: Vec<&str> = pipeline.sources.keys().map(String::as_str).collect();
        format!(
            "unknown source \"{}\"; known sources: {}",
            input.source,
            known.join(", ")
        )
    })?;
    let identity =
        identify(&source.identity, input.headers, input.body).map_err(|e| e.to_string())?;
    let payload: Value = serde_json::from_slice(input.body).map_err(|e| e.to_string())?;
    let event = EventToRoute {
        id: EventId::from_stored("evt_simulated".into()),
        source: input.source.to_owned(),
        event_type: identity.event_type.clone(),
        payload: input.body.to_vec(),
        received_at: now_millis(),
        route_attempts: 0,
    };
    let mut routes = Vec::new();
    for route in &pipeline.routes {
        if let Err(m) = matcher::matches_event(route, &event.source, &event.event_type, &payload) {
            routes.push(json!({"route": route.name, "matched": false, "reason": m.reason}));
            continue;
        }
        let mut context = matcher::extract(route, &payload);
        if route.enrich_task {
            let Some(task) = &input.task else {
                routes.push(json!({"route": route.name, "matched": false,
                    "reason": "the route needs the ClickUp task: pass --task FILE (a GET /task/{id} answer)"}));
                continue;
            };
            if let Err(m) = matcher::matches_task(route, task) {
                routes.push(json!({"route": route.name, "matched": false, "reason": format!("task: {}", m.reason)}));
                continue;
            }
            context.insert("task".into(), task.clone());
        }
        let mut deliveries = Vec::new();
        for (i, step) in route.send.iter().enumerate() {
            let d = ClaimedDelivery {
                id: DeliveryId::from_stored("dlv_simulated".into()),
                event_id: event.id.clone(),
                route: route.name.clone(),
                step: u32::try_from(i).unwrap_or(0),
                target: step.target.clone(),
                attempts: 0,
                attempts_base: 0,
                unfinished_claims: 0,
                context: Value::Object(context.clone()),
                source: event.source.clone(),
                event_type: event.event_type.clone(),
                payload: event.payload.clone(),
                received_at: event.received_at,
            };
            let mut entry = json!({"step": i + 1, "target": step.target});
            let Some(target) = pipeline.targets.get(&step.target) else {
                entry["error"] = json!(format!("unknown target {}", step.target));
                deliveries.push(entry);
                continue;
            };
            let ctx = Context::from(render_context(&d, payload.clone(), input.links.clone()));
            let render = Render {
                templates: &pipeline.templates,
                ctx: &ctx,
            };
            match step.action.plan(&render, d.id.as_str()) {
                Ok(plan) => {
                    entry["requests"] = Value::Array(
                        plan.requests
                            .iter()
                            .map(|q| show_request(target, q))
                            .collect(),
                    );
                    if let Some(note) = plan.note {
                        entry["note"] = json!(note);
                    }
                    if let Some(name) = &step.remember {
                        entry["remember"] = json!(name);
                    }
                }
                Err(e) => entry["error"] = json!(e.to_string()),
            }
            deliveries.push(entry);
        }
        routes.push(json!({"route": route.name, "matched": true, "deliveries": deliveries}));
    }
    Ok(json!({
        "source": input.source,
        "event_type": identity.event_type,
        "dedupe_key": identity.dedupe_key,
        "routes": routes,
    }))
}
