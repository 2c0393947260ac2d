//! The console's pages against the real daemon: sessions, CSRF, escaping of
//! hostile payloads, the security headers, and each page's content.

use crate::support::*;
use clickup_bridge::console::{CSP, Keys};
use clickup_bridge::store::DeliveryStatus;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const TOKEN: &str = "console-admin-token";
pub const SCRIPT: &str = "<script>alert(1)</script>";
pub const IMG: &str = "\"><img src=x onerror=alert(1)>";
const SCRIPT_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";
const IMG_ESCAPED: &str = "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;";

/// One source, one HTTP target at `server`, one route sending every event.
pub fn routes(server: &MockServer) -> String {
    format!(
        "sources:\n  clickup:\n    verify: clickup\n    secret: {CLICKUP_SECRET}\ntargets:\n  hook:\n    type: http\n    url: {}/in\n    retry: {{attempts: 2, initial: 0.05, max: 0.1}}\nroutes:\n  - name: notify\n    source: clickup\n    send:\n      - target: hook\n        body: {{n: '{{{{event.history_items.[0].id}}}}'}}\n",
        server.uri()
    )
}

/// A ClickUp event whose type, history id and task carry markup.
pub fn hostile_event() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "event": format!("taskUpdated{SCRIPT}"),
        "history_items": [{"id": IMG, "field": SCRIPT}],
        "task_id": format!("task{IMG}"),
        "webhook_id": "7fa3ec74-69a8-4530-a251-8a13730bd204",
    }))
    .unwrap()
}

/// A client that does not follow redirects (the tests look at them).
pub fn browserless() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of the console cookie a response sets.
pub fn set_cookie(h: &HeaderMap) -> Option<String> {
    h.get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("clickup_bridge_console="))
        .map(str::to_owned)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("clickup_bridge_console=")
        .to_owned()
}

/// The CSRF field of the first form of a page.
pub fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

