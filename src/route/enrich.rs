//! Task enrichment: GET the ClickUp task an event is about, once per burst.
//!
//! ClickUp payloads carry ids only; the task makes messages readable. Fetches
//! are shared while in flight and cached for [`TTL`], so a burst of events
//! about one task costs one GET. Each fetch waits for the ClickUp target's
//! rate limit like a delivery does.

use crate::deliver::classify::{Answer, Verdict, judge};
use crate::deliver::limits::Limits;
use crate::pipeline::{Endpoint, Target};
use crate::targets::clickup::api_error;
use crate::targets::request::{self, READ_BYTES, SendError};
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

async fn fetch(
    client: reqwest::Client,
    limits: Arc<Limits>,
    target: Target,
    task_id: String,
) -> Result<Value, FetchError> {
    let Endpoint::ClickUp(api) = &target.kind else {
        return Err(FetchError::Gone(format!(
            "task {task_id}: target \"{}\" is not a clickup target",
            target.name
        )));
    };
    let req = api
        .get_task(&task_id)
        .map_err(|e| FetchError::Gone(format!("task {task_id}: {e}")))?;
    limits.of(&target).ready().await;
    let reply = match request::send(&client, &req, None, target.timeout, READ_BYTES).await {
        Ok(r) => r,
        Err(e @ SendError::Transport { .. }) => {
            return Err(FetchError::Retry {
                reason: format!("task {task_id}: {e}"),
                after: None,
            });
        }
        Err(e) => return Err(FetchError::Gone(format!("task {task_id}: {e}"))),
    };
    let status = reply.status;
    let answer = Answer::Response {
        status,
        retry_after: reply.retry_after.clone(),
        ratelimit_reset: reply.ratelimit_reset.clone(),
        slack_error: None,
    };
    let clickup_err = api_error(&reply.body)
        .map(|e| format!(": {}", e.err))
        .unwrap_or_default();
    match judge(&answer, SystemTime::now()) {
        Verdict::Delivered => serde_json::from_slice(&reply.body).map_err(|e| {
            FetchError::Gone(format!(
                "task {task_id}: ClickUp answered with invalid JSON: {e}"
            ))
        }),
        Verdict::Retryable { asked, .. } => Err(FetchError::Retry {
            reason: format!("task {task_id}: ClickUp answered {status}{clickup_err}"),
            after: asked,
        }),
        Verdict::Dead { .. } if status == 404 => Err(FetchError::Gone(format!(
            "task {task_id} not found: ClickUp answered 404{clickup_err}"
        ))),
        Verdict::Dead { .. } => Err(FetchError::Gone(format!(
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
