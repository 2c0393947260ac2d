//! The console in a real headless Chromium, driven over WebDriver by
//! fantoccini: log in, find an event, open its dead delivery, replay it
//! against a target that has recovered, watch the new attempt appear; a
//! hostile payload shows as text and opens no dialog; the overview chart
//! renders. A screenshot of each page goes to
//! `<target dir>/console-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test
//! fails under CI=true and, elsewhere, says that it skipped.

use crate::console::{TOKEN, hostile_event, routes};
use crate::support::*;
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The browser binary: Debian's real one behind its wrapper script, if there.
fn chromium() -> Option<PathBuf> {
    let real = Path::new("/usr/lib/chromium/chromium");
    if real.is_file() {
        return Some(real.to_owned());
    }
    on_path("chromium").or_else(|| on_path("chromium-browser"))
}

/// The chromedriver, or why the test cannot run.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    match (chromium(), on_path("chromedriver")) {
        (Some(c), Some(d)) => Ok((c, d)),
        (c, d) => Err(format!(
            "the browser test needs chromium ({}) and chromedriver ({}): apt-get install chromium chromium-driver",
            if c.is_some() { "found" } else { "missing" },
            if d.is_some() { "found" } else { "missing" },
        )),
    }
}

/// A chromedriver process, ended when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(exe: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(exe)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    let client = reqwest::Client::new();
    wait_for(20, "chromedriver to be ready", || {
        let (client, status) = (client.clone(), status.clone());
        async move {
            let v: serde_json::Value = client.get(status).send().await.ok()?.json().await.ok()?;
            (v["value"]["ready"] == true).then_some(())
        }
    })
    .await;
    driver
}

async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "unhandledPromptBehavior": "ignore",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1366,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!("a JSON object")
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot start chromium through chromedriver: {e}"))
}

/// `<target dir>/console-screenshots`, from the test binary's place
/// (`<target dir>/debug/deps/it-…`).
fn screenshots_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_owned)
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shoot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::write(screenshots_dir().join(format!("console-{name}.png")), png).unwrap();
}

