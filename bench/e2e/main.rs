//! End-to-end bench: signed ClickUp events in, Slack-shaped messages out,
//! clickup-bridge next to two baselines measured in the same run.
//!
//! `compare` (the default) is the method of issue 11: the system under test
//! (the verifying handler, the naive forwarder, clickup-bridge; each its own
//! process) pinned to one CPU in turn, the load generator and the sink (this
//! process) to the other; 64 and 8 clients; rounds interleaved; medians and
//! per-round ratios. `backlog` is the flat-memory backlog run.
//! `instructions` counts the daemon's instructions per delivered event under
//! callgrind and can check them against a committed baseline. `baseline` is
//! how this binary serves a baseline in its own process.
//!
//! Run with `cargo bench --bench e2e -- [MODE] [OPTIONS]`; see
//! bench/README.md.

#[path = "../common/mod.rs"]
mod common;

mod backlog;
mod baselines;
mod bridge;
mod durable;
mod instructions;
mod report;
mod sink;

use bridge::DbCounts;
use clap::{Args, Parser, Subcommand};
use common::{
    BoxError, CpuUse, Daemon, GIVE_UP_AFTER, Launch, LoadOut, LoadSpec, Meter, Prebuilt, Res, Stop,
    allowed_cpus, available_cores, own_tids, percentile_ms, pin_self, prebuild_pool, rss_mb,
    start_server,
};
use serde_json::{Value, json};
use sink::{Sink, SinkCounts, compare, percentile_signed_ms, secs_between, wait_all_arrived};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- options

#[derive(Parser, Debug)]
#[command(
    name = "e2e",
    about = "End-to-end bench of clickup-bridge against a verifying handler and a naive forwarder"
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    shared: Shared,
    /// `cargo bench` passes --bench to harness=false targets.
    #[arg(long, hide = true, global = true)]
    bench: bool,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// The issue-11 method: systems pinned in turn, c64 and c8, rounds, medians, ratios (default).
    Compare(CompareOpts),
    /// The flat-memory backlog: N events while the sink refuses, then the drain.
    Backlog(backlog::BacklogOpts),
    /// The daemon's instructions per delivered event under callgrind; --check compares with the baseline file.
    Instructions(instructions::InstructionsOpts),
    /// Serve a baseline in this process (the bench starts it; not for direct use).
    #[command(hide = true)]
    Baseline {
        kind: baselines::Kind,
        #[arg(long)]
        sink: Option<String>,
        #[arg(long)]
        db: Option<PathBuf>,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
}

/// Options every mode shares.
#[derive(Args, Debug, Clone)]
struct Shared {
    /// The clickup-bridge binary to measure (default: the one cargo built for this bench).
    #[arg(long = "bin", global = true, env = "CLICKUP_BRIDGE_BENCH_BIN")]
    bin: Option<PathBuf>,
    /// CPU of the system under test (taskset -c).
    #[arg(long, global = true, default_value = "1")]
    server_cpu: String,
    /// CPU of the load generator and the sink (this process).
    #[arg(long, global = true, default_value = "0")]
    client_cpu: String,
    /// Do not pin anything (results are then not comparable with pinned runs).
    #[arg(long, global = true)]
    no_pin: bool,
    /// The daemon's RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    /// Load generator threads.
    #[arg(long, global = true, default_value_t = 2)]
    client_threads: usize,
    /// actix workers of the sink.
    #[arg(long, global = true, default_value_t = 1)]
    sink_workers: usize,
    /// clickup-bridge: the sink target's `concurrency` (deliveries in flight).
    #[arg(long, global = true, default_value_t = 32)]
    sink_concurrency: u32,
    /// Distinct signed requests built before any load (each run of the daemon needs fresh ones).
    #[arg(long, global = true, default_value_t = 400_000)]
    requests: usize,
    /// JSON report (default bench/results/e2e-MODE-latest.json).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
struct CompareOpts {
    /// Interleaved rounds; the tables show medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Client counts, each measured for every system.
    #[arg(long, value_delimiter = ',', default_value = "64,8")]
    connections: Vec<usize>,
    /// Measured seconds per run (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds at the start of each run (its deliveries count in delivered/s).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Longest wait after the load for the last messages, in seconds.
    #[arg(long, default_value_t = 120.0)]
    settle: f64,
    /// clickup-bridge's store: sqlite, postgres or both (postgres starts a throwaway cluster).
    #[arg(long, default_value = "sqlite")]
    store: String,
    /// On PostgreSQL: daemons sharing one database, one system per count.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    instances: Vec<usize>,
}

/// `compare` with its defaults, for a run without a mode.
#[derive(Parser)]
struct DefaultCompare {
    #[command(flatten)]
    opts: CompareOpts,
}

// ---------------------------------------------------------------- systems

/// Where clickup-bridge keeps its store, and how many instances share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub postgres: bool,
    pub instances: usize,
}

