//! The tables, the ratios against the baselines of the same round, the goals
//! of issue 11, and the JSON report.

use crate::backlog::{self, BacklogResult};
use crate::common::{Res, fmt_opt, print_checks, ratio, write_report};
use crate::{CompareOpts, Run, System};
use serde_json::{Map, Value, json};
use std::path::Path;

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The figures of a table row, by name, as the JSON report and the table
/// show them.
type Figure = fn(&Run) -> Option<f64>;

const FIGURES: [(&str, Figure); 12] = [
    ("accepted_per_sec", |r| Some(r.accepted_rps)),
    ("accept_p50_ms", |r| Some(r.p50_ms)),
    ("accept_p99_ms", |r| Some(r.p99_ms)),
    ("delivered_per_sec_load_plus_drain", |r| r.delivered_rps),
    ("drain_s", |r| r.drain_s),
    ("cpu_us_per_event", |r| Some(r.cpu_us_per_event)),
    ("idle_rss_mb", |r| r.idle_rss_mb),
    ("peak_rss_mb", |r| r.peak_rss_mb),
    ("accept_to_arrival_p99_ms", |r| r.e2e_p99_ms),
    ("postgres_cpu_us_per_event", |r| r.db_us_per_event),
    ("kernel_us_per_event", |r| Some(r.kernel_us_per_event)),
    ("context_switches_per_event", |r| Some(r.switches_per_event)),
];

fn runs_of(runs: &[Run], system: System, c: usize) -> Vec<&Run> {
    runs.iter()
        .filter(|r| r.system == system && r.connections == c)
        .collect()
}

fn med(runs: &[&Run], f: fn(&Run) -> Option<f64>) -> Option<f64> {
    median(runs.iter().filter_map(|r| f(r)).collect())
}

/// A ratio of two systems' figures, per round, then the median and spread.
struct Ratio {
    name: String,
    per_round: Vec<f64>,
}

impl Ratio {
    fn median(&self) -> Option<f64> {
        median(self.per_round.clone())
    }

    fn spread(&self) -> String {
        let lo = self.per_round.iter().copied().reduce(f64::min);
        let hi = self.per_round.iter().copied().reduce(f64::max);
        format!("{}..{}", fmt_opt(lo, 2), fmt_opt(hi, 2))
    }
}

fn ratios(runs: &[Run], systems: &[System], opts: &CompareOpts) -> Vec<Ratio> {
    type Fig = fn(&Run) -> Option<f64>;
    let pairs: [(&str, System, Fig); 7] = [
        ("accepted/s / handler's", System::Handler, |r| {
            Some(r.accepted_rps)
        }),
        ("accepted/s / forwarder's", System::Naive, |r| {
            Some(r.accepted_rps)
        }),
        (
            "delivered/s (load + drain) / forwarder's",
            System::Naive,
            |r| r.delivered_rps,
        ),
        ("CPU per event / forwarder's", System::Naive, |r| {
            Some(r.cpu_us_per_event)
        }),
        ("CPU per event / handler's", System::Handler, |r| {
            Some(r.cpu_us_per_event)
        }),
        (
            "delivered/s (load + drain) / durable forwarder's",
            System::Durable,
            |r| r.delivered_rps,
        ),
        (
            "CPU per event / durable forwarder's",
            System::Durable,
            |r| Some(r.cpu_us_per_event),
        ),
    ];
    let mut out = Vec::new();
    // The durable forwarder against the other two: what storing costs.
    let measured = systems
        .iter()
        .filter(|s| matches!(s, System::Bridge(_) | System::Durable));
    for bridge in measured {
        for &c in &opts.connections {
            for (name, base, f) in pairs.iter().filter(|(_, base, _)| base != bridge) {
                let per_round = (1..=opts.rounds)
                    .filter_map(|round| {
                        let find = |s: System| {
                            runs.iter()
                                .find(|r| r.system == s && r.connections == c && r.round == round)
                        };
                        Some(ratio(f(find(*bridge)?)?, f(find(*base)?)?))
                    })
                    .filter(|v| v.is_finite())
                    .collect();
                out.push(Ratio {
                    name: format!("{} c{c}: {name}", bridge.label()),
                    per_round,
                });
            }
        }
    }
    out
}

/// The goals of issue 11 for clickup-bridge (SQLite): (goal, measured, met).
fn goals(runs: &[Run], ratios: &[Ratio]) -> Vec<(String, String, bool)> {
    let bridge = System::Bridge(crate::Config {
        postgres: false,
        instances: 1,
    });
    let find = |name: &str| {
        ratios
            .iter()
            .find(|r| r.name == format!("{} {name}", bridge.label()))
            .and_then(Ratio::median)
    };
    let mut g = Vec::new();
    let mut at_least = |goal: &str, v: Option<f64>, min: f64, unit: &str| {
        g.push((
            goal.to_owned(),
            format!("{}{unit}", fmt_opt(v, 2)),
            v.is_some_and(|v| v >= min),
        ));
    };
    at_least(
        "durable ingest c64 >= 0.5x the verifying handler",
        find("c64: accepted/s / handler's"),
        0.5,
        "x",
    );
    at_least(
        "sustained end-to-end c64 >= 0.5x the naive forwarder",
        find("c64: delivered/s (load + drain) / forwarder's"),
        0.5,
        "x",
    );
    let at_most = |goal: &str, v: Option<f64>, max: f64, unit: &str| {
        (
            goal.to_owned(),
            format!("{}{unit}", fmt_opt(v, 1)),
            v.is_some_and(|v| v <= max),
        )
    };
    let c64 = runs_of(runs, bridge, 64);
    let c8 = runs_of(runs, bridge, 8);
    g.push(at_most(
        "CPU per delivered event c64 <= 60 us",
        med(&c64, |r| Some(r.cpu_us_per_event)),
        60.0,
        " us",
    ));
    g.push(at_most(
        "drain after the c64 load (keeps pace) ~ 0 s",
        med(&c64, |r| r.drain_s),
        1.0,
        " s",
    ));
    g.push(at_most(
        "p99 acceptance latency c8 < 2 ms",
        med(&c8, |r| Some(r.p99_ms)),
        2.0,
        " ms",
    ));
    let all: Vec<&Run> = runs.iter().filter(|r| r.system == bridge).collect();
    g.push(at_most(
        "idle RSS <= 15 MB",
        med(&all, |r| r.idle_rss_mb),
        15.0,
        " MB",
    ));
    g
}

