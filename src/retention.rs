//! Retention: delivered and dead history older than `retention_days` is
//! pruned in the background, in small batches that never hold the writer for
//! long. Pending work is never pruned; an event goes only when nothing is
//! left to deliver for it (its dedupe id is remembered until then).

use crate::ids::now_millis;
use crate::store::{Pruned, Store};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Rows per batch.
pub const BATCH: u32 = 500;
/// Time between passes.
pub const EVERY: Duration = Duration::from_secs(600);

/// One pass: prunes in batches until a batch comes back short.
pub async fn prune_once(store: &Store, retention_days: u32) -> Pruned {
    let cutoff = now_millis() - i64::from(retention_days) * 86_400_000;
    let mut total = Pruned::default();
    loop {
        match store.prune(cutoff, BATCH).await {
            Ok(p) => {
                total.deliveries += p.deliveries;
                total.events += p.events;
                if p.deliveries < u64::from(BATCH) && p.events < u64::from(BATCH) {
                    break;
                }
                // Let inbound writes in between batches.
                tokio::task::yield_now().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention pass failed; trying again later");
                break;
            }
        }
    }
    if total.deliveries > 0 || total.events > 0 {
        tracing::info!(
            deliveries = total.deliveries,
            events = total.events,
            retention_days,
            "old history pruned"
        );
    }
    total
}

/// Prunes a minute after start, then every [`EVERY`], until `cancel`.
pub async fn run(store: Store, retention_days: u32, cancel: CancellationToken) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        prune_once(&store, retention_days).await;
        wait = EVERY;
    }
}
