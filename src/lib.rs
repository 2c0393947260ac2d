//! clickup-bridge: a webhook bridge daemon.
//!
//! # Layout
//!
//! Modules in the order one webhook moves through them (SPEC section 1):
//!
//! - [`settings`]: `clickup-bridge.toml` + `CLICKUP_BRIDGE_*` environment.
//! - [`routes_file`]: routes.yaml text -> node tree with positions, `${VAR}`
//!   expansion, `file:line:col` diagnostics.
//! - [`pipeline`]: the tree compiled into one immutable `Pipeline` (sources,
//!   targets, routes, templates); `Pipeline::load` is the single entry point,
//!   `pipeline::Live` the one handle on the pipeline in force (and reload).
//! - [`inbound`]: `POST /hooks/{source}`: capped body -> verify -> store -> 200.
//! - [`verify`]: ClickUp, Stripe and generic HMAC signatures; event identity.
//! - [`store`]: the only module with SQL; events, deliveries, attempts; group
//!   commit.
//! - [`route`]: the router worker; pure matching and extraction.
//! - [`transform`]: JSONPath, Handlebars and the template helpers.
//! - [`targets`]: one module per target type (Slack, HTTP, Jira, ClickUp):
//!   its keys, its send steps, its requests and the quirks of its API.
//! - [`deliver`]: the delivery worker; the retry decision (`classify`).
//! - [`admin`]: health, readiness and the admin API; [`console`]: the web
//!   console beside it; [`metrics`]: the one registry everything counts on.
//! - [`simulate`]: what routes.yaml does with one event, offline, through
//!   the router's and the deliverer's own functions.
//! - [`clickup`]: ClickUp's webhook API and the webhook health watch.
//! - [`retention`]: pruning of old history.
//! - [`cli`], [`app`], [`lifecycle`], [`telemetry`]: the wiring.
//! - [`ids`]: prefixed, time-ordered ids.
//! - [`errors`]: error messages said once.

pub mod admin;
pub mod app;
pub mod cli;
pub mod clickup;
pub mod console;
pub mod deliver;
pub mod errors;
pub mod ids;
pub mod inbound;
pub mod lifecycle;
pub mod metrics;
pub mod pipeline;
pub mod retention;
pub mod route;
pub mod routes_file;
pub mod settings;
pub mod simulate;
pub mod store;
pub mod targets;
pub mod telemetry;
pub mod tls;
pub mod transform;
pub mod verify;
