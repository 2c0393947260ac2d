//! Deliveries started where their event is accepted, without a claim.
//!
//! An event routed at acceptance is stored with its deliveries in one
//! commit. A delivery that could be sent at once (its target has a free
//! slot, and it waits behind nothing: the first step of its route, no link
//! it reads, and nothing of its ordering key pending, which the commit
//! checks: `Inserted::unclaimed`) is stored already claimed by this
//! process: leased, with its claim counted, exactly as the worker's claim
//! would leave it. Once the commit is answered the inbound hands it, with
//! its slot, to the delivery worker, which sends it. That spares each such
//! delivery the claim: a writer commit, a query that reads the event's
//! payload back, and a wake-up of the worker (bench/README.md, "Fourth
//! pass").
//!
//! Nothing else changes: the attempt is recorded as any other, a delivery
//! that found no free slot is claimed by the worker as before, and a
//! process that dies meanwhile leaves the delivery leased with its claim
//! counted, as a crash after a claim does (SQLite frees every lease when it
//! opens the store). Only a store one process owns does this: a shared
//! (PostgreSQL) store's instances renew the leases they claimed, and this
//! path would need the same.

use super::limits::{Limits, TargetLimits};
use crate::ids::{DeliveryId, EventId};
use crate::pipeline::Pipeline;
use crate::store::{ClaimedDelivery, Routing};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

/// A delivery claimed at acceptance, with its target's slot.
pub struct Started {
    pub(super) delivery: ClaimedDelivery,
    pub(super) limits: Arc<TargetLimits>,
    pub(super) slot: OwnedSemaphorePermit,
    /// The event's payload as intake parsed it (given to the first delivery
    /// of an event; the others parse the stored bytes).
    pub(super) event: Option<Value>,
}

/// What the inbound hands the worker.
pub enum Handed {
    /// A delivery stored claimed: send it.
    Start(Box<Started>),
    /// Deliveries reserved for an event whose request ended before they
    /// were started (its commit failed, timed out, or the request was cut):
    /// if the commit landed, they are stored claimed; release them so they
    /// are claimed at once instead of after their lease.
    Release(Vec<DeliveryId>),
}

/// The deliveries of one event that [`Starter::reserve`] claimed. Dropped
/// unstarted, their slots are free again and the worker releases their
/// claims (a commit that lands late is then undone in order: the writer
/// takes the release after the insert); [`Reserved::cancel`] for a
/// duplicate, whose deliveries were never stored.
#[derive(Default)]
pub struct Reserved {
    started: Vec<Started>,
    to_worker: Option<mpsc::UnboundedSender<Handed>>,
}

impl Reserved {
    /// How many deliveries were claimed.
    pub fn len(&self) -> usize {
        self.started.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.started.is_empty()
    }

    /// Frees the slots of deliveries that were not stored (a duplicate).
    pub fn cancel(mut self) {
        self.started.clear();
    }

    /// Frees the slots of the deliveries the commit stored unclaimed
    /// (`Inserted::unclaimed`: they wait behind an earlier one of their
    /// ordering key); the worker claims them in their turn.
    pub fn forget(&mut self, unclaimed: &[DeliveryId]) {
        self.started.retain(|s| !unclaimed.contains(&s.delivery.id));
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.started.is_empty() {
            return;
        }
        if let Some(to_worker) = &self.to_worker {
            let ids = self.started.iter().map(|s| s.delivery.id.clone()).collect();
            let _ = to_worker.send(Handed::Release(ids));
        }
    }
}

/// What the inbound knows of an accepted event.
pub struct Accepted<'a> {
    pub id: &'a EventId,
    pub source: &'a str,
    pub event_type: &'a str,
    pub body: &'a [u8],
    pub received_at: i64,
}

/// The inbound's end: reserves slots and hands deliveries to the worker.
#[derive(Clone)]
pub struct Starter {
    limits: Arc<Limits>,
    to_worker: mpsc::UnboundedSender<Handed>,
}

/// The worker's end.
pub type Starts = mpsc::UnboundedReceiver<Handed>;

/// A starter over the worker's target limits, and the worker's end.
pub fn channel(limits: Arc<Limits>) -> (Starter, Starts) {
    let (to_worker, starts) = mpsc::unbounded_channel();
    (Starter { limits, to_worker }, starts)
}

impl Starter {
    /// Takes a free slot of its target for each delivery of `routing` that
    /// could be sent at once and marks it claimed (`lease_until`), so the
    /// event's commit stores it claimed. The rest are left to the worker.
    pub fn reserve(
        &self,
        pipeline: &Pipeline,
        event: &Accepted<'_>,
        routing: &mut Routing,
    ) -> Reserved {
        let mut reserved = Vec::new();
        for d in &mut routing.deliveries {
            // An ordering key is checked by the commit, which sees what is
            // pending (`Inserted::unclaimed`).
            let waits = d.step > 0 || d.dead.is_some() || d.order.link_task.is_some();
            if waits {
                continue;
            }
            let Some(target) = pipeline.targets.get(&d.target) else {
                continue;
            };
            let limits = self.limits.of(target);
            let Ok(slot) = limits.slots.clone().try_acquire_owned() else {
                continue;
            };
            d.lease_until = Some(
                event
                    .received_at
                    .saturating_add(super::lease_ms(target.timeout)),
            );
            reserved.push(Started {
                delivery: ClaimedDelivery {
                    id: d.id.clone(),
                    event_id: event.id.clone(),
                    route: d.route.clone(),
                    step: d.step,
                    target: d.target.clone(),
                    attempts: 0,
                    attempts_base: 0,
                    unfinished_claims: 0,
                    context: d.context.clone(),
                    source: event.source.to_owned(),
                    event_type: event.event_type.to_owned(),
                    payload: event.body.to_vec(),
                    received_at: event.received_at,
                },
                limits,
                slot,
                event: None,
            });
        }
        Reserved {
            started: reserved,
            to_worker: Some(self.to_worker.clone()),
        }
    }

    /// Hands the reserved deliveries of a committed event to the worker;
    /// the first one takes the payload tree intake parsed.
    pub fn start(&self, mut reserved: Reserved, mut event: Option<Value>) {
        for mut s in std::mem::take(&mut reserved.started) {
            s.event = event.take();
            // A worker that has stopped drops it: the delivery stays claimed
            // until the store is opened again, which frees every lease.
            let _ = self.to_worker.send(Handed::Start(Box::new(s)));
        }
    }
}
