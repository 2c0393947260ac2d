//! Per-target concurrency slots and rate limiters, shared by the delivery
//! worker and task enrichment (a task fetch counts against the ClickUp
//! target's rate limit like any other request).
//!
//! With a shared (PostgreSQL) store the rate limit is one budget for every
//! instance, kept in the database ([`Store::take_rate`]); the in-memory
//! limiter still paces this instance, and carries on alone while the
//! database does not answer.

use crate::pipeline::{RateLimit, Target};
use crate::store::Store;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// One target's limits.
pub struct TargetLimits {
    concurrency: u32,
    rate: Option<RateLimit>,
    /// Requests in flight at most.
    pub slots: Arc<Semaphore>,
    limiter: Option<DefaultDirectRateLimiter>,
    name: String,
    shared: Option<Store>,
}

impl TargetLimits {
    fn new(t: &Target, shared: Option<Store>) -> Self {
        TargetLimits {
            concurrency: t.concurrency,
            rate: t.rate_limit,
            slots: Arc::new(Semaphore::new(t.concurrency as usize)),
            limiter: limiter(t.rate_limit),
            name: t.name.clone(),
            shared,
        }
    }

    /// Waits until the rate limit allows one more request.
    pub async fn ready(&self) {
        let Some(l) = &self.limiter else {
            return;
        };
        l.until_ready().await;
        let (Some(store), Some(rate)) = (&self.shared, self.rate) else {
            return;
        };
        let per_ms = i64::try_from(rate.per.as_millis()).unwrap_or(i64::MAX);
        let interval_ms = (per_ms / i64::from(rate.count.max(1))).max(1);
        loop {
            match store
                .take_rate(&self.name, interval_ms, per_ms, crate::ids::now_millis())
                .await
            {
                Ok(None) => return,
                Ok(Some(wait)) => {
                    let wait = u64::try_from(wait).unwrap_or(1).min(60_000);
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                Err(e) => {
                    // The attempt itself will meet the same outage; pacing
                    // by this instance alone is the best left to do.
                    tracing::debug!(target = %self.name, error = %e, "shared rate budget unavailable");
                    return;
                }
            }
        }
    }
}

fn limiter(rate: Option<RateLimit>) -> Option<DefaultDirectRateLimiter> {
    let r = rate?;
    let count = NonZeroU32::new(r.count)?;
    let quota = Quota::with_period(r.per / r.count)?.allow_burst(count);
    Some(RateLimiter::direct(quota))
}

/// Every target's limits, rebuilt when a reload changes a target's settings.
#[derive(Default)]
pub struct Limits {
    map: Mutex<HashMap<String, Arc<TargetLimits>>>,
    shared: Option<Store>,
}

impl Limits {
    /// An empty registry.
    pub fn new() -> Arc<Limits> {
        Arc::new(Limits::default())
    }

    /// An empty registry whose rate limits are shared through `store` when
    /// several instances may use it.
    pub fn with_store(store: &Store) -> Arc<Limits> {
        Arc::new(Limits {
            map: Mutex::default(),
            shared: store.is_shared().then(|| store.clone()),
        })
    }

    /// The limits of `t` (created, or replaced when its settings changed).
    pub fn of(&self, t: &Target) -> Arc<TargetLimits> {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let stale = map
            .get(&t.name)
            .is_none_or(|s| s.concurrency != t.concurrency || s.rate != t.rate_limit);
        if stale {
            map.insert(
                t.name.clone(),
                Arc::new(TargetLimits::new(t, self.shared.clone())),
            );
        }
        map[&t.name].clone()
    }
}
