//! What routes.yaml would do with one event, without network: which routes
//! match (and for the others, the first condition that fails), and the exact
//! requests that would be sent. Shared by `simulate`, `test` and the
//! console's simulate form.
//!
//! Nothing here decides anything on its own: the routes are matched by the
//! router's [`route::decide`] and [`route::with_task`], the deliveries are
//! the router's [`route::deliveries`] (so their ids are
//! `DeliveryId::for_step` of the event, route and step, as in the daemon),
//! and each is rendered and planned by the delivery worker's functions. The
//! result is typed ([`Simulation`]); its JSON form masks secrets.

use crate::deliver::render_context;
use crate::ids::{DeliveryId, EventId, now_millis};
use crate::pipeline::{Pipeline, Target};
use crate::route::{self, Decision};
use crate::store::{ClaimedDelivery, EventToRoute, NewDelivery};
use crate::targets::{Plan, PlannedRequest, Render};
use crate::verify::identify;
use handlebars::Context;
use serde_json::{Map, Value, json};

/// The event id of a simulation that stands for no stored event.
pub const SIMULATED_EVENT_ID: &str = "evt_simulated";

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
    /// The stored event this stands for; `None`: an event id of
    /// [`SIMULATED_EVENT_ID`], received now.
    pub stored: Option<EventStamp>,
}

/// A stored event's id and acceptance time: with them, delivery ids (the
/// `Idempotency-Key`, Jira's delivery label, `meta.delivery_id`) and
/// `meta.received_at` are the daemon's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStamp {
    /// Its id.
    pub id: EventId,
    /// When it was accepted, Unix ms.
    pub received_at: i64,
}

/// Why an event cannot be simulated: the daemon would refuse it.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// No such source in routes.yaml.
    #[error("unknown source \"{name}\"; known sources: {known}")]
    UnknownSource {
        /// The source asked for.
        name: String,
        /// The sources there are, comma separated.
        known: String,
    },
    /// The body is not an event of that source (not JSON, no type or id).
    #[error(transparent)]
    Body(#[from] crate::verify::RejectReason),
}

/// What routes.yaml does with one event.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// Source name.
    pub source: String,
    /// The event type the daemon would store.
    pub event_type: String,
    /// The dedupe id the daemon would store.
    pub dedupe_key: String,
    /// The event id the deliveries derive from.
    pub event_id: EventId,
    /// Every route of the file, in file order.
    pub routes: Vec<RouteResult>,
}

/// One route's verdict.
#[derive(Debug, Clone)]
pub struct RouteResult {
    /// Route name.
    pub route: String,
    /// Whether it fires, and what it sends.
    pub outcome: RouteOutcome,
}

/// Whether a route fires.
#[derive(Debug, Clone)]
pub enum RouteOutcome {
    /// It does not: the first condition that fails, with what was found.
    NoMatch(String),
    /// It does: one delivery per send step.
    Matched(Vec<StepResult>),
}

/// One delivery of a route that fires.
#[derive(Debug, Clone)]
pub struct StepResult {
    /// The send step, from 0.
    pub step: u32,
    /// Target name.
    pub target: String,
    /// The delivery id, also the `Idempotency-Key`.
    pub delivery_id: DeliveryId,
    /// The `remember:` name of the step.
    pub remember: Option<String>,
    /// The requests, or why the delivery would be dead.
    pub outcome: Result<Planned, String>,
    mask: Mask,
}

/// The requests of one delivery, unmasked, exactly as the worker sends them
/// (plus the `Idempotency-Key` header it adds to each), and what happens
/// after them that depends on an answer (a Jira transition).
pub type Planned = Plan;

/// What the shown form of a target's requests hides.
#[derive(Debug, Clone, Default)]
struct Mask {
    /// Header names configured on the target (lower case): their values.
    secret_headers: Vec<String>,
    /// The URL path (a Slack webhook URL is its secret).
    hide_path: bool,
}

