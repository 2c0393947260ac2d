//! Routing: which routes an event fires, and the deliveries they create.
//!
//! The matching is pure ([`matcher`]); [`Router`] is the worker that claims
//! stored, unrouted events, matches them against the pipeline in force, and
//! stores one delivery per send step together with the event's "routed" mark
//! (one transaction), then wakes the delivery workers.

pub mod matcher;

use crate::ids::{DeliveryId, now_millis};
use crate::pipeline::Pipeline;
use crate::store::{EventToRoute, NewDelivery, RoutedEvent, Store, StoreError};
use arc_swap::ArcSwap;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Events claimed per step.
const BATCH: u32 = 256;
/// How long a claim on an event lasts before another router may take it.
const LEASE_MS: i64 = 60_000;

/// Routes one event (pure): the matched routes and their deliveries.
pub fn route_event(pipeline: &Pipeline, event: &EventToRoute) -> RoutedEvent {
    let payload: Value = serde_json::from_slice(&event.payload).unwrap_or(Value::Null);
    let mut matched = Vec::new();
    let mut deliveries = Vec::new();
    for route in &pipeline.routes {
        match matcher::matches_event(route, &event.source, &event.event_type, &payload) {
            Ok(()) => {}
            Err(m) => {
                if route.source == event.source {
                    tracing::debug!(event_id = %event.id, route = %route.name, reason = %m.reason, "route does not match");
                }
                continue;
            }
        }
        let context = Value::Object(matcher::extract(route, &payload));
        matched.push(route.name.clone());
        for (i, step) in route.send.iter().enumerate() {
            deliveries.push(NewDelivery {
                id: DeliveryId::generate(),
                route: route.name.clone(),
                step: u32::try_from(i).unwrap_or(u32::MAX),
                target: step.target.clone(),
                context: context.clone(),
            });
        }
    }
    RoutedEvent {
        event_id: event.id.clone(),
        matched_routes: matched,
        deliveries,
    }
}

/// The router worker.
pub struct Router {
    /// The routes in force.
    pub pipeline: Arc<ArcSwap<Pipeline>>,
    /// The store.
    pub store: Store,
    /// Notified when events are stored.
    pub wake: Arc<Notify>,
    /// Notified when deliveries are created.
    pub wake_deliveries: Arc<Notify>,
}

/// What one [`Router::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterStep {
    /// Routed this many events.
    Routed(usize),
    /// Nothing to route.
    Idle,
}

impl Router {
    /// Claims and routes one batch of events.
    pub async fn step(&self) -> Result<RouterStep, StoreError> {
        let now = now_millis();
        let events = self.store.claim_events(BATCH, now, LEASE_MS).await?;
        if events.is_empty() {
            return Ok(RouterStep::Idle);
        }
        let pipeline = self.pipeline.load();
        let routed: Vec<RoutedEvent> = events.iter().map(|e| route_event(&pipeline, e)).collect();
        let created: usize = routed.iter().map(|r| r.deliveries.len()).sum();
        for r in &routed {
            if r.matched_routes.is_empty() {
                tracing::info!(event_id = %r.event_id, "event matched no route");
            } else {
                tracing::info!(event_id = %r.event_id, routes = ?r.matched_routes, deliveries = r.deliveries.len(), "event routed");
            }
        }
        self.store.complete_routing(routed, now_millis()).await?;
        if created > 0 {
            self.wake_deliveries.notify_one();
        }
        Ok(RouterStep::Routed(events.len()))
    }

    /// Runs until `cancel`: routes whenever woken, and every second anyway.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            match self.step().await {
                Ok(RouterStep::Routed(_)) => continue,
                Ok(RouterStep::Idle) => {}
                Err(e) => tracing::error!(error = %e, "routing failed; retrying"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
