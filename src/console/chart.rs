//! The overview's charts: small bar charts drawn as SVG on the server, one
//! row per source or target, one bar per five minutes of the last hour.
//! Colours are SVG attributes, not styles, so the strict CSP allows them.

use crate::store::{Activity, ActivityCount, DeliveryStatus};
use maud::{Markup, html};
use std::collections::BTreeMap;

const BAR_W: u32 = 18;
const GAP: u32 = 4;
const HEIGHT: u32 = 36;

/// One chart row: a name and, per bucket, the stacked counts per layer.
pub struct Series {
    /// Source or target.
    pub name: String,
    /// `counts[bucket][layer]`.
    pub counts: Vec<Vec<u64>>,
}

impl Series {
    /// The sum of every bucket and layer.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }
    fn layer_total(&self, layer: usize) -> u64 {
        self.counts
            .iter()
            .map(|b| b.get(layer).copied().unwrap_or(0))
            .sum()
    }
}

/// A layer of a stacked bar.
pub struct Layer {
    /// What it counts.
    pub label: &'static str,
    /// Its colour.
    pub fill: &'static str,
}

/// Events: one layer.
pub const EVENT_LAYERS: &[Layer] = &[Layer {
    label: "events",
    fill: "#2b6cb0",
}];

/// Deliveries: delivered, pending, dead.
pub const DELIVERY_LAYERS: &[Layer] = &[
    Layer {
        label: "delivered",
        fill: "#2f855a",
    },
    Layer {
        label: "pending",
        fill: "#b7791f",
    },
    Layer {
        label: "dead",
        fill: "#c53030",
    },
];

fn buckets(a: &Activity) -> usize {
    usize::try_from(crate::admin::api::ACTIVITY_WINDOW_MS / a.bucket_ms.max(1)).unwrap_or(12)
}

fn group(
    a: &Activity,
    rows: &[ActivityCount],
    layers: usize,
    layer_of: impl Fn(&ActivityCount) -> usize,
) -> Vec<Series> {
    let n = buckets(a);
    let mut by_name: BTreeMap<&str, Vec<Vec<u64>>> = BTreeMap::new();
    for r in rows {
        let counts = by_name
            .entry(r.name.as_str())
            .or_insert_with(|| vec![vec![0; layers]; n]);
        let b = usize::try_from(r.bucket).unwrap_or(usize::MAX);
        if let Some(bucket) = counts.get_mut(b) {
            bucket[layer_of(r).min(layers - 1)] += r.count;
        }
    }
    by_name
        .into_iter()
        .map(|(name, counts)| Series {
            name: name.to_owned(),
            counts,
        })
        .collect()
}

/// Events per source.
pub fn event_series(a: &Activity) -> Vec<Series> {
    group(a, &a.events, 1, |_| 0)
}

/// Deliveries per target, stacked by status.
pub fn delivery_series(a: &Activity) -> Vec<Series> {
    group(a, &a.deliveries, 3, |r| match r.status {
        Some(DeliveryStatus::Delivered) => 0,
        Some(DeliveryStatus::Pending) => 1,
        _ => 2,
    })
}

fn clock(ms: i64) -> String {
    super::views::clock(ms)
}

/// The rectangles of one stacked bar, bottom up: (top, height, layer).
/// A count above zero is at least 2 px tall, so it never disappears.
fn stack(bucket: &[u64], max: u64) -> Vec<(u32, u32, usize)> {
    let mut y = HEIGHT;
    let mut out = Vec::new();
    for (layer, &count) in bucket.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let h = u32::try_from((u64::from(HEIGHT) * count).div_ceil(max.max(1)))
            .unwrap_or(HEIGHT)
            .clamp(2, HEIGHT);
        let top = y.saturating_sub(h);
        out.push((top, y - top, layer));
        y = top;
    }
    out
}

