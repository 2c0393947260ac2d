//! Instructions per delivered event: a figure that machine noise does not
//! move, so a later change must not make it worse.
//!
//! `perf stat -e instructions` needs a hardware counter, which this kind of
//! virtual machine does not expose ("<not supported>"), so the daemon runs
//! under `valgrind --tool=callgrind`, which counts every instruction it
//! executes (all threads). Start-up and shutdown are not events: the daemon
//! runs twice, once for a small batch (`--warm-events`) and once for that
//! batch plus `--events`, each time from a fresh store, at `--connections`
//! clients, and each run lasts until the sink has every message. The figure
//! is (I(large) - I(small)) / events.

use crate::baselines::{Baseline, Kind};
use crate::common::{LoadSpec, Res, Stop, print_checks, run_load, write_report};
use crate::sink::wait_all_arrived;
use crate::{Ctx, bridge};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone, Debug)]
pub struct InstructionsOpts {
    /// Events the figure is measured over.
    #[arg(long, default_value_t = 2_000)]
    pub events: u64,
    /// Events of the small run whose count is subtracted (start-up, shutdown).
    #[arg(long, default_value_t = 500)]
    pub warm_events: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// The committed figure.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/instructions-baseline.json"))]
    pub baseline: PathBuf,
    /// Fail when the figure is worse than the baseline by more than its tolerance.
    #[arg(long)]
    pub check: bool,
    /// Write the measured figure to the baseline file (with --tolerance).
    #[arg(long)]
    pub record: bool,
    /// Allowed increase over the baseline, as a fraction (default: the file's).
    #[arg(long)]
    pub tolerance: Option<f64>,
    /// What runs under callgrind: the daemon, or a baseline to set its
    /// figure beside (`--check` and `--record` are for the daemon only).
    #[arg(long, value_enum, default_value = "bridge")]
    pub system: Measured,
    /// Keep callgrind's output files here (`callgrind.N.out`, N the events),
    /// to read with `callgrind_annotate`: where the instructions go.
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measured {
    /// clickup-bridge.
    Bridge,
    /// The naive forwarder (stores nothing).
    Naive,
    /// The durable forwarder (stores events and deliveries in SQLite).
    Durable,
}

impl InstructionsOpts {
    /// Every run gets fresh events from the same pool (each daemon has its
    /// own store, so reusing the pool across runs is no duplicate).
    pub fn pool_len(&self) -> usize {
        usize::try_from(self.events + self.warm_events).unwrap_or(usize::MAX) + 1000
    }
}

/// The `summary:` (or `totals:`) line of a callgrind output file.
fn callgrind_total(file: &Path) -> Res<u64> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read callgrind's output {}: {e}", file.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no summary line in {}", file.display()).into())
}

/// The process under callgrind.
enum Process {
    Bridge(crate::common::Daemon),
    Baseline(Baseline),
}

impl Process {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Process::Bridge(d) => d.addr,
            Process::Baseline(b) => b.addr,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Process::Bridge(d) => d.pid(),
            Process::Baseline(b) => b.pid(),
        }
    }

    fn kill_now(&mut self) {
        match self {
            Process::Bridge(d) => d.kill_now(),
            Process::Baseline(b) => b.kill_now(),
        }
    }

    /// SIGTERM; an error unless it exits 0 (callgrind writes its file then).
    async fn stop(self) -> Res<()> {
        match self {
            Process::Bridge(mut d) => {
                let exit = d.stop().await;
                match d.exit_problem(&exit) {
                    Some(p) => Err(p.into()),
                    None => Ok(()),
                }
            }
            Process::Baseline(b) => match b.stop().await? {
                s if s.success() => Ok(()),
                s => Err(format!("the baseline exited with {s} after SIGTERM").into()),
            },
        }
    }
}

/// One daemon under callgrind, `n` events at the sink: its instruction count.
async fn count(ctx: &Ctx, opts: &InstructionsOpts, n: u64) -> Res<u64> {
    let dir = tempfile::Builder::new()
        .prefix("clickup-bridge-callgrind-")
        .tempdir()?;
    let file = dir.path().join("callgrind.out");
    let mut launch = ctx.launch.clone();
    launch.wrapper = vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--quiet".into(),
        format!("--callgrind-out-file={}", file.display()),
    ];
    launch.ready_within = Duration::from_secs(600);
    launch.stop_within = Duration::from_secs(600);
    ctx.sink.reset();
    ctx.sink.fail.store(false, Ordering::SeqCst);
    let t = Instant::now();
    let mut under = match opts.system {
        Measured::Bridge => {
            Process::Bridge(bridge::start_bridge(&launch, &ctx.sink_url, None).await?)
        }
        Measured::Naive => Process::Baseline(Baseline::start(&launch, Kind::Naive, &ctx.sink_url)?),
        Measured::Durable => {
            Process::Baseline(Baseline::start(&launch, Kind::Durable, &ctx.sink_url)?)
        }
    };
    let spec = LoadSpec {
        urls: vec![format!("http://{}/hooks/clickup", under.addr())],
        connections: opts.connections,
        stop: Stop::Accepted(n),
        // The daemon deduplicates; the baselines get the same bodies wrapped
        // as in `compare`.
        wrap: opts.system != Measured::Bridge,
        server_pids: vec![under.pid()],
        keep_answers: false,
        progress: Arc::new(AtomicU64::new(0)),
    };
    let load = match run_load(spec, ctx.pool.clone(), &ctx.meter).await {
        Ok(l) => l,
        Err(e) => {
            under.kill_now();
            return Err(e);
        }
    };
    let arrived = wait_all_arrived(
        &ctx.sink,
        &load.accepted,
        Instant::now() + Duration::from_secs(1200),
    )
    .await;
    under.stop().await?;
    if !load.tally.error_kinds.is_empty() || load.gave_up || load.pool_exhausted {
        return Err(format!(
            "the load under callgrind failed: {:?}",
            load.tally.error_kinds
        )
        .into());
    }
    let delivered = ctx.sink.counts().ok;
    if !arrived || delivered != n || load.accepted.len() as u64 != n {
        return Err(format!(
            "{} accepted, {delivered} delivered under callgrind; wanted {n} of each",
            load.accepted.len()
        )
        .into());
    }
    let total = callgrind_total(&file)?;
    if let Some(keep) = &opts.keep {
        std::fs::create_dir_all(keep)?;
        let to = keep.join(format!("callgrind.{n}.out"));
        std::fs::copy(&file, &to)?;
        println!("  kept {}", to.display());
    }
    println!(
        "  {n:>6} events: {total} instructions ({:.0} s under callgrind)",
        t.elapsed().as_secs_f64()
    );
    Ok(total)
}

