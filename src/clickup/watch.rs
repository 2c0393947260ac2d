//! Webhook health watch: ClickUp silently marks a failing webhook `failing`
//! and then `suspended` and tells nobody. For each clickup source with a
//! `watch:` block, the daemon polls the team's webhooks, exposes each one's
//! health as metrics, warns when one leaves `active`, and with
//! `auto_reactivate: true` sets a suspended one back to active.

use super::{ClickUpApi, Webhook};
use crate::metrics::{Metrics, WebhookLabels};
use crate::pipeline::{Endpoint, Live, Pipeline};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the watch remembers between polls: each webhook's last status.
#[derive(Default)]
pub struct Watch {
    last: HashMap<String, String>,
    board: Arc<HealthBoard>,
}

/// One webhook as the watch last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHealth {
    /// The source that watches it.
    pub source: String,
    /// ClickUp's webhook id.
    pub webhook_id: String,
    /// Where ClickUp sends its events.
    pub endpoint: String,
    /// `active`, `failing` or `suspended`.
    pub status: String,
    /// ClickUp's fail count.
    pub fail_count: i64,
    /// When it was read, Unix ms.
    pub checked_at: i64,
}

/// The last health of every watched webhook, shared with the console.
#[derive(Debug, Default)]
pub struct HealthBoard {
    seen: std::sync::Mutex<std::collections::BTreeMap<(String, String), WebhookHealth>>,
}

impl HealthBoard {
    fn record(&self, h: WebhookHealth) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert((h.source.clone(), h.webhook_id.clone()), h);
    }

    /// Every webhook seen so far, by source and id.
    pub fn all(&self) -> Vec<WebhookHealth> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.values().cloned().collect()
    }
}

impl Watch {
    /// Polls every watched source once.
    pub async fn poll(&mut self, pipeline: &Pipeline, client: &reqwest::Client, metrics: &Metrics) {
        for source in pipeline.sources.values() {
            let Some(w) = &source.watch else { continue };
            let Some(Endpoint::ClickUp(api)) = pipeline.targets.get(&w.via).map(|t| &t.kind) else {
                continue;
            };
            let api = ClickUpApi::new(client.clone(), &api.base_url, api.token.clone());
            let hooks = match api.list_webhooks(&w.team_id).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(source = %source.name, team_id = %w.team_id, error = %e, "cannot read ClickUp webhook health");
                    continue;
                }
            };
            for hook in hooks {
                self.observe(&source.name, &hook, metrics);
                if w.auto_reactivate && hook.status == "suspended" {
                    match api.reactivate(&hook).await {
                        Ok(h) => {
                            tracing::warn!(source = %source.name, webhook_id = %hook.id, status = %h.status, "suspended ClickUp webhook reactivated");
                            self.observe(&source.name, &h, metrics);
                        }
                        Err(e) => {
                            tracing::error!(source = %source.name, webhook_id = %hook.id, error = %e, "cannot reactivate the ClickUp webhook")
                        }
                    }
                }
            }
        }
    }

    fn observe(&mut self, source: &str, hook: &Webhook, metrics: &Metrics) {
        self.board.record(WebhookHealth {
            source: source.to_owned(),
            webhook_id: hook.id.clone(),
            endpoint: hook.endpoint.clone(),
            status: hook.status.clone(),
            fail_count: hook.fail_count,
            checked_at: crate::ids::now_millis(),
        });
        let labels = WebhookLabels {
            source: source.to_owned(),
            webhook_id: hook.id.clone(),
        };
        metrics
            .webhook_healthy
            .get_or_create(&labels)
            .set(i64::from(hook.status == "active"));
        metrics
            .webhook_fail_count
            .get_or_create(&labels)
            .set(hook.fail_count);
        let before = self.last.insert(hook.id.clone(), hook.status.clone());
        if hook.status != "active" && before.as_deref() != Some(hook.status.as_str()) {
            tracing::warn!(
                source,
                webhook_id = %hook.id,
                endpoint = %hook.endpoint,
                status = %hook.status,
                fail_count = hook.fail_count,
                "ClickUp webhook is not active: ClickUp stops sending events to a suspended webhook"
            );
        } else if hook.status == "active" && before.is_some_and(|b| b != "active") {
            tracing::info!(source, webhook_id = %hook.id, "ClickUp webhook is active again");
        }
    }
}

/// Polls at once, then every `interval` (the shortest of the watched
/// sources'; a reload may change it), until `cancel`. What it sees is kept
/// on `board`.
///
/// With a shared (PostgreSQL) store, a pass runs only on the instance that
/// holds the watch's lock at that moment: one instance at a time calls
/// ClickUp, so a suspended webhook is reactivated once.
pub async fn run(
    store: crate::store::Store,
    pipeline: Arc<Live>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    board: Arc<HealthBoard>,
    cancel: CancellationToken,
) {
    let mut watch = Watch {
        board,
        ..Watch::default()
    };
    loop {
        let p = pipeline.load_full();
        let every = p
            .sources
            .values()
            .filter_map(|s| s.watch.as_ref().map(|w| w.interval))
            .min()
            .unwrap_or(Duration::from_secs(60));
        if p.sources.values().any(|s| s.watch.is_some()) {
            match store.exclusive(crate::store::Exclusive::ClickUpWatch).await {
                Ok(Some(_held)) => watch.poll(&p, &client, &metrics).await,
                Ok(None) => tracing::debug!("another instance is watching the ClickUp webhooks"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take the ClickUp watch's lock; trying again later")
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