/// One row's chart: a bar per bucket, scaled to `max` (shared by the rows
/// of one table so their bars compare).
fn bars(a: &Activity, s: &Series, layers: &[Layer], max: u64, kind: &str) -> Markup {
    let n = u32::try_from(s.counts.len()).unwrap_or(12);
    let width = n * (BAR_W + GAP);
    let max = max.max(1);
    let summary = layers
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{} {}", s.layer_total(i), l.label))
        .collect::<Vec<_>>()
        .join(", ");
    let label = format!(
        "{kind} {} in the last hour, per 5 minutes: {summary}",
        s.name
    );
    html! {
        svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img"
            width=(width) height=(HEIGHT + 2) viewBox={ "0 0 " (width) " " (HEIGHT + 2) }
            aria-label=(label) {
            title { (label) }
            line x1="0" y1=(HEIGHT + 1) x2=(width) y2=(HEIGHT + 1) stroke="#a0aec0" stroke-width="1" {}
            @for (i, bucket) in s.counts.iter().enumerate() {
                @let x = u32::try_from(i).unwrap_or(0) * (BAR_W + GAP);
                @let from = a.since + i64::try_from(i).unwrap_or(0) * a.bucket_ms;
                @let total: u64 = bucket.iter().sum();
                g {
                    title { (clock(from)) "–" (clock(from + a.bucket_ms)) ": " (total) " " (kind) }
                    rect x=(x) y="0" width=(BAR_W) height=(HEIGHT) fill="#edf2f7" {}
                    @for (top, h, layer) in stack(bucket, max) {
                        rect x=(x) y=(top) width=(BAR_W) height=(h) fill=(layers[layer.min(layers.len() - 1)].fill) {}
                    }
                }
            }
        }
    }
}

/// A table of series: name, chart, totals. `id` names the table for links
/// and tests.
pub fn table(a: &Activity, series: &[Series], layers: &[Layer], kind: &str, id: &str) -> Markup {
    let max = series
        .iter()
        .flat_map(|s| s.counts.iter().map(|b| b.iter().sum::<u64>()))
        .max()
        .unwrap_or(0);
    html! {
        @if series.is_empty() {
            p.muted id=(id) { "No " (kind) " in the last hour." }
        } @else {
            table.activity id=(id) {
                thead { tr {
                    th scope="col" { @if kind == "events" { "Source" } @else { "Target" } }
                    th scope="col" { "Last hour, per 5 minutes (" (clock(a.since)) "–" (clock(a.since + crate::admin::api::ACTIVITY_WINDOW_MS)) " UTC)" }
                    @for l in layers { th scope="col" .num { (l.label) } }
                } }
                tbody {
                    @for s in series { tr {
                        th scope="row" { (s.name) }
                        td { (bars(a, s, layers, max, kind)) }
                        @for (i, _) in layers.iter().enumerate() { td.num { (s.layer_total(i)) } }
                    } }
                }
            }
            @if layers.len() > 1 {
                p.legend aria-hidden="true" {
                    @for l in layers {
                        svg width="12" height="12" viewBox="0 0 12 12" { rect width="12" height="12" fill=(l.fill) {} }
                        " " (l.label) " "
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(name: &str, status: Option<DeliveryStatus>, bucket: u32, n: u64) -> ActivityCount {
        ActivityCount {
            name: name.into(),
            status,
            bucket,
            count: n,
        }
    }

    #[test]
    fn counts_land_in_their_bucket_and_layer() {
        let a = Activity {
            since: 0,
            bucket_ms: 5 * 60 * 1000,
            events: vec![count("clickup", None, 11, 3), count("clickup", None, 0, 1)],
            deliveries: vec![
                count("slack", Some(DeliveryStatus::Dead), 11, 2),
                count("slack", Some(DeliveryStatus::Delivered), 11, 5),
                count("slack", Some(DeliveryStatus::Pending), 99, 7),
            ],
        };
        let e = event_series(&a);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].counts.len(), 12);
        assert_eq!(e[0].counts[11], vec![3]);
        assert_eq!(e[0].counts[0], vec![1]);
        let d = delivery_series(&a);
        assert_eq!(d[0].counts[11], vec![5, 0, 2]);
        assert_eq!(d[0].total(), 7, "a bucket past the window is left out");
        let svg = table(&a, &d, DELIVERY_LAYERS, "deliveries", "t").into_string();
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("5 delivered, 0 pending, 2 dead"), "{svg}");
    }
}
