//! End-to-end load run: signed ClickUp events in, Slack-shaped messages out,
//! against a hand-written forwarder measured in the same run.
//!
//! A sink (in-process actix-web) plays the Slack incoming webhook: it answers
//! 200 "ok", counts messages and keeps each one's arrival time, `#N` and
//! `Idempotency-Key`.
//!
//! Phase 1 "naive forwarder": an in-process actix-web server that verifies the
//! signature, parses the JSON, POSTs the message to the sink and answers only
//! after the sink did. Nothing is stored; what the sink does not take is lost.
//! Phase 2 "clickup-bridge": the real daemon, answering after the event is
//! committed and delivering it from its own queue; with `--store both
//! --instances 1,2,3` once on SQLite, then on a throwaway PostgreSQL with one,
//! two and three daemons sharing a database, the load spread over them.
//! Phase 3 "backlog" (`--backlog N`, 0 skips it): the sink answers 503 while N
//! events are pushed in; RSS is sampled; then the sink recovers and the backlog
//! drains.
//!
//! Run with `cargo bench --bench e2e` (see bench/README.md for the options).

#[path = "common.rs"]
mod common;

use actix_web::{HttpRequest, HttpResponse, web};
use common::{
    Args, BoxError, Configure, CpuUse, Daemon, GIVE_UP_AFTER, ID_BASE, LoadOut, LoadSpec, Meter,
    Prebuilt, Res, Stop, available_cores, baseline_answer, body_len, fmt_opt, http_client,
    loadgen_runtime, nearest_rank, open_db, own_tids, percentile_ms, prebuild_pool, print_checks,
    ratio, rss_mb, run_load, signature_refusal, start_daemon, start_server, unix_time,
    write_report,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

const SINK_MARK: &str = "@@SINK@@";
const ROUTES_TEMPLATE: &str = r#"version: 1
sources:
  clickup:
    verify: clickup
    secret: bench-secret
targets:
  sink:
    type: slack
    webhook_url: @@SINK@@
    rate_limit: 100000/s
    concurrency: 32
    timeout: 10
    retry: { attempts: 1000000, initial: 0.2, max: 2 }
routes:
  - name: to-sink
    source: clickup
    # Every bench event is about one task: not ordered, to measure throughput.
    order_by: none
    when:
      event: taskStatusUpdated
    extract:
      by: $.history_items[0].user.username
      n: $.history_items[0].id
    send:
      - target: sink
        text: "{{by}} moved task {{event.task_id}} (#{{n}})"
"#;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------- options

#[derive(Debug, Clone)]
struct Options {
    duration: Duration,
    warmup: Duration,
    connections: usize,
    settle: Duration,
    backlog: usize,
    backlog_connections: usize,
    drain_timeout: Duration,
    requests: usize,
    client_threads: usize,
    server_workers: usize,
    sink_workers: usize,
    /// Phase 2 runs once per entry, in this order.
    configs: Vec<Config>,
    out: PathBuf,
}

/// Where phase 2's daemons keep their store, and how many share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Config {
    postgres: bool,
    instances: usize,
}

impl Config {
    fn label(&self) -> String {
        format!(
            "{} x{}",
            if self.postgres {
                "PostgreSQL"
            } else {
                "SQLite"
            },
            self.instances
        )
    }

    fn key(&self) -> String {
        format!(
            "{}_{}",
            if self.postgres { "postgres" } else { "sqlite" },
            self.instances
        )
    }
}

/// `--store` and `--instances` into phase 2's runs: SQLite with one
/// instance first, then PostgreSQL with each count.
fn configs(store: &str, instances: &[usize]) -> Res<Vec<Config>> {
    let (sqlite, postgres) = match store {
        "sqlite" => (true, false),
        "postgres" => (false, true),
        "both" => (true, true),
        other => {
            return Err(format!("--store {other:?}: use sqlite, postgres or both\n{USAGE}").into());
        }
    };
    if instances.is_empty() || instances.contains(&0) {
        return Err(format!("--instances needs counts of at least 1\n{USAGE}").into());
    }
    if !postgres && instances.iter().any(|n| *n > 1) {
        return Err(
            "several instances share one PostgreSQL database: add --store postgres or --store both"
                .into(),
        );
    }
    let mut out = Vec::new();
    if sqlite {
        out.push(Config {
            postgres: false,
            instances: 1,
        });
    }
    if postgres {
        out.extend(instances.iter().map(|n| Config {
            postgres: true,
            instances: *n,
        }));
    }
    Ok(out)
}

const USAGE: &str = "\
usage: cargo bench --bench e2e -- [options]
  --duration SECS            measured time of phases 1 and 2 (default 10)
  --warmup SECS              unmeasured warm-up of phases 1 and 2 (default 1)
  --connections N            concurrent keep-alive clients, phases 1 and 2 (default 16)
  --settle SECS              phase 2: how long to wait after the load for the last messages (default 60)
  --backlog N                phase 3: events pushed while the sink answers 503; 0 skips it (default 100000)
  --backlog-connections N    phase 3: concurrent clients (default 32)
  --drain-timeout SECS       phase 3: longest wait for the backlog to drain (default 900)
  --requests N               distinct signed requests built up front (default 400000, at least the backlog)
  --client-threads N         load generator runtime threads (default 2)
  --server-workers N         actix workers of the naive forwarder (default 2)
  --sink-workers N           actix workers of the sink (default 2)
  --store sqlite|postgres|both  phase 2's store (default sqlite); postgres starts a throwaway cluster
  --instances N[,N...]       phase 2 on PostgreSQL: daemons sharing one database, one run per count (default 1)
  --out FILE                 JSON report (default bench/results/e2e-latest.json)";

fn parse_options() -> Res<Options> {
    let mut o = Options {
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        connections: 16,
        settle: Duration::from_secs(60),
        backlog: 100_000,
        backlog_connections: 32,
        drain_timeout: Duration::from_secs(900),
        requests: 400_000,
        client_threads: 2,
        server_workers: 2,
        sink_workers: 2,
        configs: Vec::new(),
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/results/e2e-latest.json"),
    };
    let mut store = "sqlite".to_owned();
    let mut instances = vec![1];
    let mut args = Args::new(USAGE);
    while let Some(arg) = args.next_option() {
        match arg.as_str() {
            "--store" => store = args.value("--store")?,
            "--instances" => {
                instances = args
                    .value("--instances")?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?;
            }
            "--duration" => o.duration = args.secs("--duration")?,
            "--warmup" => o.warmup = args.secs("--warmup")?,
            "--connections" => o.connections = args.parse("--connections")?,
            "--settle" => o.settle = args.secs("--settle")?,
            "--backlog" => o.backlog = args.parse("--backlog")?,
            "--backlog-connections" => {
                o.backlog_connections = args.parse("--backlog-connections")?;
            }
            "--drain-timeout" => o.drain_timeout = args.secs("--drain-timeout")?,
            "--requests" => o.requests = args.parse("--requests")?,
            "--client-threads" => o.client_threads = args.parse("--client-threads")?,
            "--server-workers" => o.server_workers = args.parse("--server-workers")?,
            "--sink-workers" => o.sink_workers = args.parse("--sink-workers")?,
            "--out" => o.out = PathBuf::from(args.value("--out")?),
            other => return Err(args.unknown(other)),
        }
    }
    args.check(
        &[
            o.connections,
            o.backlog_connections,
            o.requests,
            o.client_threads,
            o.server_workers,
            o.sink_workers,
        ],
        o.duration,
    )?;
    o.configs = configs(&store, &instances)?;
    Ok(o)
}