pub async fn run(ctx: &mut Ctx, opts: &InstructionsOpts, header: Value, out: &Path) -> Res<()> {
    if opts.events == 0 {
        return Err("--events must be at least 1".into());
    }
    let have = std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        return Err("valgrind is not installed: apt-get install valgrind".into());
    }
    if opts.system != Measured::Bridge && (opts.check || opts.record) {
        return Err(
            "--check and --record hold the daemon's figure: leave them out with --system naive or durable"
                .into(),
        );
    }
    println!(
        "instructions: {:?} under callgrind, {} then {} events at c{}",
        opts.system,
        opts.warm_events,
        opts.warm_events + opts.events,
        opts.connections
    );
    let small = count(ctx, opts, opts.warm_events).await?;
    let large = count(ctx, opts, opts.warm_events + opts.events).await?;
    let per_event = large.saturating_sub(small) as f64 / opts.events as f64;
    println!();
    println!(
        "instructions per delivered event: {per_event:.0} (({large} - {small}) / {})",
        opts.events
    );
    let mut problems = Vec::new();
    let baseline: Option<Value> = std::fs::read_to_string(&opts.baseline)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    // The committed figure is the daemon's; a baseline's is only printed.
    let base = baseline
        .as_ref()
        .filter(|_| opts.system == Measured::Bridge)
        .and_then(|b| b["instructions_per_event"].as_f64());
    let tolerance = opts
        .tolerance
        .or_else(|| baseline.as_ref().and_then(|b| b["tolerance"].as_f64()))
        .unwrap_or(0.03);
    let same_batch = baseline.as_ref().is_some_and(|b| {
        b["events"].as_u64() == Some(opts.events)
            && b["warm_events"].as_u64() == Some(opts.warm_events)
            && b["connections"].as_u64() == Some(opts.connections as u64)
    });
    if opts.check && base.is_some() && !same_batch {
        problems.push(format!(
            "the baseline in {} was measured over another batch (events, warm events, clients): \
             measure with the same --events, --warm-events and --connections, the count per event depends on them",
            opts.baseline.display()
        ));
    }
    match base {
        Some(base) => {
            let change = per_event / base - 1.0;
            println!(
                "baseline {}: {base:.0}, change {:+.1} % (tolerance +{:.1} %)",
                opts.baseline.display(),
                change * 100.0,
                tolerance * 100.0
            );
            if opts.check && change > tolerance {
                problems.push(format!(
                    "instructions per event rose {:.1} % over the baseline ({per_event:.0} against {base:.0}); \
                     find the change that costs them, or if the cost is wanted, record a new baseline with --record",
                    change * 100.0
                ));
            }
        }
        None if opts.check => problems.push(format!(
            "no baseline figure in {}: record one with --record",
            opts.baseline.display()
        )),
        None => {}
    }
    let figure = json!({
        "system": format!("{:?}", opts.system).to_lowercase(),
        "instructions_per_event": per_event.round(),
        "tolerance": tolerance,
        "events": opts.events,
        "warm_events": opts.warm_events,
        "connections": opts.connections,
        "instructions_small_run": small,
        "instructions_large_run": large,
        "daemon": header["daemon"],
        "daemon_log": header["daemon_log"],
        "body_bytes": header["body_bytes"],
        "unix_time": header["unix_time"],
    });
    if opts.record {
        std::fs::write(
            &opts.baseline,
            serde_json::to_string_pretty(&figure)? + "\n",
        )?;
        println!("recorded {}", opts.baseline.display());
    }
    print_checks(
        &problems,
        "every event accepted and delivered under callgrind; within the tolerance or not checked",
    );
    let report = json!({
        "bench": "e2e instructions",
        "setup": header,
        "figure": figure,
        "baseline": baseline,
        "problems": problems,
    });
    write_report(out, &report, problems.len())
}