pub fn compare(
    runs: &[Run],
    systems: &[System],
    opts: &CompareOpts,
    header: Value,
    out: &Path,
) -> Res<()> {
    let mut medians = Map::new();
    for &c in &opts.connections {
        println!();
        println!(
            "== c{c}: medians of {} round(s), {} s warm-up + {} s per run ==",
            opts.rounds, opts.warmup, opts.duration
        );
        println!(
            "{:<30} {:>10} {:>7} {:>7} {:>11} {:>7} {:>9} {:>8} {:>8} {:>8}",
            "system",
            "accepted/s",
            "p50 ms",
            "p99 ms",
            "delivered/s",
            "drain s",
            "us/event",
            "idle MB",
            "peak MB",
            "e2e p99"
        );
        for &s in systems {
            let rs = runs_of(runs, s, c);
            let m = |i: usize| med(&rs, FIGURES[i].1);
            println!(
                "{:<30} {:>10} {:>7} {:>7} {:>11} {:>7} {:>9} {:>8} {:>8} {:>8}",
                s.label(),
                fmt_opt(m(0), 0),
                fmt_opt(m(1), 2),
                fmt_opt(m(2), 2),
                fmt_opt(m(3), 0),
                fmt_opt(m(4), 1),
                fmt_opt(m(5), 1),
                fmt_opt(m(6), 1),
                fmt_opt(m(7), 1),
                fmt_opt(m(8), 2)
            );
            let fig: Map<String, Value> = FIGURES
                .iter()
                .map(|(name, f)| ((*name).to_owned(), json!(med(&rs, *f))))
                .collect();
            medians.insert(format!("{}_c{c}", s.key()), Value::Object(fig));
        }
    }
    println!(
        "(p50/p99: acceptance latency; delivered/s = delivered / (load + drain); us/event: the process's CPU time from the start of the load to the last message, per delivered event (the handler: per accepted); e2e p99: 200 read to message at the sink, ms)"
    );
    let ratios = ratios(runs, systems, opts);
    println!();
    println!(
        "{:<70} {:>7} {:>12}",
        "ratio (per round, against the same round's baselines)", "median", "spread"
    );
    for r in &ratios {
        println!(
            "{:<70} {:>7} {:>12}",
            r.name,
            fmt_opt(r.median(), 3),
            r.spread()
        );
    }
    let goals = goals(runs, &ratios);
    println!();
    println!("{:<58} {:>10}  met", "goal (issue 11)", "measured");
    for (goal, v, met) in &goals {
        println!("{goal:<58} {v:>10}  {}", if *met { "yes" } else { "no" });
    }
    if let Some(p99) = header["fsync_floor_ms"]["p99"].as_f64() {
        println!(
            "{:<58} {:>10}",
            "  this disk's fdatasync p99 (the floor under a durable 200)",
            format!("{p99:.1} ms")
        );
    }
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    for r in runs {
        let at = format!("round {} {} c{}", r.round, r.system.label(), r.connections);
        problems.extend(r.problems.iter().map(|p| format!("{at}: {p}")));
        notes.extend(r.notes.iter().map(|p| format!("{at}: {p}")));
    }
    println!();
    for n in &notes {
        println!("note: {n}");
    }
    print_checks(
        &problems,
        "no client errors; every accepted event reached the sink (clickup-bridge: exactly once); every process exited 0",
    );
    let report = json!({
        "bench": "e2e compare",
        "setup": header,
        "options": {
            "rounds": opts.rounds,
            "connections": opts.connections,
            "duration_s": opts.duration,
            "warmup_s": opts.warmup,
            "settle_s": opts.settle,
        },
        "medians": medians,
        "ratios": ratios.iter().map(|r| json!({
            "name": r.name, "median": r.median(), "per_round": r.per_round,
        })).collect::<Vec<_>>(),
        "goals": goals.iter().map(|(g, v, met)| json!({"goal": g, "measured": v, "met": met})).collect::<Vec<_>>(),
        "runs": runs.iter().map(Run::json).collect::<Vec<_>>(),
        "problems": problems,
        "notes": notes,
    });
    write_report(out, &report, problems.len())
}

pub fn backlog(b: &BacklogResult, header: Value, out: &Path) -> Res<()> {
    println!();
    backlog::print(b);
    let mut notes = b.notes.clone();
    if !b.errors.is_empty() {
        notes.push(format!(
            "client errors (each replaced by a fresh event): {:?}",
            b.errors
        ));
    }
    println!();
    for n in &notes {
        println!("note: {n}");
    }
    print_checks(
        &b.problems,
        "every accepted event reached the sink exactly once after the drain; the daemon exited 0",
    );
    let report = json!({
        "bench": "e2e backlog",
        "setup": header,
        "backlog": b.json(),
        "problems": b.problems,
        "notes": notes,
    });
    write_report(out, &report, b.problems.len())
}