struct Console {
    url: String,
    client: reqwest::Client,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Console {
    fn new(app: &TestApp) -> Console {
        Console {
            url: app.admin_url.clone(),
            client: browserless(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut r = self.client.get(format!("{}{path}", self.url));
        if let Some(c) = cookie {
            r = r.header("cookie", format!("clickup_bridge_console={c}"));
        }
        answer(r.send().await.unwrap()).await
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Answer {
        let mut r = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        if let Some(c) = cookie {
            r = r.header("cookie", format!("clickup_bridge_console={c}"));
        }
        answer(r.send().await.unwrap()).await
    }

    /// Logs in and returns the session cookie's value.
    async fn login(&self) -> String {
        let a = self.post("/console/login", None, &[("token", TOKEN)]).await;
        assert_eq!(a.status, 303, "{}", a.body);
        cookie_value(&set_cookie(&a.headers).expect("a session cookie"))
    }
}

async fn answer(r: reqwest::Response) -> Answer {
    Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

fn location(a: &Answer) -> &str {
    a.headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn assert_no_markup(page: &str, what: &str) {
    for raw in [SCRIPT, "<img src=x", "onerror=alert(1)>"] {
        assert!(
            !page.contains(raw),
            "{what}: raw markup {raw:?} in the page:\n{page}"
        );
    }
}

fn assert_escaped(page: &str, what: &str) {
    assert_no_markup(page, what);
    assert!(
        page.contains(SCRIPT_ESCAPED),
        "{what}: escaped script missing:\n{page}"
    );
}

/// A daemon with the token, a target answering 400 (dead at once) with
/// markup in its answer, and one hostile event routed: (app, event id,
/// delivery id).
async fn with_dead_hostile_delivery(server: &MockServer) -> (TestApp, String, String) {
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string(format!("bad {SCRIPT}")))
        .mount(server)
        .await;
    let app = spawn_app_with(&routes(server), |s| s.admin_token = Some(TOKEN.into())).await;
    let event = app.post_clickup(&hostile_event()).await;
    let rows = app.settled(&event, 20).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, DeliveryStatus::Dead);
    (app, event, rows[0].id.as_str().to_owned())
}

#[tokio::test]
async fn without_a_session_every_page_redirects_to_the_login_and_shows_no_data() {
    let server = MockServer::start().await;
    let (app, event, delivery) = with_dead_hostile_delivery(&server).await;
    let c = Console::new(&app);
    let pages = [
        "/console".to_owned(),
        "/console/events".to_owned(),
        format!("/console/events/{event}"),
        "/console/deliveries?status=dead".to_owned(),
        format!("/console/deliveries/{delivery}"),
        "/console/replay".to_owned(),
        "/console/routes".to_owned(),
    ];
    let forged = Keys::new(Some("another-token")).new_session(now() * 1000);
    for p in &pages {
        for cookie in [None, Some("garbage"), Some(forged.as_str())] {
            let a = c.get(p, cookie).await;
            assert_eq!(a.status, 303, "{p} with {cookie:?}");
            assert!(
                location(&a).starts_with("/console/login"),
                "{p}: {}",
                location(&a)
            );
            assert!(!a.body.contains(&event), "{p} shows data");
            assert!(set_cookie(&a.headers).is_none());
        }
    }
    let a = c.get(&format!("/console/events/{event}"), None).await;
    assert_eq!(
        location(&a),
        format!("/console/login?next=%2Fconsole%2Fevents%2F{event}")
    );
    for p in [
        format!("/console/deliveries/{delivery}/replay"),
        "/console/replay".to_owned(),
        "/console/routes/simulate".to_owned(),
        "/console/reload".to_owned(),
        "/console/logout".to_owned(),
    ] {
        let a = c.post(&p, None, &[("csrf", "x")]).await;
        assert_eq!(a.status, 401, "POST {p}");
        assert!(!a.body.contains(&event));
    }
    let d = app
        .store
        .delivery(&clickup_bridge::ids::DeliveryId::from_stored(delivery))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Dead, "nothing was replayed");

    // A script sends the bearer token instead of a session.
    let r = browserless()
        .get(format!("{}/console/events/{event}", app.admin_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains(&event));
    app.stop().await;
}

#[tokio::test]
async fn login_sets_a_strict_http_only_session_cookie_that_expires() {
    let server = MockServer::start().await;
    let app = spawn_app_with(&routes(&server), |s| s.admin_token = Some(TOKEN.into())).await;
    let c = Console::new(&app);
    let page = c.get("/console/login", None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<label for=\"token\">"), "{}", page.body);

    let wrong = c.post("/console/login", None, &[("token", "nope")]).await;
    assert_eq!(wrong.status, 401);
    assert!(set_cookie(&wrong.headers).is_none());
    assert!(wrong.body.contains("That is not the admin token"));

    let ok = c
        .post(
            "/console/login",
            None,
            &[("token", TOKEN), ("next", "/console/events")],
        )
        .await;
    assert_eq!(ok.status, 303);
    assert_eq!(location(&ok), "/console/events");
    let cookie = set_cookie(&ok.headers).unwrap();
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(attr), "{attr} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP on loopback");
    assert!(!cookie.contains(TOKEN), "the token is not the cookie");
    let value = cookie_value(&cookie);
    assert_eq!(c.get("/console", Some(&value)).await.status, 200);

    // Elsewhere than the console, after a login, is never a redirect target.
    let away = c
        .post(
            "/console/login",
            None,
            &[("token", TOKEN), ("next", "//evil.example/")],
        )
        .await;
    assert_eq!(location(&away), "/console");

    // A session past its lifetime (signed with the right key) is refused.
    let expired = Keys::new(Some(TOKEN)).session_value(now() * 1000 - 1);
    let a = c.get("/console", Some(&expired)).await;
    assert_eq!(a.status, 303);
    assert!(location(&a).starts_with("/console/login"));
    let fresh = Keys::new(Some(TOKEN)).session_value(now() * 1000 + 60_000);
    assert_eq!(c.get("/console", Some(&fresh)).await.status, 200);

    // Logging out needs the CSRF token, then clears the cookie.
    let page = c.get("/console", Some(&value)).await;
    assert_eq!(
        c.post("/console/logout", Some(&value), &[("csrf", "")])
            .await
            .status,
        403
    );
    let out = c
        .post(
            "/console/logout",
            Some(&value),
            &[("csrf", &csrf_of(&page.body))],
        )
        .await;
    assert_eq!(out.status, 303);
    assert!(set_cookie(&out.headers).unwrap().contains("Max-Age=0"));
    app.stop().await;
}

#[tokio::test]
async fn every_page_escapes_a_hostile_payload_and_sends_the_security_headers() {
    let server = MockServer::start().await;
    let (app, event, delivery) = with_dead_hostile_delivery(&server).await;
    let c = Console::new(&app);
    let s = c.login().await;
    for p in [
        "/console".to_owned(),
        "/console/events".to_owned(),
        format!("/console/events/{event}"),
        "/console/deliveries".to_owned(),
        format!("/console/deliveries/{delivery}"),
        "/console/replay".to_owned(),
        "/console/routes".to_owned(),
        "/console/login".to_owned(),
        "/console/assets/console.css".to_owned(),
        "/console/assets/console.js".to_owned(),
        "/console/events/evt_missing".to_owned(),
    ] {
        let a = c.get(&p, Some(&s)).await;
        let h = |n: &str| {
            a.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(h("content-security-policy"), CSP, "{p}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{p}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{p}");
        assert!(!a.body.contains(TOKEN), "{p} shows the token");
        if p.ends_with(".css") || p.ends_with(".js") {
            assert_eq!(a.status, 200, "{p}");
            continue;
        }
        if p.ends_with("evt_missing") {
            assert_eq!(a.status, 404);
            continue;
        }
        assert_eq!(a.status, 200, "{p}");
        assert!(!a.body.contains("<script>"), "{p}: inline script");
        assert!(!a.body.contains("style="), "{p}: inline style");
        assert!(!a.body.contains("<style"), "{p}: inline style");
    }
    let events = c.get("/console/events", Some(&s)).await.body;
    assert_escaped(&events, "event list");
    let detail = c
        .get(&format!("/console/events/{event}"), Some(&s))
        .await
        .body;
    assert_escaped(&detail, "event detail");
    // The payload, pretty-printed: JSON escapes nothing of the markup, the
    // page escapes all of it.
    assert!(detail.contains(IMG_ESCAPED), "{detail}");
    assert!(detail.contains("&quot;history_items&quot;: ["), "{detail}");
    assert!(
        detail.contains("<li>notify</li>"),
        "matched route: {detail}"
    );
    assert!(detail.contains(&format!("href=\"/console/deliveries/{delivery}\"")));
    let deliveries = c.get("/console/deliveries", Some(&s)).await.body;
    assert_no_markup(&deliveries, "delivery list");
    assert!(deliveries.contains(&delivery));
    let one = c
        .get(&format!("/console/deliveries/{delivery}"), Some(&s))
        .await
        .body;
    assert_escaped(&one, "delivery detail");
    assert!(one.contains("<td class=\"num\">400</td>"), "{one}");
    // The request sent carried the markup; the target's answer shows as text.
    assert!(one.contains(&format!("bad {SCRIPT_ESCAPED}")), "{one}");
    app.stop().await;
}

#[tokio::test]
async fn a_post_without_the_session_csrf_token_is_refused() {
    let server = MockServer::start().await;
    let (app, _event, delivery) = with_dead_hostile_delivery(&server).await;
    let c = Console::new(&app);
    let s = c.login().await;
    let other = c.login().await;
    let page = c
        .get(&format!("/console/deliveries/{delivery}"), Some(&s))
        .await
        .body;
    let csrf = csrf_of(&page);
    let other_csrf = csrf_of(&c.get("/console", Some(&other)).await.body);
    assert_ne!(csrf, other_csrf);
    let replay = format!("/console/deliveries/{delivery}/replay");
    for (what, form) in [
        ("no token", vec![]),
        ("empty", vec![("csrf", "")]),
        ("junk", vec![("csrf", "0123")]),
        ("another session's", vec![("csrf", other_csrf.as_str())]),
    ] {
        let a = c.post(&replay, Some(&s), &form).await;
        assert_eq!(a.status, 403, "{what}");
        assert!(a.body.contains("CSRF"), "{what}: {}", a.body);
        let a = c.post("/console/replay", Some(&s), &form).await;
        assert_eq!(a.status, 403, "bulk, {what}");
    }
    let id = clickup_bridge::ids::DeliveryId::from_stored(delivery.clone());
    assert_eq!(
        app.store.delivery(&id).await.unwrap().unwrap().status,
        DeliveryStatus::Dead,
        "nothing was replayed"
    );
    let a = c.post(&replay, Some(&s), &[("csrf", &csrf)]).await;
    assert_eq!(a.status, 303);
    assert_eq!(
        location(&a),
        format!("/console/deliveries/{delivery}?replayed=1")
    );
    app.stop().await;
}

#[tokio::test]
async fn replaying_every_dead_delivery_of_a_filter_asks_first_with_the_count() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400))
        .up_to_n_times(3)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let app = spawn_app_with(&routes(&server), |s| s.admin_token = Some(TOKEN.into())).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = app.post_clickup(&clickup_event(n)).await;
        app.settled(&id, 20).await;
        ids.push(id);
    }
    let c = Console::new(&app);
    let s = c.login().await;
    let list = c
        .get("/console/deliveries?status=dead&target=hook", Some(&s))
        .await;
    assert!(
        list.body.contains("href=\"/console/replay?target=hook\""),
        "{}",
        list.body
    );
    let confirm = c.get("/console/replay?target=hook", Some(&s)).await;
    assert_eq!(confirm.status, 200);
    assert!(
        confirm.body.contains(
            "This queues <strong>3</strong> dead deliveries to target <strong>hook</strong> again"
        ),
        "{}",
        confirm.body
    );
    let none = c.get("/console/replay?target=elsewhere", Some(&s)).await;
    assert!(none.body.contains("There is no dead delivery"));
    let done = c
        .post(
            "/console/replay",
            Some(&s),
            &[("csrf", &csrf_of(&confirm.body)), ("target", "hook")],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        done.body.contains("Queued 3 deliveries again."),
        "{}",
        done.body
    );
    for id in &ids {
        let rows = app
            .wait_deliveries(id, 20, "the replay to deliver", |r| {
                r.iter().all(|d| d.status == DeliveryStatus::Delivered)
            })
            .await;
        assert_eq!(rows[0].attempts, 2);
    }
    app.stop().await;
}

