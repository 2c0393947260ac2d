//! Per-target concurrency slots and rate limiters, shared by the delivery
//! worker and task enrichment (a task fetch counts against the ClickUp
//! target's rate limit like any other request).

use crate::pipeline::{RateLimit, Target};
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
}

impl TargetLimits {
    fn new(t: &Target) -> Self {
        TargetLimits {
            concurrency: t.concurrency,
            rate: t.rate_limit,
            slots: Arc::new(Semaphore::new(t.concurrency as usize)),
            limiter: limiter(t.rate_limit),
        }
    }

    /// Waits until the rate limit allows one more request.
    pub async fn ready(&self) {
        if let Some(l) = &self.limiter {
            l.until_ready().await;
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
}

impl Limits {
    /// An empty registry.
    pub fn new() -> Arc<Limits> {
        Arc::new(Limits::default())
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
            map.insert(t.name.clone(), Arc::new(TargetLimits::new(t)));
        }
        map[&t.name].clone()
    }
}
