//! Prometheus metrics, in one registry passed to whoever counts (no global
//! recorder).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Labels of inbound events.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The source (`_unknown` for a name that is not configured, so a
    /// scanner cannot add label values).
    pub source: String,
    /// accepted, duplicate or rejected.
    pub outcome: String,
    /// Why it was rejected (empty otherwise).
    pub reason: String,
}

/// Target and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetOutcome {
    /// Target name.
    pub target: String,
    /// delivered, retry or dead.
    pub outcome: String,
}

/// A single label `state`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// unrouted, pending, dead or waiting (pending behind another).
    pub state: String,
}

/// A single label `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// success or failure.
    pub result: String,
}

/// One ClickUp webhook watched for health.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// The clickup source that watches it.
    pub source: String,
    /// ClickUp's webhook id.
    pub webhook_id: String,
}

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    /// `clickup_bridge_events_received_total{source,outcome,reason}`.
    pub events_received: Family<EventLabels, Counter>,
    /// `clickup_bridge_deliveries_total{target,outcome}`: final outcomes.
    pub deliveries: Family<TargetOutcome, Counter>,
    /// `clickup_bridge_delivery_attempts_total{target,outcome}`.
    pub attempts: Family<TargetOutcome, Counter>,
    /// `clickup_bridge_delivery_latency_seconds`: acceptance to delivered.
    pub latency: Histogram,
    /// `clickup_bridge_queue_depth{state}`, refreshed at each scrape.
    pub queue_depth: Family<StateLabel, Gauge>,
    /// `clickup_bridge_oldest_pending_age_seconds`.
    pub oldest_pending_age: Gauge<f64, AtomicU64>,
    /// `clickup_bridge_config_reloads_total{result}`.
    pub reloads: Family<ResultLabel, Counter>,
    /// `clickup_bridge_clickup_webhook_healthy{source,webhook_id}`: 1 when active.
    pub webhook_healthy: Family<WebhookLabels, Gauge>,
    /// `clickup_bridge_clickup_webhook_fail_count{source,webhook_id}`.
    pub webhook_fail_count: Family<WebhookLabels, Gauge>,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("clickup_bridge");
        let events_received = Family::<EventLabels, Counter>::default();
        registry.register(
            "events_received",
            "Webhook requests by source and outcome",
            events_received.clone(),
        );
        let deliveries = Family::<TargetOutcome, Counter>::default();
        registry.register(
            "deliveries",
            "Deliveries that reached a final outcome",
            deliveries.clone(),
        );
        let attempts = Family::<TargetOutcome, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Delivery attempts by target and outcome",
            attempts.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.005, 2.0, 18));
        registry.register(
            "delivery_latency_seconds",
            "Time from acceptance to delivered",
            latency.clone(),
        );
        let queue_depth = Family::<StateLabel, Gauge>::default();
        registry.register(
            "queue_depth",
            "Unrouted events, pending and dead deliveries, and pending ones waiting behind another",
            queue_depth.clone(),
        );
        let oldest_pending_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_pending_age_seconds",
            "Age of the oldest event with a pending delivery",
            oldest_pending_age.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "routes.yaml reloads by result",
            reloads.clone(),
        );
        let webhook_healthy = Family::<WebhookLabels, Gauge>::default();
        registry.register(
            "clickup_webhook_healthy",
            "1 when ClickUp reports the webhook active, else 0",
            webhook_healthy.clone(),
        );
        let webhook_fail_count = Family::<WebhookLabels, Gauge>::default();
        registry.register(
            "clickup_webhook_fail_count",
            "ClickUp's fail count of the webhook",
            webhook_fail_count.clone(),
        );
        Arc::new(Metrics {
            registry,
            events_received,
            deliveries,
            attempts,
            latency,
            queue_depth,
            oldest_pending_age,
            reloads,
            webhook_healthy,
            webhook_fail_count,
        })
    }

    /// Counts one webhook request.
    pub fn event(&self, source: &str, outcome: &str, reason: &str) {
        self.events_received
            .get_or_create(&EventLabels {
                source: source.to_owned(),
                outcome: outcome.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one attempt, and the delivery when the outcome is final.
    pub fn attempt(&self, target: &str, outcome: &str) {
        let labels = TargetOutcome {
            target: target.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.attempts.get_or_create(&labels).inc();
        if outcome != "retry" {
            self.deliveries.get_or_create(&labels).inc();
        }
    }

    /// Counts a reload.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    /// The Prometheus (OpenMetrics) text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