#[tokio::test]
async fn the_event_list_filters_and_pages_with_the_api_cursor() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let app = spawn_app_with(&routes(&server), |s| s.admin_token = Some(TOKEN.into())).await;
    let mut ids = Vec::new();
    for n in 0..52 {
        ids.push(app.post_clickup(&clickup_event(n)).await);
    }
    let other = app
        .post_clickup(
            br#"{"event":"taskCreated","history_items":[{"id":"x1"}],"task_id":"t","webhook_id":"w"}"#,
        )
        .await;
    let c = Console::new(&app);
    let s = c.login().await;
    let first = c.get("/console/events", Some(&s)).await.body;
    assert!(first.contains(&other));
    assert!(first.contains(&ids[51]));
    assert!(!first.contains(&ids[2]), "page one holds 50 events");
    let next = format!("/console/events?cursor={}", ids[3]);
    assert!(first.contains(&format!("href=\"{next}\"")), "{first}");
    let second = c.get(&next, Some(&s)).await.body;
    assert!(second.contains(&ids[2]) && second.contains(&ids[0]));
    assert!(!second.contains(&ids[3]));
    assert!(!second.contains("rel=\"next\""));

    let typed = c
        .get("/console/events?type=taskCreated", Some(&s))
        .await
        .body;
    assert!(typed.contains(&other));
    assert!(!typed.contains(&ids[51]));
    let later = c
        .get("/console/events?since=2999-01-01T00%3A00", Some(&s))
        .await
        .body;
    assert!(later.contains("No events match."));
    let earlier = c
        .get(
            "/console/events?until=2999-01-01T00%3A00&source=clickup&type=taskCreated",
            Some(&s),
        )
        .await
        .body;
    assert!(earlier.contains(&other));
    let bad = c.get("/console/events?since=yesterday", Some(&s)).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("since must be a time such as"));

    let found = c
        .get(&format!("/console/events?id={other}"), Some(&s))
        .await;
    assert_eq!(found.status, 303);
    assert_eq!(location(&found), format!("/console/events/{other}"));

    // The API answers the same filters from the same query.
    let api: serde_json::Value = app
        .client
        .get(format!(
            "{}/api/v1/events?type=taskCreated&until=2999-01-01T00:00:00Z",
            app.admin_url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["items"].as_array().unwrap().len(), 1);
    assert_eq!(api["items"][0]["id"], other.as_str());
    app.stop().await;
}

