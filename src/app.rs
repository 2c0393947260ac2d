//! Wiring: settings -> pipeline, store, listeners; run until a shutdown signal.
//!
//! Nothing here decides anything: each part is built by its module and
//! handed what it shares (the [`Live`] pipeline, the store, the metrics,
//! the wake-ups).

use crate::admin::{self, AdminState};
use crate::console;
use crate::deliver::Deliverer;
use crate::deliver::limits::Limits;
use crate::inbound::{self, InboundState};
use crate::lifecycle::InFlight;
use crate::metrics::Metrics;
use crate::pipeline::{Live, LoadError};
use crate::route::enrich::Enricher;
use crate::route::{Router, RouterShared};
use crate::settings::Settings;
use crate::store::{Store, StoreError, StoreOptions};
use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// routes.yaml has errors (each diagnostic says what to fix).
    #[error("the routes file has errors; fix them and start again:\n{0}")]
    Routes(#[from] LoadError),
    /// The store cannot be opened.
    #[error("cannot open the store {at}: {cause}{}", store_advice(.cause))]
    Store {
        /// Where it is (without a password).
        at: String,
        /// Why (said in the message; not a separate cause).
        cause: StoreError,
    },
    /// A listener cannot bind.
    #[error("cannot listen on {addr} (setting {setting}): {}", bind_advice(.cause))]
    Bind {
        /// The setting that names the address (`listen`, `admin_listen`).
        setting: &'static str,
        /// The address.
        addr: String,
        /// Why (said in the message, with advice; not a separate cause).
        cause: std::io::Error,
    },
    /// The HTTP client for deliveries cannot be built (TLS roots).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// `tls_cert` / `tls_key` do not load.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The admin listener is reachable from the network without a token.
    #[error(
        "admin_listen {0} is not a loopback address: set admin_token (CLICKUP_BRIDGE_ADMIN_TOKEN) or listen on 127.0.0.1"
    )]
    AdminTokenRequired(String),
}

/// A built, not yet running daemon.
pub struct Application {
    listen_addr: SocketAddr,
    admin_addr: SocketAddr,
    server: Server,
    admin_server: Server,
    store: Store,
    shutdown_timeout: Duration,
    pipeline: Arc<Live>,
    in_flight: Arc<InFlight>,
    wake_router: Arc<Notify>,
    wake_deliveries: Arc<Notify>,
    deliverer: Deliverer,
    enricher: Enricher,
    metrics: Arc<Metrics>,
    retention_days: u32,
    client: reqwest::Client,
    hangup: Option<tokio::signal::unix::Signal>,
    webhooks: Arc<crate::clickup::watch::HealthBoard>,
}

/// What to do about a store that does not open, unless its message says.
fn store_advice(e: &StoreError) -> &'static str {
    if e.to_string().contains("; ") {
        ""
    } else {
        "; check that the store setting names a clickup-bridge database this user can read and write"
    }
}

/// The cause of a failed bind in words, with what to do about it.
fn bind_advice(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "the address is already in use; stop the other process or choose another address".into()
        }
        std::io::ErrorKind::PermissionDenied => {
            "permission denied; ports below 1024 need privileges, choose a port above 1024".into()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "no interface of this machine has that address; use one it has, or 0.0.0.0".into()
        }
        _ => format!("{e}; check the address (host:port)"),
    }
}

fn bind(setting: &'static str, addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).map_err(|cause| StartError::Bind {
        setting,
        addr: addr.to_owned(),
        cause,
    })
}

/// Connections the admin listener holds at once (operators and probes).
const ADMIN_MAX_CONNECTIONS: usize = 256;

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

