//! The console's pages: each reads through the store and `admin::api`
//! functions the API uses, and renders with [`super::views`].

use super::views::{
    self, Section, csrf_field, datetime, deliveries_table, delivery_href, event_href, events_table,
    layout, pager, status_badge,
};
use super::{ConsoleError, Keys, Viewer, session_cookie};
use crate::admin::AdminState;
use crate::admin::api::{self, DeliveriesQuery, EventsQuery};
use crate::ids::{DeliveryId, EventId, now_millis};
use crate::pipeline::{Condition, EventPattern, Op, Route};
use crate::store::{DeliveryFilter, DeliveryStatus};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;

/// Rows per list page.
const PAGE: u32 = 50;

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// Registers the console's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(overview))
        .route("/", web::get().to(overview))
        .route("/login", web::get().to(login_form))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/events", web::get().to(events))
        .route("/events/{id}", web::get().to(event))
        .route("/deliveries", web::get().to(deliveries))
        .route("/deliveries/{id}", web::get().to(delivery))
        .route("/deliveries/{id}/replay", web::post().to(replay_one))
        .route("/replay", web::get().to(replay_confirm))
        .route("/replay", web::post().to(replay_all))
        .route("/routes", web::get().to(routes))
        .route("/routes/simulate", web::post().to(simulate))
        .route("/reload", web::post().to(reload))
        .route("/assets/console.css", web::get().to(css))
        .route("/assets/console.js", web::get().to(js));
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(CSS)
}

async fn js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(JS)
}

// ---------------------------------------------------------------- login

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Only a console page is a place to come back to (no open redirect).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if (n == "/console" || n.starts_with("/console/") || n.starts_with("/console?"))
                && !n.contains('\\')
                && !n.starts_with("/console/login") =>
        {
            n
        }
        _ => "/console",
    }
}

async fn login_form(keys: web::Data<Keys>, q: web::Query<NextQuery>) -> HttpResponse {
    let next = safe_next(q.next.as_deref());
    if !keys.login_required() {
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, next))
            .finish();
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(views::login(next, false).into_string())
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

async fn login(req: HttpRequest, keys: web::Data<Keys>, f: web::Form<LoginForm>) -> HttpResponse {
    let next = safe_next(f.next.as_deref());
    if !keys.login_required() {
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, next))
            .finish();
    }
    if !keys.token_matches(&f.token) {
        tracing::warn!("console login refused: wrong admin token");
        return HttpResponse::Unauthorized()
            .content_type("text/html; charset=utf-8")
            .body(views::login(next, true).into_string());
    }
    tracing::info!("console session started");
    let value = keys.new_session(now_millis());
    HttpResponse::SeeOther()
        .cookie(session_cookie(value, super::is_https(&req)))
        .insert_header((header::LOCATION, next))
        .finish()
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    v: Viewer,
    req: HttpRequest,
    keys: web::Data<Keys>,
    f: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    v.check_csrf(&keys, &f.csrf)?;
    let mut gone = session_cookie(String::new(), super::is_https(&req));
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .cookie(gone)
        .insert_header((header::LOCATION, "/console/login"))
        .finish())
}

// ---------------------------------------------------------------- overview

