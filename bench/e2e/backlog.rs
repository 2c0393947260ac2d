//! The flat-memory backlog: the sink answers 503 while N events (default
//! 100,000; the figure is 1,000,000) are accepted; the daemon's RSS
//! is sampled every second; then the sink recovers and the backlog drains.

use crate::Ctx;
use crate::bridge::DbCounts;
use crate::bridge::{db_backlog, db_counts, start_bridge};
use crate::common::{
    CpuUse, Daemon, GIVE_UP_AFTER, LoadSpec, Res, Stop, fmt_opt, open_db, percentile_ms, rss_mb,
    run_load,
};
use crate::sink::{Sink, SinkCounts, compare, secs_between, wait_all_arrived};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone, Debug)]
pub struct BacklogOpts {
    /// Events accepted while the sink answers 503.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Concurrent clients during the fill.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Longest wait for the backlog to drain, in seconds.
    #[arg(long = "drain-timeout", default_value_t = 900.0)]
    pub drain_timeout_s: f64,
}

impl BacklogOpts {
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout_s)
    }
}

/// What the backlog run measured.
#[derive(Clone, Debug, Default)]
pub struct BacklogResult {
    pub events: u64,
    pub fill_s: f64,
    pub fill_rps: f64,
    pub fill_p50_ms: f64,
    pub fill_p99_ms: f64,
    pub fill_cpu: CpuUse,
    /// From the last acceptance until every event had its pending delivery.
    pub router_lag_s: Option<f64>,
    pub pending_at_full: Option<i64>,
    pub refused_attempts: u64,
    pub refused_per_s: f64,
    pub idle_rss_mb: Option<f64>,
    pub peak_fill_rss_mb: Option<f64>,
    pub rss_at_full_mb: Option<f64>,
    pub peak_drain_rss_mb: Option<f64>,
    pub hwm_mb: Option<f64>,
    pub after_drain_rss_mb: Option<f64>,
    pub drain_s: Option<f64>,
    pub drain_rps: Option<f64>,
    pub first_arrival_after_switch_s: Option<f64>,
    pub drain_cpu: CpuUse,
    pub missing: u64,
    pub extra: u64,
    pub sink: SinkCounts,
    pub db: Option<DbCounts>,
    pub exit: String,
    pub rss_samples: Vec<(f64, u8, f64)>,
    pub errors: BTreeMap<String, u64>,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

impl BacklogResult {
    pub fn json(&self) -> Value {
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

pub async fn run_backlog(ctx: &Ctx, opts: &BacklogOpts) -> Res<BacklogResult> {
    let n = opts.events;
    ctx.sink.reset();
    ctx.sink.fail.store(true, Ordering::SeqCst);
    let mut daemon = start_bridge(&ctx.launch, &ctx.sink_url, None).await?;
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
    let outcome = backlog_steps(ctx, opts, &mut daemon, &mut r, &stage, progress).await;
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
    opts: &BacklogOpts,
    daemon: &mut Daemon,
    r: &mut BacklogResult,
    stage: &AtomicU8,
    progress: Arc<AtomicU64>,
) -> Res<()> {
    let pid = daemon.pid();
    // Fill: the sink refuses everything.
    let spec = LoadSpec {
        urls: vec![format!("http://{}/hooks/clickup", daemon.addr)],
        connections: opts.connections,
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
    let all = wait_all_arrived(&ctx.sink, &load.accepted, switch + opts.drain_timeout()).await;
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
            opts.drain_timeout().as_secs_f64()
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

/// The backlog block of the output.
pub fn print(b: &BacklogResult) {
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