impl Application {
    /// Loads routes, opens the store and binds both listeners. Nothing is
    /// served until [`Application::run_until_stopped`].
    pub async fn build(settings: &Settings) -> Result<Application, StartError> {
        // Before anything listens: an early SIGHUP must reload, not kill.
        let hangup = crate::lifecycle::listen_for_sighup();
        let metrics = Metrics::new();
        let pipeline = Live::open(
            settings.routes.clone(),
            settings.templates.clone(),
            metrics.clone(),
        )?;
        let listener = bind("listen", &settings.listen)?;
        let admin_listener = bind("admin_listen", &settings.admin_listen)?;
        let listen_addr = listener.local_addr().map_err(|cause| StartError::Bind {
            setting: "listen",
            addr: settings.listen.clone(),
            cause,
        })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|cause| StartError::Bind {
                setting: "admin_listen",
                addr: settings.admin_listen.clone(),
                cause,
            })?;
        if !is_loopback(&admin_addr) && settings.admin_token.is_none() {
            return Err(StartError::AdminTokenRequired(
                settings.admin_listen.clone(),
            ));
        }
        let certificates = settings
            .http
            .tls
            .as_ref()
            .map(crate::tls::Certificates::open)
            .transpose()?;
        let tls_config = certificates
            .as_ref()
            .map(|c| c.server_config())
            .transpose()?;
        let store = Store::open_with(
            &settings.store,
            &StoreOptions {
                lease_timeout: Duration::from_secs(settings.lease_timeout),
            },
        )
        .await
        .map_err(|cause| StartError::Store {
            at: settings.store.describe(),
            cause,
        })?;
        tracing::info!(store = %settings.store.describe(), "store opened");
        let pipeline = Arc::new(pipeline.with_certificates(certificates));
        let shutdown_timeout = Duration::from_secs(settings.shutdown_timeout);

