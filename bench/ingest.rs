//! Load run: durable ingest of signed ClickUp webhooks, against two baselines
//! measured in the same run on the same machine.
//!
//! Phase A "ceiling": a bare actix-web server that reads the body and answers.
//! Phase B "verifying": the same plus HMAC-SHA256 verification and a JSON parse.
//! Phase C "clickup-bridge": the real daemon, committing every event to SQLite
//! (or, with `--store postgres --instances N`, N daemons on one PostgreSQL).
//!
//! Run with `cargo bench --bench ingest` (see bench/README.md for the options).

#[path = "common/mod.rs"]
mod common;

use actix_web::{HttpResponse, web};
use clap::{Parser, ValueEnum};
use common::{
    BoxError, Daemon, Launch, LoadOut, LoadSpec, Meter, Prebuilt, Res, Server, Stop,
    available_cores, baseline_answer, body_len, fmt_opt, loadgen_runtime, open_db, percentile_ms,
    prebuild_pool, print_checks, ratio, rss_mb, start_daemon, start_server, unix_time,
    write_report,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

const ROUTES_YAML: &str =
    "version: 1\nsources:\n  clickup:\n    verify: clickup\n    secret: bench-secret\nroutes: []\n";

// ---------------------------------------------------------------- options

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ingest",
    about = "Durable ingest of signed ClickUp webhooks against a bare and a verifying actix-web server"
)]
struct Options {
    /// Measured seconds per phase.
    #[arg(long = "duration", default_value_t = 10.0)]
    duration_s: f64,
    /// Unmeasured warm-up seconds per phase.
    #[arg(long = "warmup", default_value_t = 1.0)]
    warmup_s: f64,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Repeat A, B, C this many times; report medians.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Distinct signed requests built up front.
    #[arg(long, default_value_t = 400_000)]
    requests: usize,
    /// Load generator threads.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// actix workers of the A and B servers (the daemon uses one per core).
    #[arg(long, default_value_t = 2)]
    server_workers: usize,
    /// Phase C's store: sqlite, or postgres (a throwaway cluster).
    #[arg(long, value_enum, default_value = "sqlite")]
    store: Store,
    /// Phase C on PostgreSQL: daemons sharing one database.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// The clickup-bridge binary (default: the one cargo built for this bench).
    #[arg(long = "bin", env = "CLICKUP_BRIDGE_BENCH_BIN")]
    bin: Option<PathBuf>,
    /// The daemon's RUST_LOG.
    #[arg(long, default_value = "warn")]
    log: String,
    /// JSON report.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/results/ingest-latest.json"))]
    out: PathBuf,
    /// `cargo bench` passes --bench to harness=false targets.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Store {
    Sqlite,
    Postgres,
}

impl Options {
    fn store_label(&self) -> String {
        if self.postgres() {
            format!("PostgreSQL x{}", self.instances)
        } else {
            "SQLite, FULL".into()
        }
    }

    fn postgres(&self) -> bool {
        self.store == Store::Postgres
    }

    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_s)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }
}