impl Mask {
    fn of(target: &Target) -> Mask {
        Mask {
            secret_headers: target.kind.secret_headers(),
            hide_path: target.kind.secret_path(),
        }
    }
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
fn show_request(mask: &Mask, r: &PlannedRequest, key: &DeliveryId) -> Value {
    let mut headers = Map::new();
    headers.insert(
        "Idempotency-Key".to_owned(),
        Value::String(key.as_str().to_owned()),
    );
    for (k, v) in &r.headers {
        let lower = k.to_ascii_lowercase();
        let shown = if lower == "authorization" {
            mask_auth(v)
        } else if mask.secret_headers.contains(&lower) {
            "***".to_owned()
        } else {
            v.clone()
        };
        headers.insert(k.clone(), Value::String(shown));
    }
    let url = if mask.hide_path {
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

impl StepResult {
    /// The requests as shown, secrets masked (empty when it would be dead).
    pub fn shown(&self) -> Vec<Value> {
        match &self.outcome {
            Ok(p) => p
                .requests
                .iter()
                .map(|q| show_request(&self.mask, q, &self.delivery_id))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn to_json(&self) -> Value {
        let mut entry = json!({"step": self.step + 1, "target": self.target});
        match &self.outcome {
            Ok(p) => {
                entry["requests"] = Value::Array(self.shown());
                if let Some(note) = &p.note {
                    entry["note"] = json!(note);
                }
                if let Some(name) = &self.remember {
                    entry["remember"] = json!(name);
                }
            }
            Err(e) => entry["error"] = json!(e),
        }
        entry
    }
}

impl Simulation {
    /// The routes that fire, in file order.
    pub fn matched(&self) -> impl Iterator<Item = &RouteResult> {
        self.routes
            .iter()
            .filter(|r| matches!(r.outcome, RouteOutcome::Matched(_)))
    }

    /// What `simulate` prints: secrets masked.
    pub fn to_json(&self) -> Value {
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| match &r.outcome {
                RouteOutcome::NoMatch(reason) => {
                    json!({"route": r.route, "matched": false, "reason": reason})
                }
                RouteOutcome::Matched(steps) => json!({
                    "route": r.route,
                    "matched": true,
                    "deliveries": steps.iter().map(StepResult::to_json).collect::<Vec<_>>(),
                }),
            })
            .collect();
        json!({
            "source": self.source,
            "event_type": self.event_type,
            "dedupe_key": self.dedupe_key,
            "routes": routes,
        })
    }
}

/// Renders and plans one delivery as the delivery worker does.
fn step_result(
    pipeline: &Pipeline,
    event: &EventToRoute,
    payload: &Value,
    links: &Map<String, Value>,
    d: NewDelivery,
) -> StepResult {
    let step = pipeline
        .routes
        .iter()
        .find(|r| r.name == d.route)
        .and_then(|r| r.send.get(d.step as usize));
    let target = pipeline.targets.get(&d.target);
    let claimed = ClaimedDelivery {
        id: d.id,
        event_id: event.id.clone(),
        route: d.route,
        step: d.step,
        target: d.target,
        attempts: 0,
        attempts_base: 0,
        unfinished_claims: 0,
        context: d.context,
        source: event.source.clone(),
        event_type: event.event_type.clone(),
        payload: event.payload.clone(),
        received_at: event.received_at,
    };
    let outcome = match (step, target) {
        (Some(step), Some(_)) => {
            let ctx = Context::from(render_context(&claimed, payload.clone(), links.clone()));
            let render = Render {
                templates: &pipeline.templates,
                ctx: &ctx,
            };
            step.action
                .plan(&render, claimed.id.as_str())
                .map_err(|e| e.to_string())
        }
        (_, None) => Err(format!("unknown target {}", claimed.target)),
        (None, _) => Err(format!(
            "route \"{}\" has no send step #{}",
            claimed.route,
            claimed.step + 1
        )),
    };
    StepResult {
        step: claimed.step,
        target: claimed.target,
        delivery_id: claimed.id,
        remember: step.and_then(|s| s.remember.clone()),
        outcome,
        mask: target.map(Mask::of).unwrap_or_default(),
    }
}

/// Runs the simulation. The error is for input that the daemon would refuse
/// (unknown source, a body that is not an event of that source).
pub fn simulate(pipeline: &Pipeline, input: &Input<'_>) -> Result<Simulation, Refused> {
    let source = pipeline
        .sources
        .get(input.source)
        .ok_or_else(|| Refused::UnknownSource {
            name: input.source.to_owned(),
            known: pipeline
                .sources
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let identity = identify(&source.identity, input.headers, input.body)?;
    // `identify` has parsed the body: it is JSON.
    let payload: Value = serde_json::from_slice(input.body).unwrap_or(Value::Null);
    let stored = input.stored.clone().unwrap_or_else(|| EventStamp {
        id: EventId::from_stored(SIMULATED_EVENT_ID.into()),
        received_at: now_millis(),
    });
    let event = EventToRoute {
        id: stored.id,
        source: input.source.to_owned(),
        event_type: identity.event_type.clone(),
        payload: input.body.to_vec(),
        received_at: stored.received_at,
        route_attempts: 0,
    };
    let mut routes = Vec::new();
    for (index, r) in pipeline.routes.iter().enumerate() {
        let context = match route::decide(r, &route::EventHead::of(&event), &payload) {
            Decision::NoMatch(reason) => Err(reason),
            Decision::Fires(context) => Ok(context),
            Decision::NeedsTask(context) => match &input.task {
                None => Err(
                    "the route needs the ClickUp task: pass --task FILE (a GET /task/{id} answer)"
                        .to_owned(),
                ),
                Some(task) => route::with_task(r, context, task.clone())
                    .map_err(|reason| format!("task: {reason}")),
            },
        };
        let outcome = match context {
            Err(reason) => RouteOutcome::NoMatch(reason),
            Ok(context) => RouteOutcome::Matched(
                route::deliveries(pipeline, &event.id, index, &context, &payload, None)
                    .into_iter()
                    .map(|d| step_result(pipeline, &event, &payload, &input.links, d))
                    .collect(),
            ),
        };
        routes.push(RouteResult {
            route: r.name.clone(),
            outcome,
        });
    }
    Ok(Simulation {
        source: input.source.to_owned(),
        event_type: identity.event_type,
        dedupe_key: identity.dedupe_key,
        event_id: event.id,
        routes,
    })
}