/// No dialog is open (a script from the payload would have opened one).
async fn assert_no_dialog(c: &Client, what: &str) {
    match c.get_alert_text().await {
        Err(e) if e.is_no_such_alert() => {}
        Ok(text) => panic!("{what}: a dialog opened: {text:?}"),
        Err(e) => panic!("{what}: cannot ask for dialogs: {e}"),
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls the page (which reloads itself) until `css` has `n` elements.
async fn wait_count(c: &Client, css: &str, n: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        // The page may be reloading: a failed look is tried again.
        if let Ok(found) = c.find_all(Locator::Css(css)).await
            && found.len() == n
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} of {css}: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_an_event_and_replays_its_dead_delivery_in_a_real_browser() {
    let (chromium, chromedriver) = match tools() {
        Ok(t) => t,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true: {why}")
        }
        Err(why) => {
            // Straight to stderr: the test harness hides eprintln! of a
            // passing test, and a skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED an_operator_finds_an_event_and_replays_its_dead_delivery_in_a_real_browser: {why}"
            );
            return;
        }
    };
    let server = MockServer::start().await;
    // Down once (400: dead at once), then recovered.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string("maintenance"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"ok\":true}"))
        .mount(&server)
        .await;
    let app = spawn_app_with(&routes(&server), |s| s.admin_token = Some(TOKEN.into())).await;
    let event = app.post_clickup(&hostile_event()).await;
    let rows = app.settled(&event, 20).await;
    assert_eq!(rows[0].status, clickup_bridge::store::DeliveryStatus::Dead);
    for n in 0..4 {
        let id = app.post_clickup(&clickup_event(n)).await;
        app.settled(&id, 20).await;
    }

    let driver = start_driver(&chromedriver).await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, &chromium, profile.path()).await;

    // Not logged in: the login page.
    c.goto(&format!("{}/console", app.admin_url)).await.unwrap();
    c.wait().for_element(Locator::Id("token")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/console/login");
    shoot(&c, "login").await;
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    c.find(Locator::Css("form.login button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The overview and its chart.
    c.wait()
        .for_element(Locator::Css("#chart-events svg"))
        .await
        .unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/console");
    let bars = c
        .execute(
            "const s = document.querySelector('#chart-events svg'); const r = s.getBoundingClientRect(); \
             return [r.width, r.height, document.querySelectorAll('#chart-events svg rect[fill=\"#2b6cb0\"]').length];",
            vec![],
        )
        .await
        .unwrap();
    assert!(bars[0].as_f64().unwrap() > 100.0, "chart width: {bars}");
    assert!(bars[1].as_f64().unwrap() > 20.0, "chart height: {bars}");
    assert!(bars[2].as_u64().unwrap() >= 1, "an event bar: {bars}");
    assert_eq!(text_of(&c, "#depth-dead").await, "1");
    shoot(&c, "overview").await;

    // Find the event by id, from the events page, with the keyboard.
    c.find(Locator::LinkText("Events"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("find-id")).await.unwrap();
    shoot(&c, "events").await;
    c.find(Locator::Id("find-id"))
        .await
        .unwrap()
        .send_keys(&format!("{event}\u{E007}"))
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("event-id")).await.unwrap();
    assert_eq!(text_of(&c, "#event-id").await, event);
    assert_eq!(
        text_of(&c, "#event-type").await,
        "taskUpdated<script>alert(1)</script>",
        "the markup shows as text"
    );
    assert!(
        text_of(&c, "#payload")
            .await
            .contains(r#""id": "\"><img src=x onerror=alert(1)>""#)
    );
    let injected = c
        .execute(
            "return [document.querySelectorAll('img').length, document.querySelectorAll('main script').length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        injected,
        serde_json::json!([0, 0]),
        "no element from the payload"
    );
    assert_no_dialog(&c, "event page").await;
    shoot(&c, "event").await;

    // Its dead delivery.
    c.find(Locator::Css("a[href^='/console/deliveries/dlv_']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("replay")).await.unwrap();
    assert_eq!(text_of(&c, "#delivery-status").await, "dead");
    assert!(text_of(&c, "#attempts").await.contains("maintenance"));
    assert_no_dialog(&c, "delivery page").await;
    shoot(&c, "delivery-dead").await;
    let here = c.current_url().await.unwrap();

    // Replaying every dead one would ask first, with the count.
    c.goto(&format!("{}/console/replay", app.admin_url))
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Id("replay-all"))
        .await
        .unwrap();
    assert!(
        text_of(&c, "#replay-count")
            .await
            .contains("This queues 1 dead delivery")
    );
    shoot(&c, "replay").await;
    c.goto(here.as_str()).await.unwrap();
    c.wait().for_element(Locator::Id("replay")).await.unwrap();

    // Replay: the target has recovered; the page refreshes itself until the
    // new attempt is there.
    c.find(Locator::Id("replay"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_count(&c, "#attempts tbody tr", 2, 30).await;
    wait_count(&c, "#delivery-status .badge.delivered", 1, 30).await;
    let attempts = text_of(&c, "#attempts tbody").await;
    assert!(attempts.contains("200"), "{attempts}");
    assert!(attempts.contains("{\"ok\":true}"), "{attempts}");
    let sent = received_at(&server, "/in")
        .await
        .into_iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("onerror"))
        .count();
    assert_eq!(sent, 2, "the hostile event's delivery was sent once more");
    shoot(&c, "delivery-replayed").await;

    // The other pages render too.
    c.goto(&format!("{}/console/deliveries", app.admin_url))
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("table.list"))
        .await
        .unwrap();
    shoot(&c, "deliveries").await;
    c.goto(&format!("{}/console/routes", app.admin_url))
        .await
        .unwrap();
    c.find(Locator::Css("#route-notify summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Id("route-notify-event"))
        .await
        .unwrap()
        .send_keys(&String::from_utf8(clickup_event(7)).unwrap())
        .await
        .unwrap();
    shoot(&c, "routes").await;
    c.find(Locator::Css("#route-notify form.simulate button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Id("simulation"))
        .await
        .unwrap();
    assert!(
        text_of(&c, "#simulation")
            .await
            .contains("\"matched\": true")
    );
    shoot(&c, "simulate").await;
    assert_no_dialog(&c, "the end").await;

    c.close().await.unwrap();
    drop(driver);
    app.stop().await;
}