fn parse_options() -> Res<Options> {
    let o = Options::parse();
    let counts = [
        o.connections,
        o.rounds,
        o.requests,
        o.client_threads,
        o.server_workers,
        o.instances,
    ];
    if counts.contains(&0) {
        return Err("counts must be at least 1 (see --help)".into());
    }
    if o.duration_s <= 0.0 || o.warmup_s < 0.0 {
        return Err("--duration must be positive and --warmup not negative".into());
    }
    if o.instances > 1 && !o.postgres() {
        return Err("several instances share one PostgreSQL database: add --store postgres".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------- baselines

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Ceiling,
    Verifying,
    Bridge,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Ceiling, Phase::Verifying, Phase::Bridge];

    fn key(self) -> &'static str {
        match self {
            Phase::Ceiling => "ceiling",
            Phase::Verifying => "verifying",
            Phase::Bridge => "clickup_bridge",
        }
    }

    fn label(self, opts: &Options) -> String {
        match self {
            Phase::Ceiling => "A ceiling (read body, 200)".into(),
            Phase::Verifying => "B verifying (HMAC + JSON parse)".into(),
            Phase::Bridge => format!("C clickup-bridge ({})", opts.store_label()),
        }
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().finish()
}

async fn ceiling(body: web::Bytes) -> HttpResponse {
    std::hint::black_box(body.len());
    baseline_answer()
}

/// Phase A or B's server, in-process.
fn start_baseline(phase: Phase, workers: usize) -> Res<Server> {
    start_server(
        &format!("baseline-{}", phase.key()),
        workers,
        Arc::new(move |c: &mut web::ServiceConfig| {
            c.route("/healthz", web::get().to(healthz));
            match phase {
                Phase::Verifying => c.route("/hooks/clickup", web::post().to(common::verifying)),
                _ => c.route("/hooks/clickup", web::post().to(ceiling)),
            };
        }),
    )
}

/// Ids of the clickup events in the SQLite file (read after the daemon exited).
async fn stored_event_ids(db: &Path) -> Res<HashSet<String>> {
    let mut conn = open_db(db).await?;
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM events WHERE source = 'clickup'")
        .fetch_all(&mut conn)
        .await?;
    sqlx::Connection::close(conn).await?;
    Ok(ids.into_iter().collect())
}

// ---------------------------------------------------------------- load

/// Phase load: warm-up, then the measured window, through the shared loop.
async fn run_load(
    urls: Vec<String>,
    pool: Arc<Vec<Prebuilt>>,
    opts: &Options,
    wrap: bool,
    server_pids: Vec<u32>,
    meter: &Meter,
) -> Res<LoadOut> {
    let spec = LoadSpec {
        urls,
        connections: opts.connections,
        stop: Stop::Timed {
            warmup: opts.warmup(),
            duration: opts.duration(),
        },
        wrap,
        server_pids,
        keep_answers: true,
        progress: Arc::new(AtomicU64::new(0)),
    };
    common::run_load(spec, pool, meter).await
}

// ---------------------------------------------------------------- results

#[derive(Clone, Debug)]
struct PhaseResult {
    phase: Phase,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    client_cores: f64,
    server_cores: f64,
    /// The PostgreSQL cluster (phase C on PostgreSQL).
    db_cores: f64,
    machine_busy: f64,
    other_cores: f64,
    idle_rss_mb: Option<f64>,
    peak_rss_mb: Option<f64>,
    after_rss_mb: Option<f64>,
    /// Phase C: every 200 of the phase (warm-up included).
    accepted: Option<u64>,
    /// Phase C: problems found by the durability checks.
    problems: Vec<String>,
    /// Phase C: notes that are not failures.
    notes: Vec<String>,
}

fn summarize(phase: Phase, load: &LoadOut) -> PhaseResult {
    let ok = load.tally.latencies.len() as u64;
    PhaseResult {
        phase,
        rps: ok as f64 / load.window().as_secs_f64(),
        p50_ms: percentile_ms(&load.tally.latencies, 50.0),
        p99_ms: percentile_ms(&load.tally.latencies, 99.0),
        ok,
        errors: load.tally.errors,
        error_kinds: load.tally.error_kinds.clone(),
        client_cores: load.cpu.client,
        server_cores: load.cpu.server,
        db_cores: load.cpu.db,
        machine_busy: load.cpu.machine_busy,
        other_cores: load.cpu.other,
        idle_rss_mb: None,
        peak_rss_mb: None,
        after_rss_mb: None,
        accepted: None,
        problems: if load.pool_exhausted {
            vec!["ran out of pre-built requests: raise --requests".into()]
        } else {
            Vec::new()
        },
        notes: Vec::new(),
    }
}

async fn run_baseline(
    phase: Phase,
    pool: Arc<Vec<Prebuilt>>,
    opts: &Options,
    meter: &Meter,
) -> Res<PhaseResult> {
    let server = start_baseline(phase, opts.server_workers)?;
    let url = format!("http://{}/hooks/clickup", server.addr);
    let load = run_load(vec![url], pool, opts, true, Vec::new(), meter).await;
    server.stop().await?;
    let load = load?;
    Ok(summarize(phase, &load))
}

/// Ids of the clickup events in a PostgreSQL database.
async fn pg_event_ids(url: &str) -> Res<HashSet<String>> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM events WHERE source = 'clickup'")
        .fetch_all(&mut conn)
        .await?;
    conn.close().await?;
    Ok(ids.into_iter().collect())
}