async fn overview(v: Viewer, s: web::Data<AdminState>) -> Result<HttpResponse, ConsoleError> {
    let q = s.store.queue_stats().await?;
    let activity = api::last_hour(&s).await?;
    let pipeline = s.pipeline.load();
    let watched: Vec<&str> = pipeline
        .sources
        .values()
        .filter(|x| x.watch.is_some())
        .map(|x| x.name.as_str())
        .collect();
    let hooks = s.webhooks.all();
    let now = now_millis();
    let oldest = q.oldest_pending_received_at.map(|t| views::age(now - t));
    let events = super::chart::event_series(&activity);
    let deliveries = super::chart::delivery_series(&activity);
    let body = html! {
        section aria-labelledby="queue" {
            h2 #queue { "Queue" }
            dl.cards {
                div { dt { "Unrouted events" } dd #depth-unrouted { (q.unrouted) } }
                div { dt { "Pending deliveries" } dd #depth-pending { a href="/console/deliveries?status=pending" { (q.pending) } } }
                div { dt { "Dead deliveries" } dd #depth-dead { a href="/console/deliveries?status=dead" { (q.dead) } } }
                div { dt { "Oldest pending" } dd #oldest-pending { (oldest.as_deref().unwrap_or("none")) } }
            }
        }
        section aria-labelledby="events-chart" {
            h2 #events-chart { "Events by source" }
            (super::chart::table(&activity, &events, super::chart::EVENT_LAYERS, "events", "chart-events"))
        }
        section aria-labelledby="deliveries-chart" {
            h2 #deliveries-chart { "Deliveries by target" }
            (super::chart::table(&activity, &deliveries, super::chart::DELIVERY_LAYERS, "deliveries", "chart-deliveries"))
        }
        @if !watched.is_empty() {
            section aria-labelledby="webhooks" {
                h2 #webhooks { "ClickUp webhooks" }
                @if hooks.is_empty() {
                    p.muted { "Not checked yet (watched by " (watched.join(", ")) ")." }
                } @else {
                    table.list {
                        thead { tr {
                            th scope="col" { "Source" } th scope="col" { "Webhook" } th scope="col" { "Endpoint" }
                            th scope="col" { "Health" } th scope="col" .num { "Fail count" } th scope="col" { "Checked (UTC)" }
                        } }
                        tbody { @for h in &hooks { tr {
                            td { (h.source) }
                            td.mono { (h.webhook_id) }
                            td.excerpt { (h.endpoint) }
                            td { span class={ "badge " @if h.status == "active" { "delivered" } @else { "dead" } } { (h.status) } }
                            td.num { (h.fail_count) }
                            td { (datetime(h.checked_at)) }
                        } } }
                    }
                }
            }
        }
    };
    Ok(v.page(layout(
        "Overview",
        Section::Overview,
        Some(&v),
        Some(30),
        body,
    )))
}

// ---------------------------------------------------------------- events

#[derive(Deserialize)]
struct EventsPage {
    #[serde(flatten)]
    q: EventsQuery,
    /// Go straight to this event.
    id: Option<String>,
}

fn query_string(pairs: &[(&str, Option<&str>)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.filter(|v| !v.trim().is_empty()).map(|v| (*k, v)))
        .collect();
    serde_urlencoded::to_string(kept).unwrap_or_default()
}

fn with_query(path: &str, qs: &str) -> String {
    if qs.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{qs}")
    }
}

async fn events(
    v: Viewer,
    s: web::Data<AdminState>,
    q: web::Query<EventsPage>,
) -> Result<HttpResponse, ConsoleError> {
    if let Some(id) = q.id.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
        return Ok(v.see_other(&event_href(id)));
    }
    let q = &q.q;
    let rows = s.store.events(&q.filter(PAGE)?).await?;
    let pipeline = s.pipeline.load();
    let filters = |cursor: Option<&str>| {
        query_string(&[
            ("source", q.source.as_deref()),
            ("type", q.event_type.as_deref()),
            ("since", q.since.as_deref()),
            ("until", q.until.as_deref()),
            ("cursor", cursor),
        ])
    };
    let next = (rows.len() == PAGE as usize)
        .then(|| {
            rows.last()
                .map(|e| with_query("/console/events", &filters(Some(e.id.as_str()))))
        })
        .flatten();
    let source = q.source.as_deref().unwrap_or("");
    let body = html! {
        form.find method="get" action="/console/events" {
            label for="find-id" { "Event id" }
            input #find-id type="search" name="id" placeholder="evt_…" autocomplete="off";
            button type="submit" { "Open" }
        }
        form.filters method="get" action="/console/events" {
            fieldset {
                legend { "Filter" }
                p {
                    label for="f-source" { "Source" }
                    select #f-source name="source" {
                        option value="" selected[source.is_empty()] { "any" }
                        @for name in pipeline.sources.keys() {
                            option value=(name) selected[name == source] { (name) }
                        }
                    }
                }
                p {
                    label for="f-type" { "Type" }
                    input #f-type type="text" name="type" value=[q.event_type.as_deref()] placeholder="taskStatusUpdated";
                }
                p {
                    label for="f-since" { "From (UTC)" }
                    input #f-since type="datetime-local" name="since" value=[q.since.as_deref()];
                }
                p {
                    label for="f-until" { "Until (UTC)" }
                    input #f-until type="datetime-local" name="until" value=[q.until.as_deref()];
                }
                p { button type="submit" { "Apply" } " " a href="/console/events" { "Clear" } }
            }
        }
        @if rows.is_empty() {
            p.muted { "No events match." }
        } @else {
            (events_table(&rows))
        }
        (pager(&with_query("/console/events", &filters(None)), next, q.cursor.is_some()))
    };
    Ok(v.page(layout("Events", Section::Events, Some(&v), None, body)))
}

/// The payload as an operator reads it: pretty JSON, else the text.
fn pretty(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|j| serde_json::to_string_pretty(&j).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned())
}