// ---------------------------------------------------------------- sink

#[derive(Default)]
struct SinkInner {
    /// (pool index, arrival) of every message answered 200, in arrival order.
    arrivals: Vec<(u32, Instant)>,
    /// Pool indices seen (answered 200).
    seen: HashSet<u32>,
    /// Idempotency-Key values seen (answered 200).
    keys: HashSet<String>,
}

/// The Slack stand-in.
#[derive(Default)]
struct Sink {
    /// Answer 503 instead of 200.
    fail: AtomicBool,
    /// Messages answered 503.
    refused: AtomicU64,
    /// Messages answered 200.
    ok: AtomicU64,
    /// 200 messages whose Idempotency-Key was seen before.
    dup_keys: AtomicU64,
    /// 200 messages whose `#N` was seen before.
    dup_events: AtomicU64,
    /// 200 messages without an Idempotency-Key.
    no_key: AtomicU64,
    /// Messages that are not `{"text": "... (#N)"}` with a known N.
    unparsable: AtomicU64,
    inner: Mutex<SinkInner>,
}

impl Sink {
    fn reset(&self) {
        for c in [
            &self.refused,
            &self.ok,
            &self.dup_keys,
            &self.dup_events,
            &self.no_key,
            &self.unparsable,
        ] {
            c.store(0, Ordering::SeqCst);
        }
        *lock(&self.inner) = SinkInner::default();
    }

    fn distinct(&self) -> usize {
        lock(&self.inner).seen.len()
    }

    /// How many of `accepted` the sink has not received yet.
    fn missing(&self, accepted: &[(u32, Instant)]) -> usize {
        let inner = lock(&self.inner);
        accepted
            .iter()
            .filter(|(i, _)| !inner.seen.contains(i))
            .count()
    }

    fn arrivals(&self) -> Vec<(u32, Instant)> {
        lock(&self.inner).arrivals.clone()
    }

