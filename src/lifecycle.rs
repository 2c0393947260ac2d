//! Process signals.

/// Calls `reload` on every SIGHUP until the process ends.
/// Starts listening for SIGHUP now. Until a process listens, SIGHUP's
/// default action ends it: call this before the listeners accept anything
/// (a `systemctl reload` right after start must not kill the daemon).
pub fn listen_for_sighup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload through the admin API");
            None
        }
    }
}

/// Calls `reload` on every SIGHUP until the process ends.
pub fn spawn_reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    reload: impl Fn() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading routes");
            reload();
        }
    })
}

/// Starts listening for SIGTERM and SIGINT now (so one that arrives while
/// the daemon starts is not fatal) and returns a future that completes on
/// either.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                // Without signal handlers, Ctrl-C is the only way to stop.
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Counts webhook requests in flight so shutdown can wait for exactly them.
///
/// Why not rely on actix-web's graceful stop alone: it waits on connections,
/// not requests, so idle keep-alive connections hold it for the whole
/// timeout, and it was seen to drop a request whose body was still arriving.
/// Tracking requests ourselves makes "finish what was started" exact.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    draining: AtomicBool,
    idle: Notify,
}

/// Held while one request is being handled.
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// A new tracker.
    pub fn new() -> Arc<InFlight> {
        Arc::new(InFlight::default())
    }

    /// Registers a request; `None` once draining has begun (answer 503 so the
    /// sender retries against the next instance or after the restart).
    pub fn enter(self: &Arc<Self>) -> Option<InFlightGuard> {
        self.count.fetch_add(1, Ordering::AcqRel);
        let guard = InFlightGuard(self.clone());
        if self.draining.load(Ordering::Acquire) {
            return None;
        }
        Some(guard)
    }

    /// Refuses new requests and waits until those in flight are done, at most
    /// `timeout`. Returns how many were still running when it gave up.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.draining.store(true, Ordering::Release);
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        self.count.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_requests_in_flight_and_refuses_new_ones() {
        let f = InFlight::new();
        let g = f.enter().unwrap();
        let f2 = f.clone();
        let drained = tokio::spawn(async move { f2.drain(Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        assert!(
            f.enter().is_none(),
            "new requests are refused while draining"
        );
        drop(g);
        assert_eq!(drained.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn drain_gives_up_after_the_timeout() {
        let f = InFlight::new();
        let _g = f.enter().unwrap();
        assert_eq!(f.drain(Duration::from_millis(10)).await, 1);
    }
}

/// systemd's notify protocol (`Type=notify`): no-ops without `NOTIFY_SOCKET`.
pub mod systemd {
    use sd_notify::NotifyState;
    use std::time::Duration;

    fn send(states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// READY=1: the listeners are bound and the store is open.
    pub fn ready() {
        send(&[NotifyState::Ready, NotifyState::Status("serving")]);
    }

    /// STOPPING=1: shutdown has begun.
    pub fn stopping() {
        send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// When systemd set `WATCHDOG_USEC`, pings it at half the interval from
    /// the async runtime, and only while the store answers (its writer
    /// included): a wedged runtime or a dead store gets the process
    /// restarted instead of answering 503 for ever.
    pub fn spawn_watchdog(store: crate::store::Store) -> Option<tokio::task::JoinHandle<()>> {
        let every = sd_notify::watchdog_enabled()? / 2;
        let every = every.max(Duration::from_millis(10));
        tracing::info!(
            interval_ms = every.as_millis() as u64,
            "systemd watchdog enabled"
        );
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match store.ping().await {
                    Ok(()) => send(&[NotifyState::Watchdog]),
                    // A database server that does not answer is not fixed
                    // by restarting this process: the pool reconnects by
                    // itself when it is back (inbound answers 503 meanwhile).
                    Err(e) if store.is_shared() && e.is_unavailable() => {
                        tracing::warn!(error = %e, "database unreachable; waiting for it");
                        send(&[NotifyState::Watchdog]);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "store unhealthy: withholding the watchdog ping")
                    }
                }
            }
        }))
    }
}