async fn event(
    v: Viewer,
    s: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ConsoleError> {
    let id = EventId::from_stored(id.into_inner());
    let e = s
        .store
        .event(&id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("event {id}")))?;
    let matched = s.store.matched_routes(&id).await?;
    let deliveries = s
        .store
        .deliveries(&DeliveryFilter {
            event_id: Some(id.clone()),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    let pending = e.routed_at.is_none()
        || deliveries
            .iter()
            .any(|d| d.status == DeliveryStatus::Pending);
    let body = html! {
        dl.fields {
            dt { "Id" } dd.mono #event-id { (e.id.as_str()) }
            dt { "Source" } dd { (e.source) }
            dt { "Type" } dd #event-type { (e.event_type) }
            dt { "Dedupe key" } dd.mono { (e.dedupe_key) }
            dt { "Received (UTC)" } dd { (datetime(e.received_at)) }
            dt { "Routed (UTC)" } dd { @match e.routed_at { Some(t) => (datetime(t)), None => "not yet" } }
        }
        h2 { "Matched routes" }
        @match &matched {
            None => p.muted { "Not routed yet." },
            Some(m) if m.is_empty() => p.muted { "No route matched." },
            Some(m) => ul #matched-routes { @for r in m { li { (r) } } },
        }
        h2 { "Deliveries" }
        @if deliveries.is_empty() { p.muted { "None." } } @else { (deliveries_table(&deliveries)) }
        h2 { "Payload" }
        pre.payload #payload { code { (pretty(&e.payload)) } }
    };
    let title = format!("Event {}", e.event_type);
    Ok(v.page(layout(
        &title,
        Section::Events,
        Some(&v),
        pending.then_some(2),
        body,
    )))
}

// ---------------------------------------------------------------- deliveries

async fn deliveries(
    v: Viewer,
    s: web::Data<AdminState>,
    q: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ConsoleError> {
    let filter = q.filter(PAGE)?;
    let rows = s.store.deliveries(&filter).await?;
    let pipeline = s.pipeline.load();
    let filters = |cursor: Option<&str>| {
        query_string(&[
            ("status", q.status.as_deref()),
            ("target", q.target.as_deref()),
            ("route", q.route.as_deref()),
            ("cursor", cursor),
        ])
    };
    let next = (rows.len() == PAGE as usize)
        .then(|| {
            rows.last()
                .map(|d| with_query("/console/deliveries", &filters(Some(d.id.as_str()))))
        })
        .flatten();
    let status = filter.status.map(DeliveryStatus::as_str).unwrap_or("");
    let replay_href = with_query(
        "/console/replay",
        &query_string(&[
            ("target", filter.target.as_deref()),
            ("route", filter.route.as_deref()),
        ]),
    );
    let body = html! {
        form.filters method="get" action="/console/deliveries" {
            fieldset {
                legend { "Filter" }
                p {
                    label for="f-status" { "Status" }
                    select #f-status name="status" {
                        option value="" selected[status.is_empty()] { "any" }
                        @for st in ["pending", "delivered", "dead"] {
                            option value=(st) selected[st == status] { (st) }
                        }
                    }
                }
                p {
                    label for="f-target" { "Target" }
                    input #f-target type="text" name="target" list="targets" value=[filter.target.as_deref()];
                    datalist #targets { @for t in pipeline.targets.keys() { option value=(t) {} } }
                }
                p {
                    label for="f-route" { "Route" }
                    input #f-route type="text" name="route" list="route-names" value=[filter.route.as_deref()];
                    datalist #route-names { @for r in &pipeline.routes { option value=(r.name) {} } }
                }
                p { button type="submit" { "Apply" } " " a href="/console/deliveries" { "Clear" } }
            }
        }
        @if status.is_empty() || status == "dead" {
            p { a.button href=(replay_href) { "Replay every dead delivery of this filter…" } }
        }
        @if rows.is_empty() {
            p.muted { "No deliveries match." }
        } @else {
            (deliveries_table(&rows))
        }
        (pager(&with_query("/console/deliveries", &filters(None)), next, q.cursor.is_some()))
    };
    Ok(v.page(layout(
        "Deliveries",
        Section::Deliveries,
        Some(&v),
        None,
        body,
    )))
}

#[derive(Deserialize)]
struct DeliveryPage {
    replayed: Option<String>,
}

async fn delivery(
    v: Viewer,
    s: web::Data<AdminState>,
    id: web::Path<String>,
    q: web::Query<DeliveryPage>,
) -> Result<HttpResponse, ConsoleError> {
    let id = DeliveryId::from_stored(id.into_inner());
    let d = s
        .store
        .delivery(&id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("delivery {id}")))?;
    let attempts = s.store.attempts(&id).await?;
    let pending = d.status == DeliveryStatus::Pending;
    let now = now_millis();
    let body = html! {
        @if q.replayed.is_some() {
            p.notice role="status" { "Queued again: the new attempt shows below once it is made." }
        }
        dl.fields {
            dt { "Id" } dd.mono { (d.id.as_str()) }
            dt { "Event" } dd { a.mono href=(event_href(d.event_id.as_str())) { (d.event_id.as_str()) } }
            dt { "Route" } dd { (d.route) " (step " (d.step + 1) ")" }
            dt { "Target" } dd { (d.target) }
            dt { "Status" } dd #delivery-status { (status_badge(d.status)) }
            dt { "Attempts" } dd { (d.attempts) }
            dt { "Created (UTC)" } dd { (datetime(d.created_at)) }
            dt { "Delivered (UTC)" } dd { @match d.delivered_at { Some(t) => (datetime(t)), None => "—" } }
            dt { "Last error" } dd.excerpt { (d.last_error.as_deref().unwrap_or("—")) }
        }
        @if !pending {
            form.replay method="post" action={ (delivery_href(d.id.as_str())) "/replay" } {
                (csrf_field(&v))
                button #replay type="submit" { "Replay this delivery" }
            }
        } @else {
            p.muted #waiting {
                "Pending: it waits for its next attempt"
                @if let Some(t) = d.next_attempt_at {
                    ", due " (datetime(t)) " UTC"
                    @if t > now { " (in " (views::age(t - now)) ")" }
                }
                ". This page refreshes by itself."
            }
        }
        h2 { "Attempts" }
        @if attempts.is_empty() {
            p.muted { "No attempt yet." }
        } @else {
            table.list #attempts {
                thead { tr {
                    th scope="col" .num { "#" } th scope="col" { "At (UTC)" } th scope="col" .num { "Took" }
                    th scope="col" .num { "HTTP" } th scope="col" { "Outcome" } th scope="col" { "Answer (excerpt)" } th scope="col" { "Error" }
                } }
                tbody { @for a in &attempts { tr {
                    td.num { (a.n) }
                    td { (datetime(a.at)) }
                    td.num { (a.duration_ms) " ms" }
                    td.num { @if let Some(c) = a.status_code { (c) } @else { "—" } }
                    td { span class={ "badge " (a.outcome) } { (a.outcome) } }
                    td { @if let Some(r) = &a.response { pre.excerpt { (r) } } }
                    td.excerpt { (a.error.as_deref().unwrap_or("")) }
                } } }
            }
        }
    };
    let title = format!("Delivery to {}", d.target);
    Ok(v.page(layout(
        &title,
        Section::Deliveries,
        Some(&v),
        pending.then_some(2),
        body,
    )))
}