#[tokio::test]
async fn the_overview_counts_the_queue_and_charts_the_last_hour() {
    let server = MockServer::start().await;
    let (app, _event, _delivery) = with_dead_hostile_delivery(&server).await;
    let c = Console::new(&app);
    let s = c.login().await;
    let o = c.get("/console", Some(&s)).await.body;
    assert!(
        o.contains("<dd id=\"depth-dead\"><a href=\"/console/deliveries?status=dead\">1</a></dd>"),
        "{o}"
    );
    assert!(o.contains("<dd id=\"depth-unrouted\">0</dd>"), "{o}");
    assert!(o.contains("<dd id=\"oldest-pending\">none</dd>"), "{o}");
    assert!(
        o.contains("<table class=\"activity\" id=\"chart-events\">"),
        "{o}"
    );
    assert!(
        o.contains("aria-label=\"events clickup in the last hour, per 5 minutes: 1 events\""),
        "{o}"
    );
    assert!(
        o.contains(
            "deliveries hook in the last hour, per 5 minutes: 0 delivered, 0 pending, 1 dead"
        ),
        "{o}"
    );
    assert!(o.contains("fill=\"#c53030\""), "a dead bar: {o}");
    assert!(
        !o.contains("ClickUp webhooks"),
        "no watch, no webhook table"
    );

    let api: serde_json::Value = app
        .client
        .get(format!("{}/api/v1/activity", app.admin_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["bucket_seconds"], 300);
    assert_eq!(api["events"][0]["name"], "clickup");
    assert_eq!(api["events"][0]["count"], 1);
    assert_eq!(api["deliveries"][0]["status"], "dead");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_clickup_webhook_health_when_watched() {
    use wiremock::matchers::path;
    let server = MockServer::start().await;
    let mut listed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("clickup/api/get-webhooks-response.json")).unwrap(),
    )
    .unwrap();
    listed["webhooks"][0]["health"] = json!({"status": "failing", "fail_count": 7});
    Mock::given(method("GET"))
        .and(path("/api/v2/team/108/webhook"))
        .respond_with(ResponseTemplate::new(200).set_body_json(listed))
        .mount(&server)
        .await;
    let routes = format!(
        "sources:\n  clickup:\n    verify: clickup\n    secret: s\n    watch: {{team_id: '108', via: cu}}\ntargets:\n  cu:\n    type: clickup\n    token: pk_1\n    base_url: {}/api/v2\nroutes: []\n",
        server.uri()
    );
    let app = spawn_app(&routes).await;
    let c = Console::new(&app);
    let page = wait_for(20, "the watch to poll", || {
        let c = &c;
        async move {
            let body = c.get("/console", None).await.body;
            body.contains("4b67ac88-e506-4a29-9d42-26e504e3435e")
                .then_some(body)
        }
    })
    .await;
    assert!(page.contains("<h2 id=\"webhooks\">ClickUp webhooks</h2>"));
    assert!(
        page.contains("<span class=\"badge dead\">failing</span>"),
        "{page}"
    );
    assert!(page.contains("<td class=\"num\">7</td>"), "{page}");
    app.stop().await;
}

