//! Task enrichment: GET the ClickUp task an event is about, once per burst.
//!
//! ClickUp payloads carry ids only; the task makes messages readable. Fetches
//! are shared while in flight and cached for [`TTL`], so a burst of events
//! about one task costs one GET. Each fetch waits for the ClickUp target's
//! rate limit like a delivery does.

use crate::deliver::classify::{MAX_TARGET_WAIT, parse_retry_after};
use crate::deliver::execute::fetch_task;
use crate::deliver::limits::Limits;
use crate::pipeline::Target;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long a fetched task is reused.
pub const TTL: Duration = Duration::from_secs(10);

/// Why a task could not be fetched.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchError {
    /// It will not work by retrying (404, 401, bad answer): the route's
    /// deliveries are dead with this reason.
    Gone(String),
    /// Try again (connection, timeout, 429, 5xx), after the wait ClickUp
    /// asked for when it did.
    Retry {
        /// Why.
        reason: String,
        /// `Retry-After` / `X-RateLimit-Reset`.
        after: Option<Duration>,
    },
}

type Fetch = Shared<BoxFuture<'static, Result<Value, FetchError>>>;

enum Entry {
    Pending(Fetch),
    Ready(Value, Instant),
}

/// Fetches and caches tasks.
pub struct Enricher {
    client: reqwest::Client,
    limits: Arc<Limits>,
    cache: Mutex<HashMap<(String, String), Entry>>,
}

fn reset_wait(v: &str) -> Option<Duration> {
    let secs: u64 = v.trim().parse().ok()?;
    let at = std::time::UNIX_EPOCH + Duration::from_secs(secs);
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

async fn fetch(
    client: reqwest::Client,
    limits: Arc<Limits>,
    target: Target,
    task_id: String,
) -> Result<Value, FetchError> {
    limits.of(&target).ready().await;
    let reply = match fetch_task(&client, &target, &task_id).await {
        Ok(r) => r,
        Err(failed) => {
            return Err(match failed.answer {
                crate::deliver::classify::Answer::Transport { message } => FetchError::Retry {
                    reason: format!("task {task_id}: {message}"),
                    after: None,
                },
                other => FetchError::Gone(format!("task {task_id}: {other:?}")),
            });
        }
    };
    let status = reply.status;
    let clickup_err = serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v.get("err").and_then(Value::as_str).map(str::to_owned))
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    match status {
        200..=299 => serde_json::from_slice(&reply.body).map_err(|e| {
            FetchError::Gone(format!(
                "task {task_id}: ClickUp answered with invalid JSON: {e}"
            ))
        }),
        404 => Err(FetchError::Gone(format!(
            "task {task_id} not found: ClickUp answered 404{clickup_err}"
        ))),
        408 | 425 | 429 | 500..=599 => Err(FetchError::Retry {
            reason: format!("task {task_id}: ClickUp answered {status}{clickup_err}"),
            after: reply
                .retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, SystemTime::now()))
                .or_else(|| reply.ratelimit_reset.as_deref().and_then(reset_wait))
                .map(|d| d.min(MAX_TARGET_WAIT)),
        }),
        _ => Err(FetchError::Gone(format!(
            "task {task_id}: ClickUp answered {status}{clickup_err}"
        ))),
    }
}

impl Enricher {
    /// An enricher using `client` and the shared target limits.
    pub fn new(client: reqwest::Client, limits: Arc<Limits>) -> Self {
        Enricher {
            client,
            limits,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        match self.cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The task `task_id`, fetched through `via` or reused.
    pub async fn task(&self, via: &Target, task_id: &str) -> Result<Value, FetchError> {
        let key = (via.name.clone(), task_id.to_owned());
        let pending = {
            let mut cache = self.cache();
            match cache.get(&key) {
                Some(Entry::Ready(v, at)) if at.elapsed() < TTL => return Ok(v.clone()),
                Some(Entry::Pending(f)) => f.clone(),
                _ => {
                    if cache.len() > 10_000 {
                        cache.retain(|_, e| matches!(e, Entry::Ready(_, at) if at.elapsed() < TTL));
                    }
                    let f = fetch(
                        self.client.clone(),
                        self.limits.clone(),
                        via.clone(),
                        task_id.to_owned(),
                    )
                    .boxed()
                    .shared();
                    cache.insert(key.clone(), Entry::Pending(f.clone()));
                    f
                }
            }
        };
        let result = pending.await;
        let mut cache = self.cache();
        if matches!(cache.get(&key), Some(Entry::Pending(_))) {
            match &result {
                Ok(v) => {
                    cache.insert(key, Entry::Ready(v.clone(), Instant::now()));
                }
                Err(_) => {
                    cache.remove(&key);
                }
            }
        }
        result
    }
}