async fn replay_one(
    v: Viewer,
    s: web::Data<AdminState>,
    keys: web::Data<Keys>,
    id: web::Path<String>,
    f: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    v.check_csrf(&keys, &f.csrf)?;
    let id = DeliveryId::from_stored(id.into_inner());
    api::replay_delivery(&s, &id).await?;
    Ok(v.see_other(&format!("{}?replayed=1", delivery_href(id.as_str()))))
}

#[derive(Deserialize)]
struct ReplayForm {
    #[serde(default)]
    csrf: String,
    target: Option<String>,
    route: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn scope_text(target: Option<&str>, route: Option<&str>, every: &str) -> Markup {
    html! {
        @match (target, route) {
            (None, None) => (every),
            (Some(t), None) => { "to target " strong { (t) } }
            (None, Some(r)) => { "of route " strong { (r) } }
            (Some(t), Some(r)) => { "to target " strong { (t) } " of route " strong { (r) } }
        }
    }
}

async fn replay_confirm(
    v: Viewer,
    s: web::Data<AdminState>,
    q: web::Query<ReplayForm>,
) -> Result<HttpResponse, ConsoleError> {
    let (target, route) = (nonempty(&q.target), nonempty(&q.route));
    let count = s
        .store
        .count_deliveries(&DeliveryFilter {
            status: Some(DeliveryStatus::Dead),
            target: target.clone(),
            route: route.clone(),
            ..Default::default()
        })
        .await?;
    let back = with_query(
        "/console/deliveries",
        &query_string(&[
            ("status", Some("dead")),
            ("target", target.as_deref()),
            ("route", route.as_deref()),
        ]),
    );
    let body = html! {
        @if count == 0 {
            p #replay-count { "There is no dead delivery " (scope_text(target.as_deref(), route.as_deref(), "to any target")) "." }
            p { a href=(back) { "Back to the deliveries" } }
        } @else {
            p #replay-count {
                "This queues " strong { (count) } " dead "
                @if count == 1 { "delivery" } @else { "deliveries" } " "
                (scope_text(target.as_deref(), route.as_deref(), "of every target and route"))
                " again, each with a fresh retry budget."
            }
            form.replay method="post" action="/console/replay" {
                (csrf_field(&v))
                @if let Some(t) = &target { input type="hidden" name="target" value=(t); }
                @if let Some(r) = &route { input type="hidden" name="route" value=(r); }
                button #replay-all type="submit" { "Replay " (count) " " @if count == 1 { "delivery" } @else { "deliveries" } }
                " "
                a href=(back) { "Cancel" }
            }
        }
    };
    Ok(v.page(layout(
        "Replay dead deliveries",
        Section::Deliveries,
        Some(&v),
        None,
        body,
    )))
}

