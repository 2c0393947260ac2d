//! Test helpers: the real daemon on port 0 with a temporary SQLite file.

use clickup_bridge::app::Application;
use clickup_bridge::settings::{Settings, StoreLocation};
use clickup_bridge::store::Store;
use clickup_bridge::verify::{IdentityRule, Scheme, Secret, VerifiedEvent, Verifier, verify_event};
use std::path::{Path, PathBuf};

/// A running daemon and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT` of the webhook listener.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin_url: String,
    /// The store, for checking what was persisted.
    pub store: Store,
    /// Where it is (to start another daemon on the same store).
    pub location: StoreLocation,
    /// A client.
    pub client: reqwest::Client,
    /// Keeps the temp folder alive.
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    /// POSTs `body` to `/hooks/{source}` with the given headers.
    pub async fn post(
        &self,
        source: &str,
        body: impl Into<Vec<u8>>,
        headers: &[(String, String)],
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .post(format!("{}/hooks/{source}", self.url))
            .body(body.into());
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, json)
    }

    /// Stops the daemon and hands back its folder (store file included).
    pub async fn stop_keep_dir(mut self) -> tempfile::TempDir {
        self.shutdown().await;
        let TestApp { dir, .. } = self;
        dir
    }

    /// Stops the daemon gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        // Idle keep-alive connections hold a graceful stop until they time
        // out; a test has no more requests to send, so close them first.
        self.client = reqwest::Client::new();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// The store of a test daemon: a file in `dir`, or with
/// `CLICKUP_BRIDGE_TEST_STORE=postgres` a fresh database of the test cluster.
pub fn test_store(dir: &Path) -> StoreLocation {
    if crate::pg::enabled() {
        StoreLocation::Postgres(crate::pg::cluster().new_database())
    } else {
        StoreLocation::Sqlite(dir.join("data/bridge.db"))
    }
}

/// Settings for a test: loopback, port 0, a store in `dir` (see [`test_store`]).
pub fn settings(dir: &Path) -> Settings {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    Settings {
        listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        admin_token: None,
        routes: dir.join("routes.yaml"),
        templates: dir.join("templates"),
        store: test_store(dir),
        max_body: 64 * 1024,
        retention_days: 7,
        log_format: None,
        shutdown_timeout: 5,
        lease_timeout: 60,
        warnings: Vec::new(),
        http: Default::default(),
    }
}

/// Starts the daemon with `routes` as routes.yaml; `tweak` may change settings.
pub async fn spawn_app_with(routes: &str, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_files(routes, &[], tweak).await
}

/// Starts the daemon with `routes` and these files in its templates folder.
pub async fn spawn_app_files(
    routes: &str,
    templates: &[(&str, &str)],
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    for (name, text) in templates {
        std::fs::write(dir.path().join("templates").join(name), text).unwrap();
    }
    let mut s = settings(dir.path());
    tweak(&mut s);
    let app = Application::build(&s)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://{}", app.listen_addr());
    let admin_url = format!("http://{}", app.admin_addr());
    let store = app.store();
    let location = s.store.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        url,
        admin_url,
        store,
        location,
        client: reqwest::Client::new(),
        dir,
        stop: Some(stop),
        task: Some(task),
    }
}

/// Starts the daemon with `routes` and default test settings.
pub async fn spawn_app(routes: &str) -> TestApp {
    spawn_app_with(routes, |_| {}).await
}

/// The ClickUp secret used by [`ROUTES`].
pub const CLICKUP_SECRET: &str = "clickup-test-secret";

/// A routes file with one source of each kind and no routes.
pub const ROUTES: &str = r#"
version: 1
sources:
  clickup:
    verify: clickup
    secret: clickup-test-secret
  stripe:
    verify: stripe
    secret: [whsec_old, whsec_test_secret]
    tolerance: 300
  github:
    verify: hmac
    header: X-Hub-Signature-256
    prefix: "sha256="
    secret: mysecret
    event: $.action
    id: $.hook_id
  openai:
    verify: standard-webhooks
    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
  automation:
    verify: header
    header: X-Bridge-Token
    secret: [old-token, automation-token]
routes: []
"#;

/// The Standard Webhooks secret of the `openai` source in [`ROUTES`] (the
/// standard-webhooks repository's test key).
pub const STDWH_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Signs like a Standard Webhooks sender, message `id` at time `t`.
pub fn standard_webhooks_headers(
    secret: &str,
    id: &str,
    body: &[u8],
    t: i64,
) -> Vec<(String, String)> {
    Verifier {
        scheme: Scheme::StandardWebhooks {
            tolerance_secs: 300,
        },
        secrets: vec![Secret::new(secret)],
    }
    .sign_message(id, body, t)
}

/// Signs like ClickUp does.
pub fn clickup_headers(secret: &str, body: &[u8]) -> Vec<(String, String)> {
    Verifier {
        scheme: Scheme::ClickUp,
        secrets: vec![Secret::new(secret)],
    }
    .sign(body, 0)
}

/// `body`, signed as ClickUp signs it with [`CLICKUP_SECRET`] and verified
/// as the inbound verifies it: what the store and the router take.
pub fn verified_clickup(body: Vec<u8>) -> VerifiedEvent {
    let v = Verifier {
        scheme: Scheme::ClickUp,
        secrets: vec![Secret::new(CLICKUP_SECRET)],
    };
    let headers = clickup_headers(CLICKUP_SECRET, &body);
    verify_event("clickup", &v, &IdentityRule::ClickUp, &headers, body, 0).unwrap()
}

/// [`clickup_event`] `n`, verified ([`verified_clickup`]).
pub fn verified(n: u64) -> VerifiedEvent {
    verified_clickup(clickup_event(n))
}