    fn counts(&self) -> SinkCounts {
        let inner = lock(&self.inner);
        SinkCounts {
            ok: self.ok.load(Ordering::SeqCst),
            refused: self.refused.load(Ordering::SeqCst),
            distinct_events: inner.seen.len() as u64,
            distinct_keys: inner.keys.len() as u64,
            dup_keys: self.dup_keys.load(Ordering::SeqCst),
            dup_events: self.dup_events.load(Ordering::SeqCst),
            no_key: self.no_key.load(Ordering::SeqCst),
            unparsable: self.unparsable.load(Ordering::SeqCst),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct SinkCounts {
    ok: u64,
    refused: u64,
    distinct_events: u64,
    distinct_keys: u64,
    dup_keys: u64,
    dup_events: u64,
    no_key: u64,
    unparsable: u64,
}

impl SinkCounts {
    fn json(&self) -> Value {
        json!({
            "answered_200": self.ok,
            "answered_503": self.refused,
            "distinct_events": self.distinct_events,
            "distinct_idempotency_keys": self.distinct_keys,
            "duplicate_idempotency_keys": self.dup_keys,
            "duplicate_events": self.dup_events,
            "without_idempotency_key": self.no_key,
            "unparsable": self.unparsable,
        })
    }
}

/// The pool index in `{"text": "... (#N)"}`.
fn message_index(body: &[u8]) -> Option<u32> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = v.get("text")?.as_str()?;
    let rest = &text[text.rfind("(#")? + 2..];
    let n: u64 = rest[..rest.find(')')?].parse().ok()?;
    u32::try_from(n.checked_sub(ID_BASE)?).ok()
}

async fn sink_slack(sink: web::Data<Sink>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let at = Instant::now();
    if sink.fail.load(Ordering::Relaxed) {
        sink.refused.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("unavailable");
    }
    sink.ok.fetch_add(1, Ordering::Relaxed);
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok());
    let index = message_index(&body);
    {
        let mut inner = lock(&sink.inner);
        match key {
            Some(k) => {
                if !inner.keys.insert(k.to_owned()) {
                    sink.dup_keys.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                sink.no_key.fetch_add(1, Ordering::Relaxed);
            }
        }
        match index {
            Some(i) => {
                if !inner.seen.insert(i) {
                    sink.dup_events.fetch_add(1, Ordering::Relaxed);
                }
                inner.arrivals.push((i, at));
            }
            None => {
                sink.unparsable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

fn sink_config(sink: Arc<Sink>) -> Configure {
    Arc::new(move |c: &mut web::ServiceConfig| {
        c.app_data(web::Data::from(sink.clone()))
            .route("/slack", web::post().to(sink_slack));
    })
}

// ---------------------------------------------------------------- naive forwarder

struct Naive {
    client: reqwest::Client,
    url: reqwest::Url,
}

/// Verify, parse, POST the message to the sink, wait for its answer, answer.
async fn naive_forward(
    naive: web::Data<Naive>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if let Some(refusal) = signature_refusal(&req, &body) {
        return refusal;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().finish();
    };
    let item = &v["history_items"][0];
    let n = match &item["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = format!(
        "{} moved task {} (#{n})",
        item["user"]["username"].as_str().unwrap_or(""),
        v["task_id"].as_str().unwrap_or("")
    );
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

fn naive_config(sink_url: &str, connections: usize) -> Res<Configure> {
    let naive = Arc::new(Naive {
        client: http_client(connections * 2)?,
        url: reqwest::Url::parse(sink_url)?,
    });
    Ok(Arc::new(move |c: &mut web::ServiceConfig| {
        c.app_data(web::Data::from(naive.clone()))
            .route("/hooks/clickup", web::post().to(naive_forward));
    }))
}

// ---------------------------------------------------------------- daemon

/// The daemon, routing every taskStatusUpdated to the sink; `store` as
/// `start_daemon` takes it.
async fn start_bridge(sink_url: &str, store: Option<&str>) -> Res<Daemon> {
    start_daemon(
        "clickup-bridge-e2e-",
        &ROUTES_TEMPLATE.replace(SINK_MARK, sink_url),
        store,
        // Settings and proxies from the caller's environment must not leak
        // into the run (the sink is on loopback).
        |name| {
            let name = name.to_ascii_uppercase();
            name.starts_with("CLICKUP_BRIDGE_") || name.ends_with("_PROXY")
        },
    )
    .await
}

/// What the daemon's SQLite file says.
#[derive(Clone, Copy, Debug, Default)]
struct DbCounts {
    events: i64,
    unrouted: i64,
    pending: i64,
    delivered: i64,
    dead: i64,
    attempts: i64,
    /// PostgreSQL: transactions committed in the database over the run
    /// (`pg_stat_database.xact_commit`; the database is fresh per run).
    commits: Option<i64>,
}

impl DbCounts {
    fn json(&self) -> Value {
        json!({
            "events": self.events,
            "unrouted_events": self.unrouted,
            "deliveries_pending": self.pending,
            "deliveries_delivered": self.delivered,
            "deliveries_dead": self.dead,
            "attempts": self.attempts,
            "postgres_commits": self.commits,
        })
    }
}

/// Unrouted events and pending deliveries (cheap enough to poll while the
/// daemon runs; WAL readers do not block its writer).
async fn db_backlog(conn: &mut sqlx::SqliteConnection) -> Res<(i64, i64)> {
    let unrouted: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE routed_at IS NULL")
        .fetch_one(&mut *conn)
        .await?;
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'pending'")
            .fetch_one(&mut *conn)
            .await?;
    Ok((unrouted, pending))
}

/// The same counts from a PostgreSQL database (the schema is the same).
async fn pg_counts(url: &str) -> Res<DbCounts> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let mut count = async |sql: &'static str| -> Res<i64> {
        Ok(sqlx::query_scalar(sql).fetch_one(&mut conn).await?)
    };
    let c = DbCounts {
        events: count("SELECT count(*) FROM events").await?,
        unrouted: count("SELECT count(*) FROM events WHERE routed_at IS NULL").await?,
        pending: count("SELECT count(*) FROM deliveries WHERE status = 'pending'").await?,
        delivered: count("SELECT count(*) FROM deliveries WHERE status = 'delivered'").await?,
        dead: count("SELECT count(*) FROM deliveries WHERE status = 'dead'").await?,
        attempts: count("SELECT count(*) FROM attempts").await?,
        commits: Some(
            count("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
                .await?,
        ),
    };
    conn.close().await?;
    Ok(c)
}

async fn db_counts(db: &Path) -> Res<DbCounts> {
    let mut conn = open_db(db).await?;
    let mut c = DbCounts {
        events: sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&mut conn)
            .await?,
        attempts: sqlx::query_scalar("SELECT count(*) FROM attempts")
            .fetch_one(&mut conn)
            .await?,
        ..DbCounts::default()
    };
    (c.unrouted, c.pending) = db_backlog(&mut conn).await?;
    c.delivered = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
        .fetch_one(&mut conn)
        .await?;
    c.dead = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = 'dead'")
        .fetch_one(&mut conn)
        .await?;
    sqlx::Connection::close(conn).await?;
    Ok(c)
}

// ---------------------------------------------------------------- load

// ---------------------------------------------------------------- figures

fn percentile_signed_ms(sorted_us: &[i64], p: f64) -> f64 {
    nearest_rank(sorted_us, p).map_or(f64::NAN, |us| us as f64 / 1000.0)
}

fn signed_us(from: Instant, to: Instant) -> i64 {
    if to >= from {
        i64::try_from(to.duration_since(from).as_micros()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from(from.duration_since(to).as_micros()).unwrap_or(i64::MAX)
    }
}

/// What the sink got compared with what the clients had accepted.
#[derive(Clone, Debug, Default)]
struct Delivery {
    /// Distinct accepted events.
    accepted: u64,
    /// Accepted events the sink never got (answered 200).
    missing: u64,
    /// Messages for events no client saw accepted (stored, then the answer failed).
    extra: u64,
    first_acceptance: Option<Instant>,
    first_arrival: Option<Instant>,
    last_arrival: Option<Instant>,
    /// Acceptance→arrival (µs, signed) of the events accepted in the window.
    e2e_us: Vec<i64>,
    /// Of those, how many arrived before their client had read the 200.
    arrived_before_answer: u64,
}

fn compare(
    accepted: &[(u32, Instant)],
    arrivals: &[(u32, Instant)],
    window: (Instant, Instant),
) -> Delivery {
    let len = accepted
        .iter()
        .chain(arrivals)
        .map(|(i, _)| *i as usize + 1)
        .max()
        .unwrap_or(0);
    let mut first_arrival: Vec<Option<Instant>> = vec![None; len];
    for (i, at) in arrivals {
        let slot = &mut first_arrival[*i as usize];
        if slot.is_none() {
            *slot = Some(*at);
        }
    }
    let mut is_accepted = vec![false; len];
    let mut d = Delivery {
        first_acceptance: accepted.iter().map(|(_, t)| *t).min(),
        first_arrival: arrivals.iter().map(|(_, t)| *t).min(),
        last_arrival: arrivals.iter().map(|(_, t)| *t).max(),
        ..Delivery::default()
    };
    for (i, acc) in accepted {
        let i = *i as usize;
        if is_accepted[i] {
            continue;
        }
        is_accepted[i] = true;
        d.accepted += 1;
        match first_arrival[i] {
            None => d.missing += 1,
            Some(arr) => {
                if *acc >= window.0 && *acc <= window.1 {
                    let us = signed_us(*acc, arr);
                    if us < 0 {
                        d.arrived_before_answer += 1;
                    }
                    d.e2e_us.push(us);
                }
            }
        }
    }
    d.extra = first_arrival
        .iter()
        .zip(&is_accepted)
        .filter(|(arr, acc)| arr.is_some() && !**acc)
        .count() as u64;
    d.e2e_us.sort_unstable();
    d
}

/// Waits until the sink has every accepted event (true) or the deadline passed.
async fn wait_all_arrived(sink: &Sink, accepted: &[(u32, Instant)], deadline: Instant) -> bool {
    let want = accepted
        .iter()
        .map(|(i, _)| *i)
        .collect::<HashSet<u32>>()
        .len();
    loop {
        if sink.distinct() >= want && sink.missing(accepted) == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn secs_between(a: Option<Instant>, b: Option<Instant>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b >= a => Some(b.duration_since(a).as_secs_f64()),
        _ => None,
    }
}

// ---------------------------------------------------------------- phases

struct Ctx {
    opts: Options,
    pool: Arc<Vec<Prebuilt>>,
    sink: Arc<Sink>,
    sink_url: String,
    meter: Meter,
    /// The throwaway PostgreSQL cluster, when a run uses it.
    cluster: Option<common::pg::Cluster>,
}

/// One row of the main table.
#[derive(Clone, Debug, Default)]
struct FlowResult {
    /// clickup-bridge: the store and instance count.
    config: Option<Config>,
    accepted_rps: f64,
    delivered_rps: Option<f64>,
    client_p50_ms: f64,
    client_p99_ms: f64,
    e2e_p50_ms: Option<f64>,
    e2e_p99_ms: Option<f64>,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    accepted_total: u64,
    missing: u64,
    extra: u64,
    duplicates: u64,
    cpu: CpuUse,
    /// clickup-bridge: from the end of the load until the last message.
    tail_s: Option<f64>,
    tail_cpu: Option<CpuUse>,
    /// clickup-bridge: cores from the start of the warm-up until the last
    /// message arrived, and how long that was.
    whole_cpu: Option<CpuUse>,
    whole_s: Option<f64>,
    /// CPU time per delivered event over that span (µs): the daemons', and
    /// the PostgreSQL cluster's.
    daemon_us_per_event: Option<f64>,
    postgres_us_per_event: Option<f64>,
    /// The highest of the instances.
    idle_rss_mb: Option<f64>,
    peak_rss_mb: Option<f64>,
    sink: SinkCounts,
    db: Option<DbCounts>,
    problems: Vec<String>,
    notes: Vec<String>,
}

impl FlowResult {
    fn json(&self) -> Value {
        json!({
            "store": self.config.map(|c| if c.postgres { "postgres" } else { "sqlite" }),
            "instances": self.config.map(|c| c.instances),
            "accepted_per_sec": self.accepted_rps,
            "delivered_per_sec": self.delivered_rps,
            "client_p50_ms": self.client_p50_ms,
            "client_p99_ms": self.client_p99_ms,
            "accept_to_arrival_p50_ms": self.e2e_p50_ms,
            "accept_to_arrival_p99_ms": self.e2e_p99_ms,
            "errors_in_window": self.errors,
            "error_kinds": self.error_kinds,
            "accepted_events": self.accepted_total,
            "missing_at_sink": self.missing,
            "extra_at_sink": self.extra,
            "duplicates_at_sink": self.duplicates,
            "cpu_window": self.cpu.json(),
            "tail_s": self.tail_s,
            "cpu_tail": self.tail_cpu.as_ref().map(CpuUse::json),
            "cpu_whole": self.whole_cpu.as_ref().map(CpuUse::json),
            "whole_s": self.whole_s,
            "daemon_cpu_us_per_event": self.daemon_us_per_event,
            "postgres_cpu_us_per_event": self.postgres_us_per_event,
            "idle_rss_mb": self.idle_rss_mb,
            "peak_rss_mb": self.peak_rss_mb,
            "sink": self.sink.json(),
            "db_after_exit": self.db.map(|d| d.json()),
            "problems": self.problems,
            "notes": self.notes,
        })
    }
}

fn load_problems(load: &LoadOut, r: &mut FlowResult) {
    if load.pool_exhausted {
        r.problems
            .push("ran out of pre-built requests: raise --requests".into());
    }
    if load.gave_up {
        r.problems.push(format!(
            "a client gave up after {GIVE_UP_AFTER} consecutive failures"
        ));
    }
    if !load.tally.error_kinds.is_empty() {
        r.problems
            .push(format!("client errors: {:?}", load.tally.error_kinds));
    }
}

async fn run_naive(ctx: &Ctx) -> Res<FlowResult> {
    ctx.sink.reset();
    ctx.sink.fail.store(false, Ordering::SeqCst);
    let server = start_server(
        "naive-forwarder",
        ctx.opts.server_workers,
        naive_config(&ctx.sink_url, ctx.opts.connections)?,
    )?;
    let spec = LoadSpec {
        urls: vec![format!("http://{}/hooks/clickup", server.addr)],
        connections: ctx.opts.connections,
        stop: Stop::Timed {
            warmup: ctx.opts.warmup,
            duration: ctx.opts.duration,
        },
        wrap: true,
        server_pids: Vec::new(),
        keep_answers: false,
        progress: Arc::new(AtomicU64::new(0)),
    };
    let load = run_load(spec, ctx.pool.clone(), &ctx.meter).await;
    server.stop().await?;
    let load = load?;
    let d = compare(
        &load.accepted,
        &ctx.sink.arrivals(),
        (load.window_start, load.window_end),
    );
    let sink = ctx.sink.counts();
    let mut r = FlowResult {
        accepted_rps: load.rps(),
        delivered_rps: None,
        client_p50_ms: percentile_ms(&load.tally.latencies, 50.0),
        client_p99_ms: percentile_ms(&load.tally.latencies, 99.0),
        errors: load.tally.errors,
        error_kinds: load.tally.error_kinds.clone(),
        accepted_total: d.accepted,
        missing: d.missing,
        extra: d.extra,
        // Cycling through the pool repeats #N; the forwarder sends no key.
        duplicates: 0,
        cpu: load.cpu.clone(),
        sink,
        ..FlowResult::default()
    };
    // The forwarder answers after the sink did: the rate it answers at is
    // the rate it delivers at.
    r.delivered_rps = Some(r.accepted_rps);
    load_problems(&load, &mut r);
    if d.missing > 0 {
        r.problems.push(format!(
            "{} events answered 200 but not at the sink",
            d.missing
        ));
    }
    r.notes.push(format!(
        "clients got {} 200s (warm-up included), the sink {} messages",
        load.accepted.len(),
        sink.ok
    ));
    Ok(r)
}

/// Stops every daemon (SIGTERM) and returns each one's exit problem, if any.
async fn stop_all(daemons: &mut [Daemon]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, d) in daemons.iter_mut().enumerate() {
        let exit = d.stop().await;
        problems.extend(
            d.exit_problem(&exit)
                .map(|p| format!("instance {}: {p}", i + 1)),
        );
    }
    problems
}

/// Phase 2 for one store and instance count: `config.instances` daemons on
/// one store, the load spread over them request by request.
async fn run_bridge(ctx: &Ctx, config: Config) -> Res<FlowResult> {
    ctx.sink.reset();
    ctx.sink.fail.store(false, Ordering::SeqCst);
    let store = match (&ctx.cluster, config.postgres) {
        (Some(cluster), true) => Some(cluster.new_database()?),
        (None, true) => return Err("PostgreSQL run without a cluster".into()),
        (_, false) => None,
    };
    let mut daemons: Vec<Daemon> = Vec::with_capacity(config.instances);
    for _ in 0..config.instances {
        match start_bridge(&ctx.sink_url, store.as_deref()).await {
            Ok(d) => daemons.push(d),
            Err(e) => {
                daemons.iter_mut().for_each(Daemon::kill_now);
                return Err(e);
            }
        }
    }
    let pids: Vec<u32> = daemons.iter().map(Daemon::pid).collect();
    let idle = pids
        .iter()
        .filter_map(|pid| rss_mb(*pid, "VmRSS:"))
        .reduce(f64::max);
    let spec = LoadSpec {
        urls: daemons
            .iter()
            .map(|d| format!("http://{}/hooks/clickup", d.addr))
            .collect(),
        connections: ctx.opts.connections,
        stop: Stop::Timed {
            warmup: ctx.opts.warmup,
            duration: ctx.opts.duration,
        },
        wrap: false,
        server_pids: pids.clone(),
        keep_answers: false,
        progress: Arc::new(AtomicU64::new(0)),
    };
    let whole_start = ctx.meter.snap_many(&pids);
    let load = run_load(spec, ctx.pool.clone(), &ctx.meter).await;
    let load = match load {
        Ok(l) => l,
        Err(e) => {
            daemons.iter_mut().for_each(Daemon::kill_now);
            return Err(e);
        }
    };
    let tail_start = ctx.meter.snap_many(&pids);
    let all = wait_all_arrived(&ctx.sink, &load.accepted, Instant::now() + ctx.opts.settle).await;
    let tail_end = ctx.meter.snap_many(&pids);
    // Late duplicates would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = pids
        .iter()
        .filter_map(|pid| rss_mb(*pid, "VmHWM:"))
        .reduce(f64::max);
    let exit_problems = stop_all(&mut daemons).await;
    let arrivals = ctx.sink.arrivals();
    let sink = ctx.sink.counts();
    let d = compare(
        &load.accepted,
        &arrivals,
        (load.window_start, load.window_end),
    );
    let delivered_rps =
        secs_between(d.first_acceptance, d.last_arrival).map(|s| arrivals.len() as f64 / s);
    let whole = ctx.meter.between(&whole_start, &tail_end);
    let whole_s = tail_end.at.duration_since(whole_start.at).as_secs_f64();
    let per_event_us = |cores: f64| {
        (sink.distinct_events > 0).then(|| cores * whole_s * 1e6 / sink.distinct_events as f64)
    };
    let mut r = FlowResult {
        config: Some(config),
        accepted_rps: load.rps(),
        delivered_rps,
        client_p50_ms: percentile_ms(&load.tally.latencies, 50.0),
        client_p99_ms: percentile_ms(&load.tally.latencies, 99.0),
        e2e_p50_ms: Some(percentile_signed_ms(&d.e2e_us, 50.0)),
        e2e_p99_ms: Some(percentile_signed_ms(&d.e2e_us, 99.0)),
        errors: load.tally.errors,
        error_kinds: load.tally.error_kinds.clone(),
        accepted_total: d.accepted,
        missing: d.missing,
        extra: d.extra,
        duplicates: sink.dup_keys.max(sink.dup_events),
        cpu: load.cpu.clone(),
        tail_s: secs_between(Some(load.window_end), d.last_arrival),
        tail_cpu: Some(ctx.meter.between(&tail_start, &tail_end)),
        daemon_us_per_event: per_event_us(whole.server),
        postgres_us_per_event: config.postgres.then(|| per_event_us(whole.db)).flatten(),
        whole_cpu: Some(whole),
        whole_s: Some(whole_s),
        idle_rss_mb: idle,
        peak_rss_mb: peak,
        sink,
        ..FlowResult::default()
    };
    load_problems(&load, &mut r);
    if !all {
        r.problems.push(format!(
            "{} accepted events had not reached the sink {} s after the load",
            d.missing,
            ctx.opts.settle.as_secs_f64()
        ));
    }
    if sink.dup_keys > 0 || sink.dup_events > 0 {
        r.problems.push(format!(
            "duplicates at the sink: {} repeated Idempotency-Keys, {} repeated events",
            sink.dup_keys, sink.dup_events
        ));
    }
    if sink.no_key > 0 || sink.unparsable > 0 {
        r.problems.push(format!(
            "{} messages without Idempotency-Key, {} unparsable",
            sink.no_key, sink.unparsable
        ));
    }
    if d.arrived_before_answer > 0 {
        r.notes.push(format!(
            "{} messages arrived before their client had read the 200 (negative latency)",
            d.arrived_before_answer
        ));
    }
    r.problems.extend(exit_problems);
    let counts = match (&store, daemons.first()) {
        (Some(url), _) => pg_counts(url).await,
        (None, Some(daemon)) => db_counts(&daemon.db_path()).await,
        (None, None) => Err("no daemon ran".into()),
    };
    let store_name = if config.postgres {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    match counts {
        Ok(c) => {
            if c.delivered != i64::try_from(d.accepted + d.extra).unwrap_or(i64::MAX) {
                r.notes.push(format!(
                    "{store_name} after exit: {} deliveries delivered for {} events at the sink",
                    c.delivered,
                    d.accepted + d.extra
                ));
            }
            r.db = Some(c);
        }
        Err(e) => r.notes.push(format!(
            "could not read the {store_name} store after exit: {e}"
        )),
    }
    for (i, daemon) in daemons.iter().enumerate() {
        r.notes.extend(
            daemon
                .log_note()
                .map(|n| format!("instance {}: {n}", i + 1)),
        );
    }
    Ok(r)
}

/// Phase 3.
#[derive(Clone, Debug, Default)]
struct BacklogResult {
    events: u64,
    fill_s: f64,
    fill_rps: f64,
    fill_p50_ms: f64,
    fill_p99_ms: f64,
    fill_cpu: CpuUse,
    /// From the last acceptance until every event had its pending delivery.
    router_lag_s: Option<f64>,
    pending_at_full: Option<i64>,
    refused_attempts: u64,
    refused_per_s: f64,
    idle_rss_mb: Option<f64>,
    peak_fill_rss_mb: Option<f64>,
    rss_at_full_mb: Option<f64>,
    peak_drain_rss_mb: Option<f64>,
    hwm_mb: Option<f64>,
    after_drain_rss_mb: Option<f64>,
    drain_s: Option<f64>,
    drain_rps: Option<f64>,
    first_arrival_after_switch_s: Option<f64>,
    drain_cpu: CpuUse,
    missing: u64,
    extra: u64,
    sink: SinkCounts,
    db: Option<DbCounts>,
    exit: String,
    rss_samples: Vec<(f64, u8, f64)>,
    errors: BTreeMap<String, u64>,
    problems: Vec<String>,
    notes: Vec<String>,
}

impl BacklogResult {
    fn json(&self) -> Value {
        json!({
            "events": self.events,
            "fill_s": self.fill_s,
            "fill_accepted_per_sec": self.fill_rps,
            "fill_client_p50_ms": self.fill_p50_ms,
            "fill_client_p99_ms": self.fill_p99_ms,
            "cpu_fill": self.fill_cpu.json(),
            "router_lag_s": self.router_lag_s,
            "pending_deliveries_at_full": self.pending_at_full,
            "refused_attempts": self.refused_attempts,
            "refused_attempts_per_sec": self.refused_per_s,
            "idle_rss_mb": self.idle_rss_mb,
            "peak_rss_during_backlog_mb": self.peak_fill_rss_mb,
            "rss_at_full_backlog_mb": self.rss_at_full_mb,
            "peak_rss_during_drain_mb": self.peak_drain_rss_mb,
            "rss_after_drain_mb": self.after_drain_rss_mb,
            "vm_hwm_mb": self.hwm_mb,
            "drain_s": self.drain_s,
            "drain_per_sec": self.drain_rps,
            "first_arrival_after_switch_s": self.first_arrival_after_switch_s,
            "cpu_drain": self.drain_cpu.json(),
            "missing_at_sink": self.missing,
            "extra_at_sink": self.extra,
            "sink": self.sink.json(),
            "db_after_exit": self.db.map(|d| d.json()),
            "daemon_exit": self.exit,
            "rss_samples": self.rss_samples.iter().map(|(t, stage, mb)| json!({
                "t_s": t, "stage": stage_name(*stage), "rss_mb": mb,
            })).collect::<Vec<_>>(),
            "client_errors": self.errors,
            "problems": self.problems,
            "notes": self.notes,
        })
    }
}

const STAGE_FILL: u8 = 0;
const STAGE_ROUTING: u8 = 1;
const STAGE_DRAIN: u8 = 2;

fn stage_name(stage: u8) -> &'static str {
    match stage {
        STAGE_FILL => "fill",
        STAGE_ROUTING => "routing",
        STAGE_DRAIN => "drain",
        _ => "?",
    }
}

/// Samples the daemon's VmRSS every second and prints progress every 5 s.
fn spawn_sampler(
    pid: u32,
    start: Instant,
    stage: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    sink: Arc<Sink>,
) -> tokio::task::JoinHandle<Vec<(f64, u8, f64)>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n = 0u64;
        loop {
            tick.tick().await;
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let t = start.elapsed().as_secs_f64();
            let s = stage.load(Ordering::SeqCst);
            let Some(mb) = rss_mb(pid, "VmRSS:") else {
                break;
            };
            samples.push((t, s, mb));
            n += 1;
            if n.is_multiple_of(5) {
                let c = sink.counts();
                println!(
                    "  backlog +{t:>5.0} s  {:<7}  accepted {:>7}  sink 503 {:>8}  sink 200 {:>7}  RSS {mb:.1} MB",
                    stage_name(s),
                    accepted.load(Ordering::Relaxed),
                    c.refused,
                    c.distinct_events,
                );
            }
        }
        samples
    })
}

fn max_rss(samples: &[(f64, u8, f64)], stages: &[u8]) -> Option<f64> {
    samples
        .iter()
        .filter(|(_, s, _)| stages.contains(s))
        .map(|(_, _, mb)| *mb)
        .reduce(f64::max)
}

async fn run_backlog(ctx: &Ctx) -> Res<BacklogResult> {
    let n = ctx.opts.backlog as u64;
    ctx.sink.reset();
    ctx.sink.fail.store(true, Ordering::SeqCst);
    let mut daemon = start_bridge(&ctx.sink_url, None).await?;
    let pid = daemon.pid();
    let mut r = BacklogResult {
        events: n,
        idle_rss_mb: rss_mb(pid, "VmRSS:"),
        ..BacklogResult::default()
    };
    let start = Instant::now();
    let stage = Arc::new(AtomicU8::new(STAGE_FILL));
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let sampler = spawn_sampler(
        pid,
        start,
        stage.clone(),
        stop.clone(),
        progress.clone(),
        ctx.sink.clone(),
    );
    let outcome = backlog_steps(ctx, &mut daemon, &mut r, &stage, progress).await;
    stop.store(true, Ordering::SeqCst);
    r.rss_samples = sampler.await.unwrap_or_default();
    r.peak_fill_rss_mb = [
        max_rss(&r.rss_samples, &[STAGE_FILL, STAGE_ROUTING]),
        r.rss_at_full_mb,
    ]
    .into_iter()
    .flatten()
    .reduce(f64::max);
    r.peak_drain_rss_mb = max_rss(&r.rss_samples, &[STAGE_DRAIN]);
    r.hwm_mb = rss_mb(pid, "VmHWM:");
    r.after_drain_rss_mb = rss_mb(pid, "VmRSS:");
    if let Err(e) = outcome {
        daemon.kill_now();
        return Err(e);
    }
    let exit = daemon.stop().await;
    r.exit = match &exit {
        Ok(s) => s.to_string(),
        Err(_) => "no exit".into(),
    };
    r.problems.extend(daemon.exit_problem(&exit));
    match db_counts(&daemon.db_path()).await {
        Ok(c) => r.db = Some(c),
        Err(e) => r
            .notes
            .push(format!("could not read the SQLite file after exit: {e}")),
    }
    r.notes.extend(daemon.log_note());
    Ok(r)
}

async fn backlog_steps(
    ctx: &Ctx,
    daemon: &mut Daemon,
    r: &mut BacklogResult,
    stage: &AtomicU8,
    progress: Arc<AtomicU64>,
) -> Res<()> {
    let pid = daemon.pid();
    // Fill: the sink refuses everything.
    let spec = LoadSpec {
        urls: vec![format!("http://{}/hooks/clickup", daemon.addr)],
        connections: ctx.opts.backlog_connections,
        stop: Stop::Accepted(r.events),
        wrap: false,
        server_pids: vec![pid],
        keep_answers: false,
        progress,
    };
    let load = run_load(spec, ctx.pool.clone(), &ctx.meter).await?;
    r.fill_s = load.window().as_secs_f64();
    r.fill_rps = load.accepted.len() as f64 / r.fill_s;
    r.fill_p50_ms = percentile_ms(&load.tally.latencies, 50.0);
    r.fill_p99_ms = percentile_ms(&load.tally.latencies, 99.0);
    r.fill_cpu = load.cpu.clone();
    r.errors = load.tally.error_kinds.clone();
    if load.pool_exhausted {
        r.problems
            .push("ran out of pre-built requests: raise --requests".into());
    }
    if load.gave_up {
        r.problems.push(format!(
            "a client gave up after {GIVE_UP_AFTER} consecutive failures"
        ));
    }
    let accepted = load.accepted.len() as i64;
    let last_acceptance = load.accepted.last().map(|(_, t)| *t);

    // Wait until the router has made a pending delivery of every event.
    stage.store(STAGE_ROUTING, Ordering::SeqCst);
    let mut conn = open_db(&daemon.db_path()).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (unrouted, pending) = db_backlog(&mut conn).await?;
        if unrouted == 0 && pending >= accepted {
            r.pending_at_full = Some(pending);
            r.router_lag_s = secs_between(last_acceptance, Some(Instant::now()));
            r.rss_at_full_mb = rss_mb(pid, "VmRSS:");
            break;
        }
        if Instant::now() >= deadline {
            r.pending_at_full = Some(pending);
            r.problems.push(format!(
                "router had not caught up 300 s after the fill: {unrouted} unrouted events, {pending} pending deliveries"
            ));
            r.rss_at_full_mb = rss_mb(pid, "VmRSS:");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sqlx::Connection::close(conn).await?;
    let sink_before = ctx.sink.counts();
    r.refused_attempts = sink_before.refused;
    r.refused_per_s = sink_before.refused as f64 / load.window_start.elapsed().as_secs_f64();
    if sink_before.ok > 0 {
        r.problems.push(format!(
            "the sink answered 200 {} times while failing",
            sink_before.ok
        ));
    }

    // Drain: the sink recovers.
    stage.store(STAGE_DRAIN, Ordering::SeqCst);
    let before = ctx.meter.snap(Some(pid));
    let switch = Instant::now();
    ctx.sink.fail.store(false, Ordering::SeqCst);
    let all = wait_all_arrived(&ctx.sink, &load.accepted, switch + ctx.opts.drain_timeout).await;
    let after = ctx.meter.snap(Some(pid));
    r.drain_cpu = ctx.meter.between(&before, &after);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrivals = ctx.sink.arrivals();
    let d = compare(&load.accepted, &arrivals, (switch, switch));
    r.missing = d.missing;
    r.extra = d.extra;
    r.sink = ctx.sink.counts();
    r.first_arrival_after_switch_s = secs_between(Some(switch), d.first_arrival);
    r.drain_s = secs_between(Some(switch), d.last_arrival);
    r.drain_rps = r.drain_s.map(|s| arrivals.len() as f64 / s);
    if !all {
        r.problems.push(format!(
            "{} events had not reached the sink {} s after it recovered",
            d.missing,
            ctx.opts.drain_timeout.as_secs_f64()
        ));
    }
    if r.sink.dup_keys > 0 || r.sink.dup_events > 0 {
        r.problems.push(format!(
            "duplicates at the sink: {} repeated Idempotency-Keys, {} repeated events",
            r.sink.dup_keys, r.sink.dup_events
        ));
    }
    if r.sink.no_key > 0 || r.sink.unparsable > 0 {
        r.problems.push(format!(
            "{} messages without Idempotency-Key, {} unparsable",
            r.sink.no_key, r.sink.unparsable
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- main

/// PostgreSQL against SQLite, and each PostgreSQL instance count against one
/// instance: (name, value), for the table and the JSON report.
fn store_ratios(bridges: &[FlowResult]) -> Vec<(String, f64)> {
    let find = |postgres: bool, instances: usize| {
        bridges.iter().find(|b| {
            b.config
                == Some(Config {
                    postgres,
                    instances,
                })
        })
    };
    let delivered = |b: &FlowResult| b.delivered_rps.unwrap_or(f64::NAN);
    let opt = |v: Option<f64>| v.unwrap_or(f64::NAN);
    let mut out = Vec::new();
    if let (Some(pg), Some(lite)) = (find(true, 1), find(false, 1)) {
        out.push((
            "postgres_x1_delivered_over_sqlite".into(),
            ratio(delivered(pg), delivered(lite)),
        ));
        out.push((
            "postgres_x1_accepted_over_sqlite".into(),
            ratio(pg.accepted_rps, lite.accepted_rps),
        ));
        out.push((
            "postgres_x1_client_p99_over_sqlite".into(),
            ratio(pg.client_p99_ms, lite.client_p99_ms),
        ));
        out.push((
            "postgres_x1_daemon_cpu_per_event_over_sqlite".into(),
            ratio(opt(pg.daemon_us_per_event), opt(lite.daemon_us_per_event)),
        ));
    }
    if let Some(one) = find(true, 1) {
        for b in bridges {
            let Some(c) = b.config.filter(|c| c.postgres && c.instances > 1) else {
                continue;
            };
            let n = c.instances;
            out.push((
                format!("postgres_x{n}_delivered_over_x1"),
                ratio(delivered(b), delivered(one)),
            ));
            out.push((
                format!("postgres_x{n}_daemon_cpu_per_event_over_x1"),
                ratio(opt(b.daemon_us_per_event), opt(one.daemon_us_per_event)),
            ));
            out.push((
                format!("postgres_x{n}_postgres_cpu_per_event_over_x1"),
                ratio(opt(b.postgres_us_per_event), opt(one.postgres_us_per_event)),
            ));
        }
    }
    out
}

/// The stores-and-instances block: per run, rates, p99 and CPU per event.
fn print_stores(bridges: &[FlowResult], ratios: &[(String, f64)]) {
    println!();
    println!(
        "== stores and instances (cpu per event: from the start of the warm-up to the last arrival, over the events delivered) =="
    );
    println!(
        "{:<16} {:>10} {:>11} {:>8} {:>8} {:>8} {:>14} {:>14} {:>8} {:>8} {:>8}",
        "clickup-bridge",
        "accepted/s",
        "delivered/s",
        "cli p99",
        "e2e p99",
        "span s",
        "daemon us/evt",
        "postgres us/evt",
        "daemon",
        "postgres",
        "other"
    );
    for b in bridges {
        let whole = b.whole_cpu.clone().unwrap_or_default();
        println!(
            "{:<16} {:>10.0} {:>11} {:>8.2} {:>8} {:>8} {:>14} {:>14} {:>8.2} {:>8.2} {:>8.2}",
            b.config.map(|c| c.label()).unwrap_or_default(),
            b.accepted_rps,
            fmt_opt(b.delivered_rps, 0),
            b.client_p99_ms,
            fmt_opt(b.e2e_p99_ms, 1),
            fmt_opt(b.whole_s, 1),
            fmt_opt(b.daemon_us_per_event, 0),
            fmt_opt(b.postgres_us_per_event, 0),
            whole.server,
            whole.db,
            whole.other
        );
    }
    println!("(daemon, postgres, other: cores over the same span; x2 and x3 sum their instances)");
    for b in bridges {
        if let (Some(c), Some(db)) = (b.config, b.db)
            && let Some(commits) = db.commits
        {
            println!(
                "{}: {commits} PostgreSQL transactions committed, {:.1} per event",
                c.label(),
                ratio(commits as f64, db.events as f64)
            );
        }
    }
    println!();
    println!("{:<48} {:>8}", "ratio", "value");
    for (name, v) in ratios {
        println!("{name:<48} {v:>8.3}");
    }
}

fn cpu_cols(c: &CpuUse) -> String {
    format!(
        "{:>7.2} {:>7.2} {:>7.2} {:>7.2}",
        c.client, c.server, c.sink, c.other
    )
}

fn main() -> Result<(), BoxError> {
    let opts = parse_options()?;
    let cores = available_cores();
    println!(
        "e2e bench: {} connections, {} client threads, {} forwarder workers, {} sink workers, {} s warm-up + {} s per phase, backlog {}, {} cores",
        opts.connections,
        opts.client_threads,
        opts.server_workers,
        opts.sink_workers,
        opts.warmup.as_secs_f64(),
        opts.duration.as_secs_f64(),
        opts.backlog,
        cores
    );
    // Phase 3 replaces refused requests with fresh ones: leave some room.
    let pool_len = opts.requests.max(opts.backlog + opts.backlog / 10 + 1000);
    let pool = prebuild_pool(pool_len)?;
    let body_len = body_len(&pool);
    let rt = loadgen_runtime(opts.client_threads)?;

    // The sink runs for the whole bench; its threads are the ones that
    // appear when it starts.
    let sink = Arc::new(Sink::default());
    let tids_before = own_tids();
    let sink_server = start_server("sink", opts.sink_workers, sink_config(sink.clone()))?;
    std::thread::sleep(Duration::from_millis(300));
    let sink_tids: HashSet<u32> = own_tids().difference(&tids_before).copied().collect();
    let mut meter = Meter::new(sink_tids);
    let cluster = if opts.configs.iter().any(|c| c.postgres) {
        let t = Instant::now();
        let cluster = common::pg::Cluster::start()
            .map_err(|e| format!("starting the PostgreSQL cluster: {e}"))?;
        println!(
            "PostgreSQL cluster on 127.0.0.1:{} (postmaster {}) started in {:.1} s",
            cluster.port,
            cluster.postmaster_pid(),
            t.elapsed().as_secs_f64()
        );
        meter.db_pid = Some(cluster.postmaster_pid());
        Some(cluster)
    } else {
        None
    };
    let ctx = Ctx {
        sink_url: format!("http://{}/slack", sink_server.addr),
        opts: opts.clone(),
        pool,
        sink,
        meter,
        cluster,
    };

    let (naive, bridges, backlog) = rt.block_on(async {
        let naive = run_naive(&ctx)
            .await
            .map_err(|e| format!("phase 1 (naive forwarder): {e}"))?;
        println!(
            "phase 1 naive forwarder: {:.0} events/s, client p50 {:.2} ms, p99 {:.2} ms, errors {}",
            naive.accepted_rps, naive.client_p50_ms, naive.client_p99_ms, naive.errors
        );
        let mut bridges = Vec::new();
        for config in &ctx.opts.configs {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let bridge = run_bridge(&ctx, *config)
                .await
                .map_err(|e| format!("phase 2 (clickup-bridge, {}): {e}", config.label()))?;
            println!(
                "phase 2 clickup-bridge {}: {:.0} accepted/s, {} delivered/s, e2e p50 {} ms, p99 {} ms, errors {}",
                config.label(),
                bridge.accepted_rps,
                fmt_opt(bridge.delivered_rps, 0),
                fmt_opt(bridge.e2e_p50_ms, 2),
                fmt_opt(bridge.e2e_p99_ms, 2),
                bridge.errors
            );
            bridges.push(bridge);
        }
        let backlog = if ctx.opts.backlog > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            println!(
                "phase 3 backlog: {} events while the sink answers 503 ({} clients)",
                ctx.opts.backlog, ctx.opts.backlog_connections
            );
            Some(
                run_backlog(&ctx)
                    .await
                    .map_err(|e| format!("phase 3 (backlog): {e}"))?,
            )
        } else {
            None
        };
        sink_server.stop().await?;
        Ok::<_, BoxError>((naive, bridges, backlog))
    })?;
    let bridge = bridges.first().ok_or("phase 2 did not run")?;

    println!();
    println!("== e2e: signed ClickUp events to a Slack-shaped sink, 1 round ==");
    println!(
        "{:<30} {:>10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>5} {:>7} {:>6}   {:>7} {:>7} {:>7} {:>7}",
        "phase",
        "accepted/s",
        "delivered/s",
        "cli p50",
        "cli p99",
        "e2e p50",
        "e2e p99",
        "dups",
        "missing",
        "errors",
        "client",
        "server",
        "sink",
        "other"
    );
    let row = |name: &str, r: &FlowResult| {
        println!(
            "{:<30} {:>10.0} {:>11} {:>8.2} {:>8.2} {:>8} {:>8} {:>5} {:>7} {:>6}   {}",
            name,
            r.accepted_rps,
            fmt_opt(r.delivered_rps, 0),
            r.client_p50_ms,
            r.client_p99_ms,
            fmt_opt(r.e2e_p50_ms, 2),
            fmt_opt(r.e2e_p99_ms, 2),
            r.duplicates,
            r.missing,
            r.errors,
            cpu_cols(&r.cpu)
        );
    };
    row("1 naive forwarder (sync)", &naive);
    for b in &bridges {
        let label = b.config.map(|c| c.label()).unwrap_or_default();
        row(&format!("2 clickup-bridge {label}"), b);
    }
    if let Some(tail) = &bridge.tail_cpu {
        println!(
            "{:<30} {:>10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>5} {:>7} {:>6}   {}",
            "  2 after the load (tail)",
            "",
            format!("{} s", fmt_opt(bridge.tail_s, 1)),
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            cpu_cols(tail)
        );
    }
    println!(
        "(ms; e2e = from the client reading the 200 to the sink receiving the message; cpu in cores during the window: client = load generator, server = forwarder or daemon)"
    );
    let naive_rps = naive.delivered_rps.unwrap_or(naive.accepted_rps);
    let bridge_delivered = bridge.delivered_rps.unwrap_or(f64::NAN);
    let ratios = [
        (
            "bridge delivered/s / naive/s",
            ratio(bridge_delivered, naive_rps),
        ),
        (
            "bridge accepted/s / naive/s",
            ratio(bridge.accepted_rps, naive_rps),
        ),
        (
            "bridge client p99 / naive client p99",
            ratio(bridge.client_p99_ms, naive.client_p99_ms),
        ),
        (
            "bridge e2e p99 / naive client p99",
            ratio(bridge.e2e_p99_ms.unwrap_or(f64::NAN), naive.client_p99_ms),
        ),
    ];
    println!();
    println!(
        "{:<40} {:>8}   (clickup-bridge {})",
        "ratio",
        "value",
        bridge.config.map(|c| c.label()).unwrap_or_default()
    );
    for (name, v) in &ratios {
        println!("{name:<40} {v:>8.3}");
    }
    let store_ratios = store_ratios(&bridges);
    if bridges.len() > 1 || bridges.iter().any(|b| b.config.is_some_and(|c| c.postgres)) {
        print_stores(&bridges, &store_ratios);
    }
    println!();
    println!(
        "clickup-bridge: {} events accepted (warm-up included), {} at the sink, RSS idle {} MB, peak {} MB",
        bridge.accepted_total,
        bridge.sink.distinct_events,
        fmt_opt(bridge.idle_rss_mb, 1),
        fmt_opt(bridge.peak_rss_mb, 1)
    );
    println!(
        "clickup-bridge threads, cores during the window: {}",
        bridge.cpu.threads_line()
    );
    if let Some(tail) = &bridge.tail_cpu {
        println!(
            "clickup-bridge threads, cores after the load: {}",
            tail.threads_line()
        );
    }
    if let Some(db) = &bridge.db {
        println!(
            "clickup-bridge {} after exit: {} events, {} delivered, {} pending, {} dead, {} attempts",
            bridge.config.map(|c| c.label()).unwrap_or_default(),
            db.events,
            db.delivered,
            db.pending,
            db.dead,
            db.attempts
        );
    }

    if let Some(b) = &backlog {
        println!();
        println!(
            "== backlog: {} events while the sink answers 503, then drained ==",
            b.events
        );
        println!(
            "fill      {:>8.1} s  {:>7.0} accepted/s  client p50 {:.2} ms  p99 {:.2} ms  cpu client {:.2} daemon {:.2} sink {:.2} other {:.2}",
            b.fill_s,
            b.fill_rps,
            b.fill_p50_ms,
            b.fill_p99_ms,
            b.fill_cpu.client,
            b.fill_cpu.server,
            b.fill_cpu.sink,
            b.fill_cpu.other
        );
        println!(
            "routing   {:>8} s after the last acceptance: {} deliveries pending; {} refused attempts so far ({:.0}/s)",
            fmt_opt(b.router_lag_s, 1),
            b.pending_at_full
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into()),
            b.refused_attempts,
            b.refused_per_s
        );
        println!(
            "drain     {:>8} s  {:>7} delivered/s  first message {} s after the switch  cpu daemon {:.2} sink {:.2} other {:.2}",
            fmt_opt(b.drain_s, 1),
            fmt_opt(b.drain_rps, 0),
            fmt_opt(b.first_arrival_after_switch_s, 2),
            b.drain_cpu.server,
            b.drain_cpu.sink,
            b.drain_cpu.other
        );
        println!("threads   fill: {}", b.fill_cpu.threads_line());
        println!("          drain: {}", b.drain_cpu.threads_line());
        println!(
            "RSS       idle {} MB, peak during backlog {} MB, at {} pending {} MB, peak during drain {} MB, after drain {} MB (VmHWM {} MB)",
            fmt_opt(b.idle_rss_mb, 1),
            fmt_opt(b.peak_fill_rss_mb, 1),
            b.events,
            fmt_opt(b.rss_at_full_mb, 1),
            fmt_opt(b.peak_drain_rss_mb, 1),
            fmt_opt(b.after_drain_rss_mb, 1),
            fmt_opt(b.hwm_mb, 1)
        );
        println!(
            "sink      {} distinct events, {} duplicates (keys {}, events {}), {} missing, {} extra; daemon exit: {}",
            b.sink.distinct_events,
            b.sink.dup_keys.max(b.sink.dup_events),
            b.sink.dup_keys,
            b.sink.dup_events,
            b.missing,
            b.extra,
            b.exit
        );
        if let Some(db) = &b.db {
            println!(
                "SQLite    after exit: {} events, {} delivered, {} pending, {} dead, {} attempts",
                db.events, db.delivered, db.pending, db.dead, db.attempts
            );
        }
    }

    let mut problems: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let keyed: Vec<(String, &FlowResult)> = std::iter::once(("naive".to_owned(), &naive))
        .chain(bridges.iter().map(|b| {
            (
                format!(
                    "clickup_bridge {}",
                    b.config.map(|c| c.label()).unwrap_or_default()
                ),
                b,
            )
        }))
        .collect();
    for (key, r) in keyed {
        problems.extend(r.problems.iter().map(|p| format!("{key}: {p}")));
        notes.extend(r.notes.iter().map(|p| format!("{key}: {p}")));
    }
    if let Some(b) = &backlog {
        problems.extend(b.problems.iter().map(|p| format!("backlog: {p}")));
        notes.extend(b.notes.iter().map(|p| format!("backlog: {p}")));
        if !b.errors.is_empty() {
            notes.push(format!(
                "backlog: client errors (each replaced by a fresh event): {:?}",
                b.errors
            ));
        }
    }
    println!();
    for n in &notes {
        println!("note: {n}");
    }
    print_checks(
        &problems,
        "no client errors; every accepted event reached the sink exactly once; the daemon exited 0",
    );

    let report = json!({
        "bench": "e2e",
        "unix_time": unix_time(),
        "machine": {"cores": cores},
        "options": {
            "duration_s": opts.duration.as_secs_f64(),
            "warmup_s": opts.warmup.as_secs_f64(),
            "connections": opts.connections,
            "settle_s": opts.settle.as_secs_f64(),
            "backlog": opts.backlog,
            "backlog_connections": opts.backlog_connections,
            "drain_timeout_s": opts.drain_timeout.as_secs_f64(),
            "requests_prebuilt": pool_len,
            "client_threads": opts.client_threads,
            "server_workers": opts.server_workers,
            "sink_workers": opts.sink_workers,
            "phase_2_runs": opts.configs.iter().map(Config::label).collect::<Vec<_>>(),
            "body_bytes": body_len,
        },
        "phases": {
            "naive_forwarder": naive.json(),
            "clickup_bridge": bridge.json(),
            "clickup_bridge_by_store": bridges
                .iter()
                .map(|b| (b.config.map(|c| c.key()).unwrap_or_default(), b.json()))
                .collect::<serde_json::Map<_, _>>(),
            "backlog": backlog.as_ref().map(BacklogResult::json),
        },
        "ratios": {
            "bridge_delivered_over_naive": ratios[0].1,
            "bridge_accepted_over_naive": ratios[1].1,
            "bridge_client_p99_over_naive_client_p99": ratios[2].1,
            "bridge_e2e_p99_over_naive_client_p99": ratios[3].1,
            "stores": store_ratios
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<_, _>>(),
        },
        "problems": problems,
        "notes": notes,
    });
    write_report(&opts.out, &report, problems.len())
}