async fn replay_all(
    v: Viewer,
    s: web::Data<AdminState>,
    keys: web::Data<Keys>,
    f: web::Form<ReplayForm>,
) -> Result<HttpResponse, ConsoleError> {
    v.check_csrf(&keys, &f.csrf)?;
    let (target, route) = (nonempty(&f.target), nonempty(&f.route));
    let n = api::replay_matching(
        &s,
        Some(DeliveryStatus::Dead),
        target.clone(),
        route.clone(),
    )
    .await?;
    let pending = with_query(
        "/console/deliveries",
        &query_string(&[
            ("status", Some("pending")),
            ("target", target.as_deref()),
            ("route", route.as_deref()),
        ]),
    );
    let body = html! {
        p.notice role="status" #replayed { "Queued " (n) " " @if n == 1 { "delivery" } @else { "deliveries" } " again." }
        p { a href=(pending) { "See the pending deliveries" } }
    };
    Ok(v.page(layout(
        "Replayed",
        Section::Deliveries,
        Some(&v),
        None,
        body,
    )))
}

// ---------------------------------------------------------------- routes

fn json_text(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// One condition as routes.yaml would say it.
fn condition(c: &Condition) -> String {
    let path = c.path.as_str();
    match &c.op {
        Op::Equals(v) => format!("{path} = {}", json_text(v)),
        Op::NotEquals(v) => format!("{path} ≠ {}", json_text(v)),
        Op::In(vs) => format!(
            "{path} in [{}]",
            vs.iter().map(json_text).collect::<Vec<_>>().join(", ")
        ),
        Op::Regex(r) => format!("{path} matches /{}/", r.as_str()),
        Op::Exists(true) => format!("{path} exists"),
        Op::Exists(false) => format!("{path} does not exist"),
        Op::Contains(v) => format!("{path} contains {}", json_text(v)),
        Op::Gt(n) => format!("{path} > {n}"),
        Op::Gte(n) => format!("{path} ≥ {n}"),
        Op::Lt(n) => format!("{path} < {n}"),
        Op::Lte(n) => format!("{path} ≤ {n}"),
    }
}

fn pattern(p: &EventPattern) -> &str {
    match p {
        EventPattern::Exact(e) => e,
        EventPattern::Glob(g, _) => g,
    }
}

fn anchor(route: &str) -> String {
    format!(
        "route-{}",
        route
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
    )
}

fn route_card(v: &Viewer, r: &Route, file: &str) -> Markup {
    let id = anchor(&r.name);
    html! {
        section.route id=(id) aria-labelledby={ (id) "-name" } {
            h2 id={ (id) "-name" } { (r.name) }
            dl.fields {
                dt { "Source" } dd { (r.source) }
                dt { "Events" } dd {
                    @if r.events.is_empty() { "every event" }
                    @else { @for (i, p) in r.events.iter().enumerate() { @if i > 0 { ", " } code { (pattern(p)) } } }
                }
                @if !r.matches.is_empty() {
                    dt { "When (all)" } dd { ul { @for c in &r.matches { li { code { (condition(c)) } } } } }
                }
                @if !r.any.is_empty() {
                    dt { "When (any group)" } dd { ol { @for g in &r.any { li {
                        @for (i, c) in g.iter().enumerate() { @if i > 0 { " and " } code { (condition(c)) } }
                    } } } }
                }
                @if !r.task.is_empty() || r.enrich_task {
                    dt { "Task" } dd {
                        @if let Some(via) = &r.enrich_via { "fetched via " (via) }
                        ul { @for c in &r.task { li { code { (condition(c)) } } } }
                    }
                }
                @if !r.extract.is_empty() {
                    dt { "Extract" } dd { ul { @for (name, p) in &r.extract { li { code { (name) } " ← " code { (p.as_str()) } } } } }
                }
                dt { "Sends" } dd { ol { @for st in &r.send { li {
                    "to " strong { (st.target) }
                    @if let Some(rem) = &st.remember { ", remembers " code { (rem) } }
                } } } }
                dt { "Written at" } dd.mono { (file) ":" (r.pos.line) }
            }
            details {
                summary { "Simulate an event against routes.yaml" }
                form.simulate method="post" action="/console/routes/simulate" {
                    (csrf_field(v))
                    input type="hidden" name="source" value=(r.source);
                    input type="hidden" name="route" value=(r.name);
                    p {
                        label for={ (id) "-event" } { "Event body (" (r.source) ")" }
                        textarea id={ (id) "-event" } name="event" rows="8" required spellcheck="false" {}
                    }
                    p {
                        label for={ (id) "-task" } { "ClickUp task (optional, JSON, stands in for the fetched task)" }
                        textarea id={ (id) "-task" } name="task" rows="3" spellcheck="false" {}
                    }
                    p { button type="submit" { "Simulate" } }
                }
            }
        }
    }
}

async fn routes(v: Viewer, s: web::Data<AdminState>) -> Result<HttpResponse, ConsoleError> {
    let pipeline = s.pipeline.load();
    let file = s.pipeline.routes_file().display().to_string();
    let body = html! {
        p {
            (pipeline.routes.len()) @if pipeline.routes.len() == 1 { " route" } @else { " routes" }
            " loaded from " code { (file) } ". "
            "A simulation runs the pasted event through every route of its source, as "
            code { "clickup-bridge simulate" } " does: no request is sent."
        }
        form.reload method="post" action="/console/reload" {
            (csrf_field(&v))
            button type="submit" { "Reload routes.yaml" }
        }
        @if pipeline.routes.is_empty() { p.muted { "No routes." } }
        @for r in &pipeline.routes { (route_card(&v, r, &file)) }
    };
    Ok(v.page(layout("Routes", Section::Routes, Some(&v), None, body)))
}

#[derive(Deserialize)]
struct SimulateForm {
    #[serde(default)]
    csrf: String,
    source: String,
    route: Option<String>,
    #[serde(default)]
    event: String,
    #[serde(default)]
    task: String,
}

async fn simulate(
    v: Viewer,
    s: web::Data<AdminState>,
    keys: web::Data<Keys>,
    f: web::Form<SimulateForm>,
) -> Result<HttpResponse, ConsoleError> {
    v.check_csrf(&keys, &f.csrf)?;
    let pipeline = s.pipeline.load();
    let task = match f.task.trim() {
        "" => Ok(None),
        t => serde_json::from_str::<serde_json::Value>(t)
            .map(Some)
            .map_err(|e| format!("the task is not JSON: {e}")),
    };
    let result = task.and_then(|task| {
        crate::simulate::simulate(
            &pipeline,
            &crate::simulate::Input {
                source: &f.source,
                body: f.event.as_bytes(),
                task,
                links: serde_json::Map::new(),
                headers: &[],
                stored: None,
            },
        )
        .map_err(|e| e.to_string())
    });
    let (status, out) = match &result {
        Ok(v) => (
            StatusCode::OK,
            Ok(serde_json::to_string_pretty(&v.to_json()).unwrap_or_default()),
        ),
        Err(e) => (StatusCode::BAD_REQUEST, Err(e.clone())),
    };
    let back = match &f.route {
        Some(r) => format!("/console/routes#{}", anchor(r)),
        None => "/console/routes".to_owned(),
    };
    let body = html! {
        p { "Source " strong { (f.source) } ". The same output as " code { "clickup-bridge simulate --source " (f.source) " --event FILE" } "." }
        @match &out {
            Ok(text) => { h2 { "Result" } pre.payload #simulation { code { (text) } } }
            Err(e) => { p.error role="alert" #simulation { (e) } }
        }
        h2 { "Event" }
        pre.payload { code { (f.event) } }
        p { a href=(back) { "Back to the routes" } }
    };
    Ok(v.respond(
        status,
        layout("Simulation", Section::Routes, Some(&v), None, body),
    ))
}

async fn reload(
    v: Viewer,
    s: web::Data<AdminState>,
    keys: web::Data<Keys>,
    f: web::Form<CsrfForm>,
) -> Result<HttpResponse, ConsoleError> {
    v.check_csrf(&keys, &f.csrf)?;
    let (status, body) = match s.pipeline.reload() {
        Ok(done) => (
            StatusCode::OK,
            html! {
                p.notice role="status" { "Reloaded: " (done.routes) " routes in force." }
                p { a href="/console/routes" { "See the routes" } }
            },
        ),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            html! {
                p.error role="alert" { "routes.yaml has errors; the running routes stay in force. Fix them and reload again:" }
                pre.payload { code { @for d in &e.diagnostics { (d.to_string()) "\n" } } }
                p { a href="/console/routes" { "Back to the routes" } }
            },
        ),
    };
    Ok(v.respond(
        status,
        layout("Reload", Section::Routes, Some(&v), None, body),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_pages_are_places_to_come_back_to() {
        assert_eq!(
            safe_next(Some("/console/events?x=1")),
            "/console/events?x=1"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/consolex",
            "/console/login",
            "/console\\..\\x",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/console", "{bad}");
        }
        assert_eq!(safe_next(None), "/console");
    }

    #[test]
    fn a_query_string_keeps_only_the_filters_given() {
        assert_eq!(
            query_string(&[("a", Some("x y")), ("b", None), ("c", Some(" "))]),
            "a=x+y"
        );
    }
}
