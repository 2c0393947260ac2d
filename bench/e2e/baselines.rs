//! The two baselines clickup-bridge is measured against, each served by this
//! bench binary re-run as its own process (`e2e baseline KIND`), pinned to
//! the daemon's CPU exactly as the daemon is:
//!
//! - **handler**: an actix-web handler that verifies `X-Signature` (hex
//!   decode, constant-time HMAC-SHA256) and parses the body into
//!   `serde_json::Value`, then answers 200.
//! - **naive**: a forwarder that does the same, POSTs
//!   `{"text": "John moved task 1vj38vv (#N)"}` to the sink with one shared
//!   keep-alive reqwest client (the daemon's HTTP client), waits for the
//!   sink's answer and only then answers 200. It stores nothing: what the
//!   sink does not take is lost.
//! - **durable**: the naive forwarder that stores each event in SQLite
//!   (fsynced) before its 200 and records each delivery (see
//!   `durable.rs`): what storing alone costs.
//!
//! actix-web runs with its default worker count (one per CPU it may use),
//! the rule the daemon follows.

use crate::common::{Launch, Res, baseline_answer, signature_refusal};
use crate::durable::{self, Durable};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use clap::ValueEnum;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Verify the HMAC, parse the JSON, answer.
    Handler,
    /// Verify, parse, POST to the sink, answer; nothing stored.
    Naive,
    /// Verify, parse, store (fsynced), answer; deliver and record it after.
    Durable,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Handler => "handler",
            Kind::Naive => "naive",
            Kind::Durable => "durable",
        }
    }
}

/// The message both forwarders send for an event: `{"text": ...}`'s text.
pub fn message(v: &Value) -> String {
    let item = &v["history_items"][0];
    let n = match &item["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!(
        "{} moved task {} (#{n})",
        item["user"]["username"].as_str().unwrap_or(""),
        v["task_id"].as_str().unwrap_or("")
    )
}

// ---------------------------------------------------------------- the serving side

struct Naive {
    client: reqwest::Client,
    url: reqwest::Url,
}

/// Verify, parse, POST the message to the sink, wait for its answer, answer.
async fn naive(naive: web::Data<Naive>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if let Some(refusal) = signature_refusal(&req, &body) {
        return refusal;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().finish();
    };
    let text = message(&v);
    let sent = naive
        .client
        .post(naive.url.clone())
        .json(&json!({ "text": text }))
        .send()
        .await;
    match sent {
        Ok(resp) if resp.status().is_success() => match resp.bytes().await {
            Ok(_) => baseline_answer(),
            Err(_) => HttpResponse::BadGateway().finish(),
        },
        _ => HttpResponse::BadGateway().finish(),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().finish()
}

/// What `e2e baseline KIND` is told.
pub struct ServeOpts {
    pub kind: Kind,
    pub sink: Option<String>,
    /// durable: its SQLite file.
    pub db: Option<PathBuf>,
    /// durable: deliveries in flight.
    pub concurrency: usize,
}

fn forwarding_client() -> Res<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// The state of a baseline's handler.
enum Serving {
    Handler,
    Naive(web::Data<Naive>),
    Durable(web::Data<Durable>),
}

/// `e2e baseline KIND`: serves on 127.0.0.1:0, prints `listening ADDR` on
/// stdout, and runs until SIGTERM (actix-web's graceful stop).
pub fn serve(opts: ServeOpts) -> Res<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let url = match (opts.kind, &opts.sink) {
        (Kind::Handler, _) => None,
        (_, Some(url)) => Some(reqwest::Url::parse(url)?),
        (kind, None) => return Err(format!("baseline {} needs --sink URL", kind.name()).into()),
    };
    actix_web::rt::System::new().block_on(async move {
        let (serving, pending) = match (opts.kind, url) {
            (Kind::Naive, Some(url)) => (
                Serving::Naive(web::Data::new(Naive {
                    client: forwarding_client()?,
                    url,
                })),
                Vec::new(),
            ),
            (Kind::Durable, Some(url)) => {
                let Some(db) = &opts.db else {
                    return Err("baseline durable needs --db PATH".into());
                };
                let (d, pending) = Durable::open(db, opts.concurrency, forwarding_client()?, url)?;
                (Serving::Durable(web::Data::new(d)), pending)
            }
            _ => (Serving::Handler, Vec::new()),
        };
        if let Serving::Durable(d) = &serving {
            for (id, text) in pending {
                actix_web::rt::spawn(durable::deliver(d.clone(), id, text));
            }
        }
        let serving = std::sync::Arc::new(serving);
        let server = HttpServer::new(move || {
            let app = App::new().route("/healthz", web::get().to(healthz));
            match &*serving {
                Serving::Naive(data) => app
                    .app_data(data.clone())
                    .route("/hooks/clickup", web::post().to(naive)),
                Serving::Durable(data) => app
                    .app_data(data.clone())
                    .route("/hooks/clickup", web::post().to(durable::handle)),
                Serving::Handler => {
                    app.route("/hooks/clickup", web::post().to(crate::common::verifying))
                }
            }
        })
        .shutdown_timeout(5)
        .listen(listener)?
        .run();
        println!("listening {addr}");
        server.await?;
        Ok::<(), crate::common::BoxError>(())
    })?;
    Ok(())
}

// ---------------------------------------------------------------- the bench side

/// A baseline's process.
pub struct Baseline {
    child: Child,
    pub addr: SocketAddr,
    /// How long it may take to exit after SIGTERM.
    stop_within: Duration,
    /// durable: the directory of its SQLite file, removed when dropped.
    _dir: Option<tempfile::TempDir>,
}

impl Baseline {
    /// Runs this binary as `baseline KIND`, as `launch` pins processes under
    /// test, and waits for its address.
    pub fn start(launch: &Launch, kind: Kind, sink_url: &str) -> Res<Baseline> {
        let exe = std::env::current_exe()?;
        let mut cmd: Command = launch.command(&exe);
        let dir = match kind {
            Kind::Durable => Some(
                tempfile::Builder::new()
                    .prefix("clickup-bridge-bench-durable-")
                    .tempdir()?,
            ),
            _ => None,
        };
        cmd.arg("baseline")
            .arg(kind.name())
            .args(["--sink", sink_url]);
        if let Some(dir) = &dir {
            cmd.arg("--db")
                .arg(dir.path().join("durable.db"))
                .args(["--concurrency", &launch.sink_concurrency.to_string()]);
        }
        cmd.env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start baseline {kind:?} ({}): {e}", exe.display()))?;
        let Some(out) = child.stdout.take() else {
            let _ = child.kill();
            return Err("baseline without stdout".into());
        };
        // A reader thread, so a baseline that never prints cannot hang us.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(launch.ready_within.max(Duration::from_secs(30)))
            .unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Ok(Baseline {
                child,
                addr,
                stop_within: launch.stop_within.max(Duration::from_secs(20)),
                _dir: dir,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("baseline {kind:?} did not say where it listens (got {line:?})").into())
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (up to its `stop_within`, then SIGKILL).
    pub async fn stop(mut self) -> Res<ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + self.stop_within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "baseline {pid} did not exit within {} s of SIGTERM",
                    self.stop_within.as_secs()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