/// Signs like Stripe does, at time `t`.
pub fn stripe_headers(secret: &str, body: &[u8], t: i64) -> Vec<(String, String)> {
    Verifier {
        scheme: Scheme::Stripe {
            tolerance_secs: 300,
        },
        secrets: vec![Secret::new(secret)],
    }
    .sign(body, t)
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A compact ClickUp event whose dedupe key depends on `n`.
pub fn clickup_event(n: u64) -> Vec<u8> {
    format!(
        r#"{{"event":"taskStatusUpdated","history_items":[{{"id":"{n}","type":1,"date":"1642736073330","field":"status","user":{{"id":183,"username":"John"}},"before":{{"status":"to do"}},"after":{{"status":"in progress"}}}}],"task_id":"1vj38vv","webhook_id":"7fa3ec74-69a8-4530-a251-8a13730bd204"}}"#
    )
    .into_bytes()
}

/// The shared fixtures folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_clickup-bridge")
}

/// Runs a command of the binary: exit code, stdout, stderr.
pub fn run_output(cmd: &mut std::process::Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `check` until it returns `Some`, or panics with `what` after `secs`.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The requests a mock received at `path`.
pub async fn received_at(server: &wiremock::MockServer, path: &str) -> Vec<wiremock::Request> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == path)
        .collect()
}

/// The `Idempotency-Key` of a request.
pub fn idempotency_key(r: &wiremock::Request) -> String {
    r.headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

impl TestApp {
    /// Posts a ClickUp event signed with [`CLICKUP_SECRET`] and returns its id.
    pub async fn post_clickup(&self, body: &[u8]) -> String {
        let (status, json) = self
            .post(
                "clickup",
                body.to_vec(),
                &clickup_headers(CLICKUP_SECRET, body),
            )
            .await;
        assert_eq!(status, 200, "{json}");
        json["event_id"].as_str().unwrap().to_owned()
    }

    /// Waits until the event is routed and `done` holds for its deliveries;
    /// returns them.
    pub async fn wait_deliveries(
        &self,
        event_id: &str,
        secs: u64,
        what: &str,
        done: impl Fn(&[clickup_bridge::store::DeliveryRow]) -> bool,
    ) -> Vec<clickup_bridge::store::DeliveryRow> {
        use clickup_bridge::store::DeliveryFilter;
        let id = clickup_bridge::ids::EventId::from_stored(event_id.to_owned());
        let done = &done;
        wait_for(secs, what, || {
            let store = self.store.clone();
            let id = id.clone();
            async move {
                store.matched_routes(&id).await.ok().flatten()?;
                let filter = DeliveryFilter {
                    event_id: Some(id),
                    limit: 1000,
                    ..Default::default()
                };
                let rows = store.deliveries(&filter).await.ok()?;
                done(&rows).then_some(rows)
            }
        })
        .await
    }

    /// Waits until every delivery of `event_id` is delivered or dead, and
    /// returns them.
    pub async fn settled(
        &self,
        event_id: &str,
        secs: u64,
    ) -> Vec<clickup_bridge::store::DeliveryRow> {
        use clickup_bridge::store::DeliveryStatus;
        self.wait_deliveries(event_id, secs, "deliveries to settle", |rows| {
            rows.iter().all(|d| d.status != DeliveryStatus::Pending)
        })
        .await
    }
}

/// The variables of an env file (`NAME=value` lines; `#` comments), as the
/// shell's `set -a; . FILE` reads the simple files we ship.
pub fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// examples/demo.env: the shipped routes pointed at the local sink.
pub fn demo_env() -> Vec<(String, String)> {
    env_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.env"))
}

/// A delivery worker on a store of its own, driven through its step
/// function: its routes, target limits, and the inbound's starter of
/// deliveries sent at acceptance (`deliver::direct`) wired to it.
pub struct WorkerRig {
    pub store: Store,
    /// The SQLite file.
    pub db: PathBuf,
    pub live: std::sync::Arc<clickup_bridge::pipeline::Live>,
    pub limits: std::sync::Arc<clickup_bridge::deliver::limits::Limits>,
    pub starter: clickup_bridge::deliver::direct::Starter,
    pub worker: clickup_bridge::deliver::Deliverer,
    pub _dir: tempfile::TempDir,
}

/// A [`WorkerRig`] over routes.yaml `text`.
pub async fn worker_rig(text: &str) -> WorkerRig {
    use clickup_bridge::deliver::{Deliverer, direct, http_client, limits::Limits};
    use clickup_bridge::metrics::Metrics;
    use clickup_bridge::pipeline::{Live, Pipeline};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store = Store::open(&StoreLocation::Sqlite(db.clone()))
        .await
        .unwrap();
    let pipeline = Pipeline::compile("routes.yaml", text, dir.path(), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let metrics = Metrics::new();
    let live = Arc::new(Live::new(
        pipeline,
        dir.path().join("routes.yaml"),
        dir.path().join("templates"),
        metrics.clone(),
    ));
    let limits = Limits::new();
    let (starter, starts) = direct::channel(limits.clone());
    let worker = Deliverer::new(
        live.clone(),
        store.clone(),
        http_client().unwrap(),
        limits.clone(),
        Arc::new(tokio::sync::Notify::new()),
        metrics,
    )
    .with_starts(starts);
    WorkerRig {
        store,
        db,
        live,
        limits,
        starter,
        worker,
        _dir: dir,
    }
}

/// A target that answers every POST 200.
pub async fn ok_target() -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// A target that answers every POST 200 after `delay`.
pub async fn slow_target(delay: std::time::Duration) -> wiremock::MockServer {
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_delay(delay))
        .mount(&server)
        .await;
    server
}
