//! The routes in force: one [`Live`] handle that inbound, the router, the
//! deliverer, the ClickUp watch, the admin API, the console and the SIGHUP
//! task share, and the one place that reloads them.

use super::{LoadError, LoadOptions, Pipeline, Unset, process_env};
use crate::metrics::Metrics;
use crate::tls::Certificates;
use arc_swap::{ArcSwap, Guard};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The pipeline in force, where it was loaded from, and what reloads with
/// it (the HTTPS certificate). Readers take the current pipeline with
/// [`Live::load`]; work in flight keeps the one it started with (each holds
/// its own `Arc`).
pub struct Live {
    current: ArcSwap<Pipeline>,
    routes: PathBuf,
    templates: PathBuf,
    certificates: Option<Arc<Certificates>>,
    metrics: Arc<Metrics>,
}

/// What a successful [`Live::reload`] swapped in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Routes in force now.
    pub routes: usize,
    /// Sources in force now.
    pub sources: usize,
    /// Targets in force now.
    pub targets: usize,
}

/// Loads `routes` for the daemon: every unset `${VAR}` is an error.
fn load_for_daemon(routes: &Path, templates: &Path) -> Result<Pipeline, LoadError> {
    Pipeline::load(&LoadOptions {
        routes,
        templates,
        env: &process_env,
        unset: Unset::Refuse,
    })
}

impl Live {
    /// Loads routes.yaml (every `${VAR}` must be set) and logs its warnings.
    /// Reloads count on `metrics`.
    pub fn open(
        routes: PathBuf,
        templates: PathBuf,
        metrics: Arc<Metrics>,
    ) -> Result<Live, LoadError> {
        let pipeline = load_for_daemon(&routes, &templates)?;
        for w in &pipeline.warnings {
            tracing::warn!("{w}");
        }
        Ok(Live::new(pipeline, routes, templates, metrics))
    }

    /// A handle on an already compiled pipeline, reloaded from `routes` and
    /// `templates`.
    pub fn new(
        pipeline: Pipeline,
        routes: PathBuf,
        templates: PathBuf,
        metrics: Arc<Metrics>,
    ) -> Live {
        Live {
            current: ArcSwap::from_pointee(pipeline),
            routes,
            templates,
            certificates: None,
            metrics,
        }
    }

    /// Reloads the HTTPS certificate too, before the routes (as SIGHUP and
    /// `POST /api/v1/reload` promise).
    pub fn with_certificates(mut self, certificates: Option<Arc<Certificates>>) -> Live {
        self.certificates = certificates;
        self
    }

    /// The pipeline in force (cheap: for one request or one step).
    pub fn load(&self) -> Guard<Arc<Pipeline>> {
        self.current.load()
    }

    /// The pipeline in force, to keep across awaits.
    pub fn load_full(&self) -> Arc<Pipeline> {
        self.current.load_full()
    }

    /// The routes file it reloads.
    pub fn routes_file(&self) -> &Path {
        &self.routes
    }

    /// The HTTPS certificate, when the daemon serves HTTPS.
    pub fn certificates(&self) -> Option<&Arc<Certificates>> {
        self.certificates.as_ref()
    }

    /// Reloads the certificate (a file that does not load keeps the old
    /// one, logged), then loads routes.yaml again and swaps it in: counted
    /// and logged either way. An invalid file leaves the running routes in
    /// force; the error holds its diagnostics.
    pub fn reload(&self) -> Result<Reloaded, LoadError> {
        if let Some(c) = &self.certificates {
            c.reload_logged();
        }
        match load_for_daemon(&self.routes, &self.templates) {
            Ok(p) => {
                for w in &p.warnings {
                    tracing::warn!("{w}");
                }
                let done = Reloaded {
                    routes: p.routes.len(),
                    sources: p.sources.len(),
                    targets: p.targets.len(),
                };
                // Swap first, log after: "reloaded" means the new routes serve.
                self.current.store(Arc::new(p));
                self.metrics.reload(true);
                tracing::info!(
                    routes = done.routes,
                    sources = done.sources,
                    targets = done.targets,
                    "routes reloaded"
                );
                Ok(done)
            }
            Err(e) => {
                for d in &e.diagnostics {
                    tracing::error!("{d}");
                }
                tracing::error!(
                    errors = e.diagnostics.len(),
                    "reload rejected; the running routes stay in force"
                );
                self.metrics.reload(false);
                Err(e)
            }
        }
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("routes", &self.routes)
            .field("templates", &self.templates)
            .field("https", &self.certificates.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("routes.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    const ONE_ROUTE: &str = "\
sources:
  s: { verify: header, header: X-Token, secret: abc }
targets:
  t: { type: slack, webhook_url: \"https://hooks.slack.com/services/T/B/X\" }
routes:
  - name: r
    source: s
    when: { event: ping }
    send: [ { target: t, text: hi } ]
";

    fn reloads(metrics: &Metrics, result: &str) -> bool {
        metrics
            .render()
            .lines()
            .any(|l| l == format!("clickup_bridge_config_reloads_total{{result=\"{result}\"}} 1"))
    }

    #[test]
    fn a_reload_swaps_a_valid_file_in_and_keeps_the_old_routes_for_a_broken_one() {
        let dir = tempfile::tempdir().unwrap();
        let routes = write(dir.path(), "sources: {}\ntargets: {}\nroutes: []\n");
        let metrics = Metrics::new();
        let live = Live::open(routes.clone(), dir.path().into(), metrics.clone()).unwrap();
        assert_eq!(live.load().routes.len(), 0);
        let held = live.load_full();

        write(dir.path(), ONE_ROUTE);
        let done = live.reload().unwrap();
        assert_eq!(
            done,
            Reloaded {
                routes: 1,
                sources: 1,
                targets: 1
            }
        );
        assert_eq!(live.load().routes[0].name, "r");
        assert_eq!(held.routes.len(), 0, "work in flight keeps its pipeline");
        assert!(reloads(&metrics, "success"), "{}", metrics.render());

        write(
            dir.path(),
            "routes: [ {name: r, send: {target: nowhere}} ]\n",
        );
        let err = live.reload().unwrap_err();
        assert!(!err.diagnostics.is_empty());
        assert_eq!(live.load().routes[0].name, "r", "the old routes stay");
        assert!(reloads(&metrics, "failure"), "{}", metrics.render());
    }
}