async fn run_bridge(
    pool: Arc<Vec<Prebuilt>>,
    opts: &Options,
    meter: &Meter,
    cluster: Option<&common::pg::Cluster>,
    launch: &Launch,
) -> Res<PhaseResult> {
    let store = match cluster {
        Some(c) => Some(c.new_database()?),
        None => None,
    };
    let mut daemons: Vec<Daemon> = Vec::with_capacity(opts.instances);
    for _ in 0..opts.instances {
        let started = start_daemon(
            launch,
            "clickup-bridge-bench-",
            ROUTES_YAML,
            store.as_deref(),
            // Settings from the caller's environment must not leak into the run.
            |name| name.starts_with("CLICKUP_BRIDGE_"),
        )
        .await;
        match started {
            Ok(d) => daemons.push(d),
            Err(e) => {
                daemons.iter_mut().for_each(Daemon::kill_now);
                return Err(e);
            }
        }
    }
    let pids: Vec<u32> = daemons.iter().map(Daemon::pid).collect();
    let max_rss = |key: &str| {
        pids.iter()
            .filter_map(|pid| rss_mb(*pid, key))
            .reduce(f64::max)
    };
    let idle = max_rss("VmRSS:");
    let urls = daemons
        .iter()
        .map(|d| format!("http://{}/hooks/clickup", d.addr))
        .collect();
    let load = run_load(urls, pool, opts, false, pids.clone(), meter).await;
    let peak = max_rss("VmHWM:");
    let after = max_rss("VmRSS:");
    let mut exit_problems = Vec::new();
    for (i, d) in daemons.iter_mut().enumerate() {
        let exit = d.stop().await;
        exit_problems.extend(
            d.exit_problem(&exit)
                .map(|p| format!("instance {}: {p}", i + 1)),
        );
    }
    let load = load?;
    let mut r = summarize(Phase::Bridge, &load);
    r.idle_rss_mb = idle;
    r.peak_rss_mb = peak;
    r.after_rss_mb = after;
    r.problems.extend(exit_problems);

    // Every 200 must be a fresh event with its own id.
    let mut ids = HashSet::with_capacity(load.answers.len());
    let (mut dups, mut unparsable, mut repeated) = (0u64, 0u64, 0u64);
    for a in &load.answers {
        match serde_json::from_slice::<Value>(a) {
            Ok(v) => {
                if v["duplicate"] != Value::Bool(false) {
                    dups += 1;
                }
                match v["event_id"].as_str() {
                    Some(id) if id.starts_with("evt_") => {
                        if !ids.insert(id.to_owned()) {
                            repeated += 1;
                        }
                    }
                    _ => unparsable += 1,
                }
            }
            Err(_) => unparsable += 1,
        }
    }
    r.accepted = Some(load.answers.len() as u64);
    if dups > 0 {
        r.problems
            .push(format!("{dups} answers did not say \"duplicate\":false"));
    }
    if repeated > 0 {
        r.problems
            .push(format!("{repeated} answers repeated an event_id"));
    }
    if unparsable > 0 {
        r.problems
            .push(format!("{unparsable} 200 answers lacked an evt_ event_id"));
    }

    // After a clean exit, every acknowledged id must be in the store.
    let store_name = if opts.postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let stored = match (&store, daemons.first()) {
        (Some(url), _) => pg_event_ids(url).await,
        (None, Some(d)) => stored_event_ids(&d.db_path()).await,
        (None, None) => Err("no daemon ran".into()),
    };
    match stored {
        Ok(stored) => {
            let missing = ids.iter().filter(|id| !stored.contains(*id)).count();
            if missing > 0 {
                r.problems.push(format!(
                    "{missing} acknowledged events missing from {store_name} after exit"
                ));
            }
            r.notes.push(format!(
                "{store_name} after exit: {} clickup events stored, {} of {} acknowledged ids found",
                stored.len(),
                ids.len() - missing,
                ids.len()
            ));
        }
        Err(e) => r.notes.push(format!(
            "could not read the {store_name} store after exit (skipped): {e}"
        )),
    }
    Ok(r)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median_opt(v: Vec<Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.into_iter().flatten().collect();
    if v.is_empty() { None } else { Some(median(v)) }
}

/// The median of each figure over the rounds, errors summed.
fn combine(rounds: &[Vec<PhaseResult>], phase: Phase) -> Option<PhaseResult> {
    let all: Vec<&PhaseResult> = rounds
        .iter()
        .flatten()
        .filter(|r| r.phase == phase)
        .collect();
    let first = (*all.first()?).clone();
    let pick = |f: fn(&PhaseResult) -> f64| median(all.iter().map(|r| f(r)).collect());
    let pick_opt =
        |f: fn(&PhaseResult) -> Option<f64>| median_opt(all.iter().map(|r| f(r)).collect());
    let mut error_kinds = BTreeMap::new();
    for r in &all {
        for (k, v) in &r.error_kinds {
            *error_kinds.entry(k.clone()).or_default() += v;
        }
    }
    Some(PhaseResult {
        phase,
        rps: pick(|r| r.rps),
        p50_ms: pick(|r| r.p50_ms),
        p99_ms: pick(|r| r.p99_ms),
        ok: all.iter().map(|r| r.ok).sum(),
        errors: all.iter().map(|r| r.errors).sum(),
        error_kinds,
        client_cores: pick(|r| r.client_cores),
        server_cores: pick(|r| r.server_cores),
        db_cores: pick(|r| r.db_cores),
        machine_busy: pick(|r| r.machine_busy),
        other_cores: pick(|r| r.other_cores),
        idle_rss_mb: pick_opt(|r| r.idle_rss_mb),
        peak_rss_mb: pick_opt(|r| r.peak_rss_mb),
        after_rss_mb: pick_opt(|r| r.after_rss_mb),
        accepted: all.iter().map(|r| r.accepted).sum(),
        problems: all.iter().flat_map(|r| r.problems.clone()).collect(),
        notes: first.notes.clone(),
    })
}

fn phase_json(r: &PhaseResult) -> Value {
    json!({
        "requests_per_sec": r.rps,
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
        "ok_in_window": r.ok,
        "errors": r.errors,
        "error_kinds": r.error_kinds,
        "client_cpu_cores": r.client_cores,
        "server_cpu_cores": r.server_cores,
        "postgres_cpu_cores": r.db_cores,
        "server_cpu_us_per_event": ratio(r.server_cores * 1e6, r.rps),
        "postgres_cpu_us_per_event": ratio(r.db_cores * 1e6, r.rps),
        "machine_busy": r.machine_busy,
        "other_cpu_cores": r.other_cores,
        "idle_rss_mb": r.idle_rss_mb,
        "peak_rss_mb": r.peak_rss_mb,
        "after_rss_mb": r.after_rss_mb,
        "accepted_events": r.accepted,
        "problems": r.problems,
        "notes": r.notes,
    })
}

// ---------------------------------------------------------------- main

fn main() -> Result<(), BoxError> {
    let opts = parse_options()?;
    let launch = Launch::new(opts.bin.clone(), None, &opts.log)?;
    let mut meter = Meter::new(HashSet::new());
    let cluster = if opts.postgres() {
        let cluster = common::pg::Cluster::start()
            .map_err(|e| format!("starting the PostgreSQL cluster: {e}"))?;
        println!(
            "PostgreSQL cluster on 127.0.0.1:{} (postmaster {})",
            cluster.port,
            cluster.postmaster_pid()
        );
        meter.db_pid = Some(cluster.postmaster_pid());
        Some(cluster)
    } else {
        None
    };
    let cores = available_cores();
    println!(
        "ingest bench: {} connections, {} client threads, {} server workers, {} s warm-up + {} s per phase, {} round(s), {} cores",
        opts.connections,
        opts.client_threads,
        opts.server_workers,
        opts.warmup_s,
        opts.duration_s,
        opts.rounds,
        cores
    );
    let pool = prebuild_pool(opts.requests)?;
    let body_len = body_len(&pool);
    let rt = loadgen_runtime(opts.client_threads)?;

    let rounds: Vec<Vec<PhaseResult>> = rt.block_on(async {
        let mut rounds = Vec::new();
        for round in 1..=opts.rounds {
            let mut results = Vec::new();
            for phase in Phase::ALL {
                let r = match phase {
                    Phase::Bridge => {
                        run_bridge(pool.clone(), &opts, &meter, cluster.as_ref(), &launch).await
                    }
                    _ => run_baseline(phase, pool.clone(), &opts, &meter).await,
                }
                .map_err(|e| format!("round {round}, phase {}: {e}", phase.key()))?;
                println!(
                    "round {round} {:<34} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
                    phase.label(&opts),
                    r.rps,
                    r.p50_ms,
                    r.p99_ms,
                    r.errors
                );
                results.push(r);
                // Let sockets in TIME_WAIT and the page cache settle a little.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            rounds.push(results);
        }
        Ok::<_, BoxError>(rounds)
    })?;

    let combined: Vec<PhaseResult> = Phase::ALL
        .iter()
        .filter_map(|p| combine(&rounds, *p))
        .collect();
    let get = |p: Phase| combined.iter().find(|r| r.phase == p);
    let (Some(a), Some(b), Some(c)) = (
        get(Phase::Ceiling),
        get(Phase::Verifying),
        get(Phase::Bridge),
    ) else {
        return Err("a phase produced no result".into());
    };

    let title = if opts.rounds > 1 {
        format!("median of {} rounds", opts.rounds)
    } else {
        "1 round".to_string()
    };
    println!();
    println!("== ingest: signed ClickUp webhooks, {title} ==");
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>7} {:>11} {:>11} {:>10} {:>9} {:>9}",
        "phase",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "client cpu",
        "server cpu",
        "other cpu",
        "idle RSS",
        "peak RSS"
    );
    for r in &combined {
        println!(
            "{:<34} {:>10.0} {:>9.2} {:>9.2} {:>7} {:>11.2} {:>11.2} {:>10.2} {:>9} {:>9}",
            r.phase.label(&opts),
            r.rps,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.client_cores,
            r.server_cores,
            r.other_cores,
            r.idle_rss_mb
                .map(|v| format!("{v:.1} MB"))
                .unwrap_or_else(|| "-".into()),
            r.peak_rss_mb
                .map(|v| format!("{v:.1} MB"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    let ratios = [
        (
            "verifying / ceiling",
            ratio(b.rps, a.rps),
            ratio(b.p99_ms, a.p99_ms),
        ),
        (
            "clickup-bridge / verifying",
            ratio(c.rps, b.rps),
            ratio(c.p99_ms, b.p99_ms),
        ),
        (
            "clickup-bridge / ceiling",
            ratio(c.rps, a.rps),
            ratio(c.p99_ms, a.p99_ms),
        ),
    ];
    println!();
    println!("{:<34} {:>10} {:>9}", "ratio", "req/s", "p99");
    for (name, rps, p99) in &ratios {
        println!("{name:<34} {rps:>10.3} {p99:>9.2}");
    }
    println!();
    println!(
        "clickup-bridge: {} events acknowledged (warm-up included), RSS idle {} MB, peak {} MB, after load {} MB",
        c.accepted.unwrap_or(0),
        fmt_opt(c.idle_rss_mb, 1),
        fmt_opt(c.peak_rss_mb, 1),
        fmt_opt(c.after_rss_mb, 1)
    );
    println!(
        "clickup-bridge ({}): CPU per accepted event in the window: daemon{} {} us, PostgreSQL {} us ({:.2} and {:.2} cores)",
        opts.store_label(),
        if opts.instances > 1 { "s" } else { "" },
        fmt_opt(Some(ratio(c.server_cores * 1e6, c.rps)), 0),
        if opts.postgres() {
            fmt_opt(Some(ratio(c.db_cores * 1e6, c.rps)), 0)
        } else {
            "-".into()
        },
        c.server_cores,
        c.db_cores
    );
    for r in rounds.iter().flatten() {
        for n in &r.notes {
            println!("note: {n}");
        }
    }
    let machine: Vec<String> = combined
        .iter()
        .map(|r| format!("{} {:.0}%", r.phase.key(), r.machine_busy * 100.0))
        .collect();
    println!("machine CPU busy during the window: {}", machine.join(", "));
    let mut problems: Vec<String> = Vec::new();
    for r in &combined {
        if r.errors > 0 || !r.error_kinds.is_empty() {
            problems.push(format!("{}: errors {:?}", r.phase.key(), r.error_kinds));
        }
        for p in &r.problems {
            problems.push(format!("{}: {p}", r.phase.key()));
        }
    }
    print_checks(
        &problems,
        "every request answered 200; every clickup-bridge answer was a new event with its own id",
    );

    let per_round: Vec<Value> = rounds
        .iter()
        .map(|rs| {
            let mut m = serde_json::Map::new();
            for r in rs {
                m.insert(r.phase.key().into(), phase_json(r));
            }
            let f = |p: Phase| {
                rs.iter()
                    .find(|r| r.phase == p)
                    .map(|r| r.rps)
                    .unwrap_or(f64::NAN)
            };
            m.insert(
                "ratios".into(),
                json!({
                    "verifying_over_ceiling": ratio(f(Phase::Verifying), f(Phase::Ceiling)),
                    "bridge_over_verifying": ratio(f(Phase::Bridge), f(Phase::Verifying)),
                    "bridge_over_ceiling": ratio(f(Phase::Bridge), f(Phase::Ceiling)),
                }),
            );
            Value::Object(m)
        })
        .collect();
    let report = json!({
        "bench": "ingest",
        "unix_time": unix_time(),
        "machine": {"cores": cores},
        "options": {
            "duration_s": opts.duration_s,
            "warmup_s": opts.warmup_s,
            "connections": opts.connections,
            "rounds": opts.rounds,
            "requests_prebuilt": opts.requests,
            "client_threads": opts.client_threads,
            "server_workers": opts.server_workers,
            "store": if opts.postgres() { "postgres" } else { "sqlite" },
            "instances": opts.instances,
            "body_bytes": body_len,
        },
        "aggregate": if opts.rounds > 1 { "median" } else { "single" },
        "phases": {
            "ceiling": phase_json(a),
            "verifying": phase_json(b),
            "clickup_bridge": phase_json(c),
        },
        "ratios": {
            "requests_per_sec": {
                "verifying_over_ceiling": ratios[0].1,
                "bridge_over_verifying": ratios[1].1,
                "bridge_over_ceiling": ratios[2].1,
            },
            "p99": {
                "verifying_over_ceiling": ratios[0].2,
                "bridge_over_verifying": ratios[1].2,
                "bridge_over_ceiling": ratios[2].2,
            },
        },
        "rounds": per_round,
        "problems": problems,
    });
    write_report(&opts.out, &report, problems.len())
}