#[tokio::test]
async fn without_an_admin_token_no_login_is_asked_but_posts_still_need_csrf() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&server)
        .await;
    let app = spawn_app(&routes(&server)).await;
    let event = app.post_clickup(&clickup_event(1)).await;
    let delivery = app.settled(&event, 20).await[0].id.as_str().to_owned();
    let c = Console::new(&app);
    let login = c.get("/console/login", None).await;
    assert_eq!(login.status, 303);
    assert_eq!(location(&login), "/console");
    let first = c
        .get(&format!("/console/deliveries/{delivery}"), None)
        .await;
    assert_eq!(first.status, 200);
    let cookie = set_cookie(&first.headers).expect("an anonymous session");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(!first.body.contains("Log out"), "nothing to log out of");
    let session = cookie_value(&cookie);
    let csrf = csrf_of(&first.body);
    let replay = format!("/console/deliveries/{delivery}/replay");
    // A cross-site form post arrives without the cookie, or without the token.
    assert_eq!(c.post(&replay, None, &[("csrf", &csrf)]).await.status, 403);
    assert_eq!(c.post(&replay, Some(&session), &[]).await.status, 403);
    let ok = c.post(&replay, Some(&session), &[("csrf", &csrf)]).await;
    assert_eq!(ok.status, 303);
    app.stop().await;
}