        let in_flight = InFlight::new();
        let wake_router = Arc::new(Notify::new());
        let wake_deliveries = Arc::new(Notify::new());
        store.forward_wakeups(wake_router.clone(), wake_deliveries.clone());
        let client = crate::deliver::http_client()?;
        let limits = Limits::with_store(&store);
        let mut deliverer = Deliverer::new(
            pipeline.clone(),
            store.clone(),
            client.clone(),
            limits.clone(),
            wake_deliveries.clone(),
            metrics.clone(),
        );
        // A store this process owns alone: deliveries that can be sent at
        // once are claimed in their event's commit and started by the
        // inbound. A shared store's claims are renewed by their instance,
        // so there the worker claims everything.
        let starter = if store.is_shared() {
            None
        } else {
            let (starter, starts) = crate::deliver::direct::channel(limits.clone());
            deliverer = deliverer.with_starts(starts);
            Some(starter)
        };
        let enricher = Enricher::new(client.clone(), limits);
        let inbound_state = web::Data::new(InboundState {
            pipeline: pipeline.clone(),
            store: store.clone(),
            max_body: settings.max_body,
            body_timeout: settings.http.body_timeout,
            in_flight: in_flight.clone(),
            wake_router: wake_router.clone(),
            wake_deliveries: wake_deliveries.clone(),
            metrics: metrics.clone(),
            starter,
        });
        let webhook_workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(inbound_state.clone())
                .configure(inbound::configure)
        })
        .workers(webhook_workers)
        .max_connections(settings.http.max_connections.div_ceil(webhook_workers))
        .client_request_timeout(settings.http.body_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        .disable_signals()
        .shutdown_timeout(settings.shutdown_timeout);
        // With a certificate the webhook listener speaks HTTPS only.
        let server = match &tls_config {
            Some(config) => server.listen_rustls_0_23(listener, config.clone()),
            None => server.listen(listener),
        }
        .map_err(|cause| StartError::Bind {
            setting: "listen",
            addr: settings.listen.clone(),
            cause,
        })?
        .run();

        let webhooks = Arc::new(crate::clickup::watch::HealthBoard::default());
        let admin_state = web::Data::new(AdminState {
            store: store.clone(),
            metrics: metrics.clone(),
            token: settings.admin_token.clone(),
            pipeline: pipeline.clone(),
            wake_deliveries: wake_deliveries.clone(),
            webhooks: webhooks.clone(),
        });
        let console_keys = web::Data::new(console::Keys::new(settings.admin_token.as_deref()));
        let admin_server = HttpServer::new(move || {
            App::new()
                .app_data(admin_state.clone())
                .app_data(console_keys.clone())
                .configure(admin::configure)
                .service(console::scope())
        })
        .workers(1)
        // Its own cap and deadlines: the admin listener keeps answering
        // (probes, the API) while the webhook listener is flooded.
        .max_connections(ADMIN_MAX_CONNECTIONS)
        .client_request_timeout(settings.http.body_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        .disable_signals()
        .shutdown_timeout(settings.shutdown_timeout);
        // The admin token must not cross a network in clear: HTTPS too when
        // the admin listener is reachable from other machines.
        let admin_server = match &tls_config {
            Some(config) if !is_loopback(&admin_addr) => {
                admin_server.listen_rustls_0_23(admin_listener, config.clone())
            }
            _ => admin_server.listen(admin_listener),
        }
        .map_err(|cause| StartError::Bind {
            setting: "admin_listen",
            addr: settings.admin_listen.clone(),
            cause,
        })?
        .run();

        Ok(Application {
            listen_addr,
            admin_addr,
            server,
            admin_server,
            store,
            shutdown_timeout,
            pipeline,
            in_flight,
            wake_router,
            wake_deliveries,
            deliverer,
            enricher,
            metrics,
            retention_days: settings.retention_days,
            client,
            hangup,
            webhooks,
        })
    }

    /// The bound webhook address (useful with port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// A handle to the store (tests inspect it).
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// The routes in force.
    pub fn pipeline(&self) -> Arc<Live> {
        self.pipeline.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests
    /// in flight finish (bounded by `shutdown_timeout`) and closes the store.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let handle: ServerHandle = self.server.handle();
        let admin_handle: ServerHandle = self.admin_server.handle();
        let https = self.pipeline.certificates().is_some();
        let admin_https = https && !is_loopback(&self.admin_addr);
        tracing::info!(listen = %self.listen_addr, admin = %self.admin_addr, https, admin_https, "clickup-bridge serving");
        let server = tokio::spawn(self.server);
        let admin = tokio::spawn(self.admin_server);
        let cancel = CancellationToken::new();
        let router = tokio::spawn(
            Router::new(Arc::new(RouterShared {
                pipeline: self.pipeline.clone(),
                store: self.store.clone(),
                wake: self.wake_router.clone(),
                wake_deliveries: self.wake_deliveries.clone(),
                enricher: self.enricher,
            }))
            .run(cancel.clone()),
        );
        let deliverer = tokio::spawn(self.deliverer.run(cancel.clone(), self.shutdown_timeout));
        let retention = tokio::spawn(crate::retention::run(
            self.store.clone(),
            self.retention_days,
            cancel.clone(),
        ));
        let watch = tokio::spawn(crate::clickup::watch::run(
            self.store.clone(),
            self.pipeline.clone(),
            self.client.clone(),
            self.metrics.clone(),
            self.webhooks.clone(),
            cancel.clone(),
        ));
        crate::lifecycle::systemd::ready();
        let watchdog = crate::lifecycle::systemd::spawn_watchdog(self.store.clone());
        let live = self.pipeline.clone();
        // The outcome is logged and counted by the reload itself.
        let reloader = self.hangup.map(|hup| {
            crate::lifecycle::spawn_reload_on_sighup(hup, move || {
                let _ = live.reload();
            })
        });
        shutdown.await;
        // One deadline for the whole shutdown: requests, then workers, then
        // the store, each with what is left of it (a wedged store must not
        // stretch SIGTERM beyond shutdown_timeout).
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        crate::lifecycle::systemd::stopping();
        tracing::info!(
            timeout_secs = self.shutdown_timeout.as_secs(),
            "shutting down: finishing requests in flight"
        );
        // Stop accepting connections, let every request already started
        // finish (bounded), then close what is left: idle keep-alive
        // connections, and requests that arrived meanwhile and were answered
        // 503 so their senders retry.
        tokio::join!(handle.pause(), admin_handle.pause());
        let left = self
            .in_flight
            .drain(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await;
        if left > 0 {
            tracing::warn!(
                left,
                "shutdown timeout reached with requests still in flight"
            );
        }
        tokio::join!(handle.stop(false), admin_handle.stop(false));
        // Workers: stop claiming, let deliveries in flight finish (bounded);
        // whatever is left is pending in the store and resumes on restart.
        cancel.cancel();
        let workers = [router, deliverer, retention, watch];
        let aborts: Vec<_> = workers.iter().map(|t| t.abort_handle()).collect();
        let finished = tokio::time::timeout_at(deadline, async {
            for task in workers {
                let _ = task.await;
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                "shutdown timeout reached with work in flight; what was not committed is done again after the restart"
            );
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
        let _ = server.await;
        let _ = admin.await;
        // The store gets a moment past the deadline to close cleanly.
        let close_by = deadline.max(tokio::time::Instant::now()) + Duration::from_secs(1);
        if tokio::time::timeout_at(close_by, self.store.close())
            .await
            .is_err()
        {
            tracing::warn!("the store did not close in time; exiting anyway");
        }
        for task in [watchdog, reloader].into_iter().flatten() {
            task.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}