impl Config {
    fn store(&self) -> &'static str {
        if self.postgres {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    }
}

/// `--store` and `--instances` into clickup-bridge systems: SQLite with one
/// instance first, then PostgreSQL with each count.
fn configs(store: &str, instances: &[usize]) -> Res<Vec<Config>> {
    let (sqlite, postgres) = match store {
        "sqlite" => (true, false),
        "postgres" => (false, true),
        "both" => (true, true),
        other => return Err(format!("--store {other:?}: use sqlite, postgres or both").into()),
    };
    if instances.is_empty() || instances.contains(&0) {
        return Err("--instances needs counts of at least 1".into());
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// The actix-web handler that verifies and parses.
    Handler,
    /// The naive forwarder.
    Naive,
    /// The naive forwarder that stores events and deliveries in SQLite.
    Durable,
    Bridge(Config),
}

impl System {
    pub fn label(&self) -> String {
        match self {
            System::Handler => "verifying handler".into(),
            System::Naive => "naive forwarder".into(),
            System::Durable => "durable forwarder".into(),
            System::Bridge(c) if !c.postgres => "clickup-bridge".into(),
            System::Bridge(c) => format!("clickup-bridge {} x{}", c.store(), c.instances),
        }
    }

    pub fn key(&self) -> String {
        match self {
            System::Handler => "handler".into(),
            System::Naive => "naive".into(),
            System::Durable => "durable".into(),
            System::Bridge(c) if !c.postgres => "clickup_bridge".into(),
            System::Bridge(c) => format!("clickup_bridge_postgres_x{}", c.instances),
        }
    }

    /// Whether the system delivers to the sink.
    fn delivers(&self) -> bool {
        !matches!(self, System::Handler)
    }
}

// ---------------------------------------------------------------- one run

/// What the modes share: the pool, the sink, the meter, how processes under
/// test start.
pub struct Ctx {
    pub pool: Arc<Vec<Prebuilt>>,
    pub sink: Arc<Sink>,
    pub sink_url: String,
    pub meter: Meter,
    pub launch: Launch,
    /// The throwaway PostgreSQL cluster, when a system uses it.
    pub cluster: Option<common::pg::Cluster>,
}

/// One system at one client count in one round.
#[derive(Clone, Debug)]
pub struct Run {
    pub system: System,
    pub connections: usize,
    pub round: usize,
    /// 200s per second in the measured window.
    pub accepted_rps: f64,
    /// Acceptance latency: what the sender of the webhook waits for its 200.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Every 200 of the run, warm-up included.
    pub accepted: u64,
    /// Messages the sink took (200) during the run; `None` for the handler.
    pub delivered: Option<u64>,
    /// delivered / (load time + drain time).
    pub delivered_rps: Option<f64>,
    /// Warm-up plus measured window.
    pub load_s: f64,
    /// From the end of the load to the last message.
    pub drain_s: Option<f64>,
    /// The process's CPU time (all its threads) from the start of the load
    /// to the last message, per delivered event (the handler: per accepted).
    pub cpu_us_per_event: f64,
    /// Of `cpu_us_per_event`, the part in the kernel (stime).
    pub kernel_us_per_event: f64,
    /// The process's context switches per delivered event, likewise.
    pub switches_per_event: f64,
    /// The PostgreSQL cluster's, likewise.
    pub db_us_per_event: Option<f64>,
    pub idle_rss_mb: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    /// clickup-bridge: from the client reading the 200 to the sink receiving
    /// the message, for the events accepted in the window.
    pub e2e_p50_ms: Option<f64>,
    pub e2e_p99_ms: Option<f64>,
    /// Cores during the measured window.
    pub cpu: CpuUse,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub missing: u64,
    pub duplicates: u64,
    pub sink: SinkCounts,
    pub db: Option<DbCounts>,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

impl Run {
    pub fn json(&self) -> Value {
        json!({
            "system": self.system.key(),
            "connections": self.connections,
            "round": self.round,
            "accepted_per_sec": self.accepted_rps,
            "accept_p50_ms": self.p50_ms,
            "accept_p99_ms": self.p99_ms,
            "accepted_events": self.accepted,
            "delivered_events": self.delivered,
            "delivered_per_sec_load_plus_drain": self.delivered_rps,
            "load_s": self.load_s,
            "drain_s": self.drain_s,
            "cpu_us_per_event": self.cpu_us_per_event,
            "kernel_us_per_event": self.kernel_us_per_event,
            "context_switches_per_event": self.switches_per_event,
            "postgres_cpu_us_per_event": self.db_us_per_event,
            "idle_rss_mb": self.idle_rss_mb,
            "peak_rss_mb": self.peak_rss_mb,
            "accept_to_arrival_p50_ms": self.e2e_p50_ms,
            "accept_to_arrival_p99_ms": self.e2e_p99_ms,
            "cpu_window": self.cpu.json(),
            "errors_in_window": self.errors,
            "error_kinds": self.error_kinds,
            "missing_at_sink": self.missing,
            "duplicates_at_sink": self.duplicates,
            "sink": self.sink.json(),
            "store_after_exit": self.db.map(|d| d.json()),
            "problems": self.problems,
            "notes": self.notes,
        })
    }
}

/// The process(es) of one run.
enum Under {
    Baseline(baselines::Baseline),
    Bridge {
        daemons: Vec<Daemon>,
        /// The PostgreSQL database, if any.
        store: Option<String>,
    },
}

impl Under {
    async fn start(ctx: &Ctx, system: System) -> Res<Under> {
        match system {
            System::Handler => Ok(Under::Baseline(baselines::Baseline::start(
                &ctx.launch,
                baselines::Kind::Handler,
                &ctx.sink_url,
            )?)),
            System::Naive => Ok(Under::Baseline(baselines::Baseline::start(
                &ctx.launch,
                baselines::Kind::Naive,
                &ctx.sink_url,
            )?)),
            System::Durable => Ok(Under::Baseline(baselines::Baseline::start(
                &ctx.launch,
                baselines::Kind::Durable,
                &ctx.sink_url,
            )?)),
            System::Bridge(config) => {
                let store = match (&ctx.cluster, config.postgres) {
                    (Some(cluster), true) => Some(cluster.new_database()?),
                    (None, true) => return Err("PostgreSQL run without a cluster".into()),
                    (_, false) => None,
                };
                let mut daemons: Vec<Daemon> = Vec::with_capacity(config.instances);
                for _ in 0..config.instances {
                    match bridge::start_bridge(&ctx.launch, &ctx.sink_url, store.as_deref()).await {
                        Ok(d) => daemons.push(d),
                        Err(e) => {
                            daemons.iter_mut().for_each(Daemon::kill_now);
                            return Err(e);
                        }
                    }
                }
                Ok(Under::Bridge { daemons, store })
            }
        }
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Under::Baseline(b) => vec![b.pid()],
            Under::Bridge { daemons, .. } => daemons.iter().map(Daemon::pid).collect(),
        }
    }

    fn urls(&self) -> Vec<String> {
        let addrs = match self {
            Under::Baseline(b) => vec![b.addr],
            Under::Bridge { daemons, .. } => daemons.iter().map(|d| d.addr).collect(),
        };
        addrs
            .into_iter()
            .map(|a| format!("http://{a}/hooks/clickup"))
            .collect()
    }

    fn max_rss(&self, key: &str) -> Option<f64> {
        self.pids()
            .iter()
            .filter_map(|pid| rss_mb(*pid, key))
            .reduce(f64::max)
    }

    /// SIGTERM; the exit problems (anything but exit 0).
    async fn stop(self) -> (Vec<String>, Option<(Vec<Daemon>, Option<String>)>) {
        match self {
            Under::Baseline(b) => match b.stop().await {
                Ok(s) if s.success() => (Vec::new(), None),
                Ok(s) => (vec![format!("baseline exit after SIGTERM: {s}")], None),
                Err(e) => (vec![e.to_string()], None),
            },
            Under::Bridge { mut daemons, store } => {
                let mut problems = Vec::new();
                for (i, d) in daemons.iter_mut().enumerate() {
                    let exit = d.stop().await;
                    problems.extend(
                        d.exit_problem(&exit)
                            .map(|p| format!("instance {}: {p}", i + 1)),
                    );
                }
                (problems, Some((daemons, store)))
            }
        }
    }

    fn kill_now(self) {
        match self {
            Under::Baseline(mut b) => b.kill_now(),
            Under::Bridge { mut daemons, .. } => daemons.iter_mut().for_each(Daemon::kill_now),
        }
    }
}

fn load_problems(load: &LoadOut, problems: &mut Vec<String>) {
    if load.pool_exhausted {
        problems.push("ran out of pre-built requests: raise --requests".into());
    }
    if load.gave_up {
        problems.push(format!(
            "a client gave up after {GIVE_UP_AFTER} consecutive failures"
        ));
    }
    if !load.tally.error_kinds.is_empty() {
        problems.push(format!("client errors: {:?}", load.tally.error_kinds));
    }
}

/// One system at one client count: start it, load it, wait for the last
/// message, stop it, check what arrived.
async fn run_one(
    ctx: &Ctx,
    opts: &CompareOpts,
    system: System,
    connections: usize,
    round: usize,
) -> Res<Run> {
    ctx.sink.reset();
    ctx.sink.fail.store(false, Ordering::SeqCst);
    let under = Under::start(ctx, system).await?;
    let pids = under.pids();
    let idle = under.max_rss("VmRSS:");
    let spec = LoadSpec {
        urls: under.urls(),
        connections,
        stop: Stop::Timed {
            warmup: Duration::from_secs_f64(opts.warmup),
            duration: Duration::from_secs_f64(opts.duration),
        },
        // The daemon deduplicates: it must never see an event twice.
        wrap: !matches!(system, System::Bridge(_)),
        server_pids: pids.clone(),
        keep_answers: false,
        progress: Arc::new(AtomicU64::new(0)),
    };
    let load = match common::run_load(spec, ctx.pool.clone(), &ctx.meter).await {
        Ok(l) => l,
        Err(e) => {
            under.kill_now();
            return Err(e);
        }
    };
    let mut problems = Vec::new();
    load_problems(&load, &mut problems);
    let settle = Duration::from_secs_f64(opts.settle);
    let all = if system.delivers() {
        wait_all_arrived(&ctx.sink, &load.accepted, Instant::now() + settle).await
    } else {
        true
    };
    let end = ctx.meter.snap_many(&pids);
    let peak = under.max_rss("VmHWM:");
    let (exit_problems, bridge) = under.stop().await;
    problems.extend(exit_problems);
    let arrivals = ctx.sink.arrivals();
    let sink = ctx.sink.counts();
    let d = compare(
        &load.accepted,
        &arrivals,
        (load.window_start, load.window_end),
    );
    let load_s = load.window_end.duration_since(load.start).as_secs_f64();
    let whole = ctx.meter.between(&load.start_snap, &end);
    let whole_s = end.at.duration_since(load.start).as_secs_f64();
    let accepted = load.accepted.len() as u64;
    let (delivered, delivered_rps, drain_s) = if system.delivers() {
        let last = d.last_arrival.unwrap_or(load.window_end);
        let span_end = last.max(load.window_end);
        let span = span_end.duration_since(load.start).as_secs_f64();
        (
            Some(sink.ok),
            Some(sink.ok as f64 / span),
            secs_between(Some(load.window_end), Some(span_end)),
        )
    } else {
        (None, None, None)
    };
    let per_event = delivered.unwrap_or(accepted).max(1) as f64;
    let mut r = Run {
        system,
        connections,
        round,
        accepted_rps: load.rps(),
        p50_ms: percentile_ms(&load.tally.latencies, 50.0),
        p99_ms: percentile_ms(&load.tally.latencies, 99.0),
        accepted,
        delivered,
        delivered_rps,
        load_s,
        drain_s,
        cpu_us_per_event: whole.server * whole_s * 1e6 / per_event,
        kernel_us_per_event: whole.server_sys * whole_s * 1e6 / per_event,
        switches_per_event: whole.server_switches as f64 / per_event,
        db_us_per_event: matches!(system, System::Bridge(c) if c.postgres)
            .then(|| whole.db * whole_s * 1e6 / per_event),
        idle_rss_mb: idle,
        peak_rss_mb: peak,
        e2e_p50_ms: None,
        e2e_p99_ms: None,
        cpu: load.cpu.clone(),
        errors: load.tally.errors,
        error_kinds: load.tally.error_kinds.clone(),
        missing: if system.delivers() { d.missing } else { 0 },
        duplicates: 0,
        sink,
        db: None,
        problems,
        notes: Vec::new(),
    };
    if !all {
        r.problems.push(format!(
            "{} accepted events had not reached the sink {} s after the load",
            d.missing, opts.settle
        ));
    } else if r.missing > 0 {
        r.problems.push(format!(
            "{} events answered 200 but not at the sink",
            r.missing
        ));
    }
    if let Some((daemons, store)) = bridge {
        bridge_checks(&mut r, &d, &daemons, store.as_deref()).await;
    }
    Ok(r)
}

/// What only clickup-bridge promises: exactly once at the sink with an
/// Idempotency-Key, and a store that agrees after exit.
async fn bridge_checks(r: &mut Run, d: &sink::Delivery, daemons: &[Daemon], store: Option<&str>) {
    r.e2e_p50_ms = Some(percentile_signed_ms(&d.e2e_us, 50.0));
    r.e2e_p99_ms = Some(percentile_signed_ms(&d.e2e_us, 99.0));
    let s = r.sink;
    r.duplicates = s.dup_keys.max(s.dup_events);
    if s.dup_keys > 0 || s.dup_events > 0 {
        r.problems.push(format!(
            "duplicates at the sink: {} repeated Idempotency-Keys, {} repeated events",
            s.dup_keys, s.dup_events
        ));
    }
    if s.no_key > 0 || s.unparsable > 0 {
        r.problems.push(format!(
            "{} messages without Idempotency-Key, {} unparsable",
            s.no_key, s.unparsable
        ));
    }
    if d.arrived_before_answer > 0 {
        r.notes.push(format!(
            "{} messages arrived before their client had read the 200 (negative latency)",
            d.arrived_before_answer
        ));
    }
    let counts = match (store, daemons.first()) {
        (Some(url), _) => bridge::pg_counts(url).await,
        (None, Some(daemon)) => bridge::db_counts(&daemon.db_path()).await,
        (None, None) => Err("no daemon ran".into()),
    };
    match counts {
        Ok(c) => {
            let want = i64::try_from(d.accepted + d.extra).unwrap_or(i64::MAX);
            if c.delivered != want {
                r.notes.push(format!(
                    "store after exit: {} deliveries delivered for {want} events at the sink",
                    c.delivered
                ));
            }
            r.db = Some(c);
        }
        Err(e) => r
            .notes
            .push(format!("could not read the store after exit: {e}")),
    }
    for (i, daemon) in daemons.iter().enumerate() {
        r.notes.extend(
            daemon
                .log_note()
                .map(|n| format!("instance {}: {n}", i + 1)),
        );
    }
}

// ---------------------------------------------------------------- modes

/// The floor under a durable answer on this disk: `fdatasync` after a 4 KB
/// append, in the folder the daemon's store goes to (the system temp
/// folder), timed `samples` times before the rounds; p50 and p99 in ms. A
/// 200 waits for at least one such sync (SQLite's commit of the WAL with
/// `synchronous=FULL`), so no acceptance latency is below it.
fn fsync_floor(samples: usize) -> Res<(f64, f64)> {
    use std::io::Write;
    let dir = tempfile::Builder::new()
        .prefix("clickup-bridge-fsync-")
        .tempdir()?;
    let mut f = std::fs::File::create(dir.path().join("probe"))?;
    let block = [0u8; 4096];
    let mut ms = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        f.write_all(&block)?;
        let t = Instant::now();
        f.sync_data()?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: usize| ms[(ms.len() * q / 100).min(ms.len() - 1)];
    Ok((at(50), at(99)))
}

async fn compare_mode(ctx: &Ctx, opts: &CompareOpts, systems: &[System]) -> Res<Vec<Run>> {
    let mut runs = Vec::new();
    for round in 1..=opts.rounds {
        for &c in &opts.connections {
            for &system in systems {
                let r = run_one(ctx, opts, system, c, round)
                    .await
                    .map_err(|e| format!("round {round}, {}, c{c}: {e}", system.label()))?;
                println!(
                    "round {round} c{c:<3} {:<28} accepted/s {:>8.0}  p99 {:>7.2} ms  delivered/s {:>8}  drain {:>5} s  cpu {:>6.1} us/event ({:.0} in the kernel, {:.1} switches)  errors {}",
                    system.label(),
                    r.accepted_rps,
                    r.p99_ms,
                    common::fmt_opt(r.delivered_rps, 0),
                    common::fmt_opt(r.drain_s, 1),
                    r.cpu_us_per_event,
                    r.kernel_us_per_event,
                    r.switches_per_event,
                    r.errors
                );
                runs.push(r);
                // Let the previous process's sockets and page cache settle.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    Ok(runs)
}

fn main() -> Result<(), BoxError> {
    let cli = Cli::parse();
    let mode = cli
        .mode
        .unwrap_or_else(|| Mode::Compare(DefaultCompare::parse_from(["compare"]).opts));
    if let Mode::Baseline {
        kind,
        sink,
        db,
        concurrency,
    } = mode
    {
        return baselines::serve(baselines::ServeOpts {
            kind,
            sink,
            db,
            concurrency,
        });
    }
    let shared = cli.shared;
    // Before any thread exists: every thread of this process inherits it.
    if !shared.no_pin {
        pin_self(&shared.client_cpu)?;
    }
    let mut launch = Launch::new(
        shared.bin.clone(),
        (!shared.no_pin).then(|| shared.server_cpu.clone()),
        &shared.log,
    )?;
    launch.sink_concurrency = shared.sink_concurrency;
    let mode_name = match &mode {
        Mode::Compare(_) => "compare",
        Mode::Backlog(_) => "backlog",
        Mode::Instructions(_) => "instructions",
        Mode::Baseline { .. } => "baseline",
    };
    let out = shared.out.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("bench/results/e2e-{mode_name}-latest.json"))
    });
    println!(
        "e2e {mode_name}: daemon {}, bench on CPU {} (allowed {}), system under test on {}, {} load threads, {} cores",
        launch.bin.display(),
        if shared.no_pin {
            "any"
        } else {
            &shared.client_cpu
        },
        allowed_cpus(),
        launch.cpus.as_deref().unwrap_or("any"),
        shared.client_threads,
        available_cores()
    );
    let pool_len = match &mode {
        Mode::Backlog(b) => shared
            .requests
            .max(usize::try_from(b.events).unwrap_or(usize::MAX) / 10 * 11 + 1000),
        Mode::Instructions(i) => i.pool_len(),
        _ => shared.requests,
    };
    let pool = prebuild_pool(pool_len)?;
    let body_len = common::body_len(&pool);
    let rt = common::loadgen_runtime(shared.client_threads)?;

    // The sink runs for the whole bench; its threads are the ones that
    // appear when it starts.
    let sink = Arc::new(Sink::default());
    let tids_before = own_tids();
    let sink_server = start_server("sink", shared.sink_workers, sink::sink_config(sink.clone()))?;
    std::thread::sleep(Duration::from_millis(300));
    let sink_tids: HashSet<u32> = own_tids().difference(&tids_before).copied().collect();
    let mut meter = Meter::new(sink_tids);

    let systems = match &mode {
        Mode::Compare(o) => {
            let mut s = vec![System::Handler, System::Naive, System::Durable];
            s.extend(
                configs(&o.store, &o.instances)?
                    .into_iter()
                    .map(System::Bridge),
            );
            if o.rounds == 0 || o.connections.is_empty() || o.connections.contains(&0) {
                return Err("--rounds and --connections need counts of at least 1".into());
            }
            if o.duration <= 0.0 || o.warmup < 0.0 {
                return Err("--duration must be positive and --warmup not negative".into());
            }
            s
        }
        _ => Vec::new(),
    };
    let cluster = if systems
        .iter()
        .any(|s| matches!(s, System::Bridge(c) if c.postgres))
    {
        let cluster = common::pg::Cluster::start()
            .map_err(|e| format!("starting the PostgreSQL cluster: {e}"))?;
        meter.db_pid = Some(cluster.postmaster_pid());
        Some(cluster)
    } else {
        None
    };
    let mut ctx = Ctx {
        pool,
        sink,
        sink_url: format!("http://{}/slack", sink_server.addr),
        meter,
        launch,
        cluster,
    };
    let header = json!({
        "unix_time": common::unix_time(),
        "machine": {"cores": available_cores()},
        "daemon": ctx.launch.bin.display().to_string(),
        "server_cpu": ctx.launch.cpus,
        "client_cpu": (!shared.no_pin).then_some(&shared.client_cpu),
        "daemon_log": shared.log,
        "client_threads": shared.client_threads,
        "sink_workers": shared.sink_workers,
        "requests_prebuilt": pool_len,
        "body_bytes": body_len,
    });

    rt.block_on(async {
        let r = match &mode {
            Mode::Compare(o) => {
                let mut header = header;
                let (p50, p99) = fsync_floor(2_000)?;
                println!(
                    "fdatasync of a 4 KB append on this disk (the floor under a durable 200): p50 {p50:.2} ms, p99 {p99:.2} ms"
                );
                header["fsync_floor_ms"] = json!({"p50": p50, "p99": p99, "samples": 2_000});
                let runs = compare_mode(&ctx, o, &systems).await?;
                report::compare(&runs, &systems, o, header, &out)
            }
            Mode::Backlog(o) => {
                println!(
                    "backlog: {} events while the sink answers 503 ({} clients)",
                    o.events, o.connections
                );
                let b = backlog::run_backlog(&ctx, o).await?;
                report::backlog(&b, header, &out)
            }
            Mode::Instructions(o) => instructions::run(&mut ctx, o, header, &out).await,
            Mode::Baseline { .. } => Ok(()),
        };
        sink_server.stop().await?;
        r
    })
}