#[tokio::test]
async fn the_routes_page_shows_each_route_and_simulates_like_the_cli() {
    let server = MockServer::start().await;
    let app = spawn_app_with(&routes(&server), |s| s.admin_token = Some(TOKEN.into())).await;
    let c = Console::new(&app);
    let s = c.login().await;
    let page = c.get("/console/routes", Some(&s)).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("<h2 id=\"route-notify-name\">notify</h2>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("to <strong>hook</strong>"));
    assert!(page.body.contains("<label for=\"route-notify-event\">"));

    let body = hostile_event();
    let event_file = app.dir.path().join("event.json");
    std::fs::write(&event_file, &body).unwrap();
    let (code, cli, err) = run_output(
        std::process::Command::new(bin())
            .current_dir(app.dir.path())
            .args([
                "simulate",
                "--routes",
                "routes.yaml",
                "--source",
                "clickup",
                "--event",
            ])
            .arg(&event_file),
    );
    assert_eq!(code, 0, "{err}");
    let sim = c
        .post(
            "/console/routes/simulate",
            Some(&s),
            &[
                ("csrf", &csrf_of(&page.body)),
                ("source", "clickup"),
                ("route", "notify"),
                ("event", std::str::from_utf8(&body).unwrap()),
            ],
        )
        .await;
    assert_eq!(sim.status, 200, "{}", sim.body);
    assert_escaped(&sim.body, "simulation");
    let shown = sim
        .body
        .split("<pre class=\"payload\" id=\"simulation\"><code>")
        .nth(1)
        .and_then(|r| r.split("</code>").next())
        .expect("the simulation output");
    let unescaped = shown
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    assert_eq!(
        unescaped,
        cli.trim_end(),
        "the console shows what simulate prints"
    );

    let bad = c
        .post(
            "/console/routes/simulate",
            Some(&s),
            &[
                ("csrf", &csrf_of(&page.body)),
                ("source", "clickup"),
                ("event", "not json"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("role=\"alert\""), "{}", bad.body);
    let no_csrf = c
        .post(
            "/console/routes/simulate",
            Some(&s),
            &[("source", "clickup"), ("event", "{}")],
        )
        .await;
    assert_eq!(no_csrf.status, 403);

    std::fs::write(app.dir.path().join("routes.yaml"), "routes: [oops").unwrap();
    let reload = c
        .post(
            "/console/reload",
            Some(&s),
            &[("csrf", &csrf_of(&page.body))],
        )
        .await;
    assert_eq!(reload.status, 400);
    assert!(reload.body.contains("the running routes stay in force"));
    app.stop().await;
}

/// The admin token typed into the login form appears in no log line, at
/// debug level, whether the login succeeds or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears_in_the_logs() {
    use crate::lifecycle::Daemon;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("routes.yaml"), ROUTES).unwrap();
    let mut d = Daemon::start_on(
        dir.path(),
        0,
        &[("CLICKUP_BRIDGE_ADMIN_TOKEN", TOKEN), ("RUST_LOG", "debug")],
    );
    d.wait_for_log("clickup-bridge serving");
    let c = Console {
        url: format!("http://127.0.0.1:{}", d.admin_port),
        client: browserless(),
    };
    let wrong = format!("{TOKEN}-wrong");
    assert_eq!(
        c.post("/console/login", None, &[("token", &wrong)])
            .await
            .status,
        401
    );
    let s = c.login().await;
    let page = c.get("/console/events", Some(&s)).await;
    assert_eq!(page.status, 200);
    let bearer = browserless()
        .get(format!("{}/console", c.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status().as_u16(), 200);
    d.wait_for_all(&["console login refused", "console session started"]);
    d.signal("-TERM");
    assert_eq!(d.wait_exit(), 0);
    let logs = d.seen.join("\n");
    assert!(
        !logs.contains(TOKEN),
        "the token appears in the logs:\n{logs}"
    );
    assert!(
        !logs.contains(&s),
        "the session appears in the logs:\n{logs}"
    );
}

#[tokio::test]
async fn a_pending_delivery_says_what_it_waits_for_and_refreshes_itself() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "3600"))
        .mount(&server)
        .await;
    let app = spawn_app_with(&routes(&server), |s| s.admin_token = Some(TOKEN.into())).await;
    let event = app.post_clickup(&clickup_event(1)).await;
    let rows = app
        .wait_deliveries(&event, 20, "a first attempt", |r| {
            r.len() == 1 && r[0].attempts == 1
        })
        .await;
    assert_eq!(rows[0].status, DeliveryStatus::Pending);
    let c = Console::new(&app);
    let s = c.login().await;
    let page = c
        .get(&format!("/console/deliveries/{}", rows[0].id), Some(&s))
        .await
        .body;
    assert!(page.contains("<body data-refresh=\"2\">"), "{page}");
    assert!(
        page.contains("Pending: it waits for its next attempt, due "),
        "{page}"
    );
    assert!(page.contains("(in 59 min "), "{page}");
    assert!(
        !page.contains("id=\"replay\""),
        "a pending one is not replayed"
    );
    let api: serde_json::Value = app
        .client
        .get(format!(
            "{}/api/v1/deliveries/{}",
            app.admin_url, rows[0].id
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(api["next_attempt_at"].is_string(), "{api}");
    app.stop().await;
}
