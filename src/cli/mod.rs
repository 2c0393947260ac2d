//! The command line: `serve`, `check`, `sign`, and the admin API client.
//!
//! Exit codes: 0 success, 1 a failed check, 2 usage or runtime error.

pub mod client;
pub mod route_test;
pub mod webhooks;

use crate::app::Application;
use crate::pipeline::{LoadOptions, Pipeline, Unset, process_env};
use crate::settings::Settings;
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

/// `println!` for command output: a closed pipe (`... | head -1`) ends the
/// process quietly with 0 instead of a panic, as other Unix tools do.
macro_rules! outln {
    () => {
        $crate::cli::write_out(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes one line to standard output; see [`outln!`].
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("clickup-bridge: cannot write to standard output: {e}");
        std::process::exit(2);
    }
}

pub use crate::errors::error_text;

/// clickup-bridge: verified, durable webhooks from ClickUp and Stripe to
/// Slack, Jira, ClickUp and any HTTP endpoint.
#[derive(Debug, Parser)]
#[command(
    name = "clickup-bridge",
    version,
    about,
    after_help = "Settings come from clickup-bridge.toml (or -c FILE) and CLICKUP_BRIDGE_<KEY> variables;\nsecrets in routes.yaml come from the environment as ${VAR}. docs/configuration.md lists them.\n\nExamples:\n  clickup-bridge check\n  clickup-bridge serve\n  clickup-bridge deliveries list --status dead"
)]
pub struct Cli {
    /// Settings file [default: clickup-bridge.toml when present].
    #[arg(short = 'c', long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Which routes file a command reads.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RoutesArg {
    /// Routes file [default: the settings' routes, else routes.yaml].
    #[arg(long, global = true, value_name = "FILE")]
    pub routes: Option<PathBuf>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    #[command(
        long_about = "Run the daemon: the webhook listener (listen, default 0.0.0.0:8080: POST /hooks/{source}, \
GET /healthz) and the admin listener (admin_listen, default 127.0.0.1:9090: /api/v1, /metrics, /healthz, \
/readyz, /console).\n\nSettings come from clickup-bridge.toml (or -c FILE), each overridden by \
CLICKUP_BRIDGE_<KEY> (CLICKUP_BRIDGE_LISTEN, CLICKUP_BRIDGE_STORE, CLICKUP_BRIDGE_ADMIN_TOKEN, ...). \
Secrets never go in files: routes.yaml reads them from the environment as ${VAR}, and the daemon refuses \
to start while one is unset. SIGHUP reloads routes.yaml; SIGTERM drains and exits.",
        after_help = "Examples:\n  CLICKUP_WEBHOOK_SECRET=... clickup-bridge serve\n  set -a; . examples/demo.env; set +a; clickup-bridge serve   # the local demo\n  CLICKUP_BRIDGE_LISTEN=127.0.0.1:8081 clickup-bridge -c /etc/clickup-bridge/clickup-bridge.toml serve"
    )]
    Serve {
        /// The routes file.
        #[command(flatten)]
        files: RoutesArg,
    },
    /// Validate routes.yaml: sources, targets, routes, JSONPaths, templates,
    /// environment variables. Prints `file:line:col: message`; exit 1 on errors.
    #[command(
        after_help = "Examples:\n  clickup-bridge check\n  clickup-bridge check --routes /etc/clickup-bridge/routes.yaml"
    )]
    Check {
        /// The routes file.
        #[command(flatten)]
        files: RoutesArg,
    },
    /// Print the signature header(s) a source accepts for a body, for curl.
    #[command(
        after_help = "Example:\n  curl http://127.0.0.1:8080/hooks/clickup --data-binary @event.json \\\n    -H \"$(clickup-bridge sign --source clickup --event event.json)\""
    )]
    Sign {
        /// The source name in routes.yaml.
        #[arg(long)]
        source: String,
        /// The file whose exact bytes are signed.
        #[arg(long, value_name = "FILE")]
        event: PathBuf,
        /// The routes file.
        #[command(flatten)]
        files: RoutesArg,
    },
    /// Print, as JSON, which routes match an event (and why the others do
    /// not) and the exact requests that would be sent. No network.
    #[command(
        after_help = "Example:\n  clickup-bridge simulate --source clickup --event examples/events/clickup-task-completed.json \\\n    --task examples/task.json"
    )]
    Simulate {
        /// The source name in routes.yaml.
        #[arg(long)]
        source: String,
        /// The event body (exact bytes).
        #[arg(long, value_name = "FILE")]
        event: PathBuf,
        /// A ClickUp task (GET /task answer) standing in for enrichment.
        #[arg(long, value_name = "FILE")]
        task: Option<PathBuf>,
        /// A request header, as `Name: value` (repeatable), for sources that
        /// take the event type or id from headers (`event_header`,
        /// `id_header`, Standard Webhooks' `webhook-id`).
        #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// The routes file.
        #[command(flatten)]
        files: RoutesArg,
    },
    /// Run route test cases (YAML files: an event and what must happen).
    #[command(
        after_help = "Examples:\n  clickup-bridge test\n  clickup-bridge test tests/route_cases/invoice-paid.yaml"
    )]
    Test {
        /// A case file or a folder of them [default: tests/route_cases].
        path: Option<PathBuf>,
        /// The routes file.
        #[command(flatten)]
        files: RoutesArg,
    },
    /// Stored events (through the admin API).
    #[command(
        after_help = "Examples:\n  clickup-bridge events list --source clickup\n  clickup-bridge events show evt_01a2..."
    )]
    Events {
        /// Admin API address and token.
        #[command(flatten)]
        admin: AdminArgs,
        /// What to do.
        #[command(subcommand)]
        cmd: client::EventsCommand,
    },
    /// Deliveries: list, show, replay (through the admin API).
    #[command(
        after_help = "Examples:\n  clickup-bridge deliveries list --status dead\n  clickup-bridge deliveries show dlv_01a2...\n  clickup-bridge deliveries replay --all-dead --target team-slack"
    )]
    Deliveries {
        /// Admin API address and token.
        #[command(flatten)]
        admin: AdminArgs,
        /// What to do.
        #[command(subcommand)]
        cmd: client::DeliveriesCommand,
    },
    /// Store tooling.
    Store {
        /// What to do.
        #[command(subcommand)]
        cmd: StoreCommand,
    },
    /// ClickUp tooling.
    Clickup {
        /// What to do.
        #[command(subcommand)]
        cmd: ClickupCommand,
    },
}

impl Command {
    /// The `--routes` of a command that reads routes.yaml.
    fn routes(&self) -> Option<&PathBuf> {
        match self {
            Command::Serve { files }
            | Command::Check { files }
            | Command::Sign { files, .. }
            | Command::Simulate { files, .. }
            | Command::Test { files, .. }
            | Command::Clickup {
                cmd: ClickupCommand::Webhooks { files, .. },
            } => files.routes.as_ref(),
            Command::Events { .. } | Command::Deliveries { .. } | Command::Store { .. } => None,
        }
    }
}

/// `clickup-bridge store ...`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a stopped store into an empty one (e.g. sqlite://clickup-bridge.db
    /// into postgres://...): events with their dedupe keys, deliveries with
    /// their attempts, links. Refuses a target that holds any row.
    #[command(
        after_help = "Example:\n  systemctl stop clickup-bridge\n  clickup-bridge store copy sqlite:///var/lib/clickup-bridge/clickup-bridge.db \\\n    postgres://bridge:secret@db.internal:5432/bridge"
    )]
    Copy {
        /// The store to copy from (stop its daemon first).
        from: String,
        /// The empty store to copy into.
        to: String,
    },
}

/// `clickup-bridge clickup ...`
#[derive(Debug, Subcommand)]
pub enum ClickupCommand {
    /// Manage the team's webhooks through ClickUp's API.
    #[command(
        after_help = "Examples:\n  clickup-bridge clickup webhooks list --team 9012345\n  clickup-bridge clickup webhooks create --team 9012345 --endpoint https://bridge.example.com/hooks/clickup \\\n    --events taskCreated,taskStatusUpdated --env-file /etc/clickup-bridge/clickup.env"
    )]
    Webhooks {
        /// Which credentials.
        #[command(flatten)]
        creds: webhooks::Credentials,
        /// The routes file (for the clickup target's token).
        #[command(flatten)]
        files: RoutesArg,
        /// What to do.
        #[command(subcommand)]
        cmd: webhooks::WebhooksCommand,
    },
}

/// Where the admin API is.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Admin API address [default: http:// + the settings' admin_listen].
    #[arg(long, global = true, value_name = "URL", help_heading = "Connection")]
    pub admin: Option<String>,
    /// Admin API token [default: the settings' admin_token].
    #[arg(long, global = true, value_name = "TOKEN", help_heading = "Connection")]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true, help_heading = "Output")]
    pub json: bool,
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let mut s = Settings::from_process(cli.config.as_deref()).context("cannot load settings")?;
    if let Some(r) = cli.command.routes() {
        s.routes = r.clone();
    }
    Ok(s)
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let settings = settings(&cli)?;
    // The daemon logs them once its logger runs; commands print them.
    if !matches!(cli.command, Command::Serve { .. }) {
        for w in &settings.warnings {
            eprintln!("clickup-bridge: warning: {w}");
        }
    }
    match cli.command {
        Command::Serve { .. } => serve(settings),
        Command::Check { .. } => Ok(check(&settings.routes, &settings.templates)),
        Command::Sign { source, event, .. } => sign(&settings, &source, &event),
        Command::Events { admin, cmd } => with_admin(&settings, admin, |a| async move {
            client::events(&a, cmd).await
        }),
        Command::Deliveries { admin, cmd } => with_admin(&settings, admin, |a| async move {
            client::deliveries(&a, cmd).await
        }),
        Command::Simulate {
            source,
            event,
            task,
            headers,
            ..
        } => simulate_cmd(&settings, &source, &event, task.as_deref(), &headers),
        Command::Test { path, .. } => test_cmd(&settings, path),
        Command::Store {
            cmd: StoreCommand::Copy { from, to },
        } => store_copy(&from, &to),
        Command::Clickup {
            cmd: ClickupCommand::Webhooks { creds, cmd, .. },
        } => {
            // The token may come from routes.yaml; without a usable file,
            // --token still works, and without either the file's problem is
            // the one to report.
            let pipeline = match load_needing(
                &settings.routes,
                &settings.templates,
                Unset::AllButTokens,
            ) {
                Ok(p) => Some(p),
                Err(e) if creds.token.is_none() => {
                    let first = e.diagnostics.first().map(ToString::to_string);
                    anyhow::bail!(
                        "the ClickUp token comes from routes.yaml, which does not load: {}; fix it, or pass --token",
                        first.unwrap_or_default()
                    );
                }
                Err(_) => None,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(webhooks::run(cmd, &creds, pipeline.as_ref()))
        }
    }
}

/// Runs an admin client command on a small runtime. The address defaults to
/// the settings' admin_listen (a wildcard address becomes 127.0.0.1).
fn with_admin<F, Fut>(settings: &Settings, args: AdminArgs, f: F) -> anyhow::Result<i32>
where
    F: FnOnce(client::Admin) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<i32>>,
{
    let AdminArgs {
        admin: url,
        token,
        json,
    } = args;
    let url = url.unwrap_or_else(|| {
        let addr = settings
            .admin_listen
            .replace("0.0.0.0:", "127.0.0.1:")
            .replace("[::]:", "[::1]:");
        format!("http://{addr}")
    });
    let admin = client::Admin {
        url,
        token: token.or_else(|| settings.admin_token.clone()),
        json,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(f(admin))
}

/// `store copy FROM TO`: prints what was copied.
fn store_copy(from: &str, to: &str) -> anyhow::Result<i32> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let from = crate::settings::StoreLocation::parse(from, &cwd).context("FROM")?;
    let to = crate::settings::StoreLocation::parse(to, &cwd).context("TO")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let copied = runtime
        .block_on(crate::store::Store::copy(&from, &to))
        .with_context(|| format!("cannot copy {} into {}", from.describe(), to.describe()))?;
    let count = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    outln!(
        "copied {}, {}, {}, {} from {} into {}",
        count(copied.events, "event", "events"),
        count(copied.deliveries, "delivery", "deliveries"),
        count(copied.attempts, "attempt", "attempts"),
        count(copied.links, "link", "links"),
        from.describe(),
        to.describe()
    );
    Ok(0)
}

fn serve(settings: Settings) -> anyhow::Result<i32> {
    crate::telemetry::init(settings.log_format);
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Listen for SIGTERM before anything else: one that arrives while
        // the daemon starts must stop it gracefully, not kill it.
        let shutdown = crate::lifecycle::shutdown_signal();
        let app = Application::build(&settings).await?;
        app.run_until_stopped(shutdown)
            .await
            .context("server failed")?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}

fn load(routes: &Path, templates: &Path) -> Result<Pipeline, crate::pipeline::LoadError> {
    load_needing(routes, templates, Unset::Refuse)
}

/// Loads routes.yaml for a tool that needs only some of its variables.
fn load_needing(
    routes: &Path,
    templates: &Path,
    unset: Unset<'_>,
) -> Result<Pipeline, crate::pipeline::LoadError> {
    Pipeline::load(&LoadOptions {
        routes,
        templates,
        env: &process_env,
        unset,
    })
}

/// `check`: prints diagnostics and a summary; 0 when usable, 1 otherwise.
pub fn check(routes: &Path, templates: &Path) -> i32 {
    match load(routes, templates) {
        Ok(p) => {
            for w in &p.warnings {
                outln!("{w}");
            }
            let warnings = match p.warnings.len() {
                0 => String::new(),
                1 => ", 1 warning".to_owned(),
                n => format!(", {n} warnings"),
            };
            outln!(
                "{}: ok: {} sources, {} targets, {} routes{warnings}",
                routes.display(),
                p.sources.len(),
                p.targets.len(),
                p.routes.len()
            );
            0
        }
        Err(e) => {
            for d in &e.diagnostics {
                outln!("{d}");
            }
            let errors = e
                .diagnostics
                .iter()
                .filter(|d| d.severity == crate::routes_file::diag::Severity::Error)
                .count();
            let plural = if errors == 1 { "" } else { "s" };
            outln!("{}: {errors} error{plural}", routes.display());
            1
        }
    }
}

/// Loads for `simulate` and `test`, which verify nothing and mask
/// credentials: secrets may be unset.
fn load_or_report(settings: &Settings) -> Option<Pipeline> {
    match load_needing(&settings.routes, &settings.templates, Unset::AllowSecrets) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

/// `Name: value`, as curl's `-H` takes it.
fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!(
            "\"{s}\" is not a header: write it as \"Name: value\""
        )),
    }
}

fn simulate_cmd(
    settings: &Settings,
    source: &str,
    event: &Path,
    task: Option<&Path>,
    headers: &[(String, String)],
) -> anyhow::Result<i32> {
    let Some(pipeline) = load_or_report(settings) else {
        return Ok(1);
    };
    let body = std::fs::read(event).with_context(|| format!("cannot read {}", event.display()))?;
    let task = match task {
        Some(p) => {
            let text = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            Some(
                serde_json::from_slice(&text)
                    .with_context(|| format!("{} is not JSON", p.display()))?,
            )
        }
        None => None,
    };
    let input = crate::simulate::Input {
        source,
        body: &body,
        headers,
        task,
        links: serde_json::Map::new(),
        stored: None,
    };
    match crate::simulate::simulate(&pipeline, &input) {
        Ok(v) => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&v.to_json()).unwrap_or_default()
            );
            Ok(0)
        }
        Err(e) => {
            eprintln!("{}: {e}", event.display());
            Ok(1)
        }
    }
}

fn test_cmd(settings: &Settings, path: Option<PathBuf>) -> anyhow::Result<i32> {
    let Some(pipeline) = load_or_report(settings) else {
        return Ok(1);
    };
    let path = path.unwrap_or_else(|| PathBuf::from("tests/route_cases"));
    let (passed, failed) = route_test::run(&pipeline, &path);
    outln!("{passed} passed, {failed} failed");
    Ok(if failed > 0 || passed == 0 { 1 } else { 0 })
}

fn sign(settings: &Settings, source: &str, event: &Path) -> anyhow::Result<i32> {
    // Only the signing source's secret is needed.
    let pipeline = match load_needing(
        &settings.routes,
        &settings.templates,
        Unset::AllButSource(source),
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(1);
        }
    };
    let Some(src) = pipeline.sources.get(source) else {
        let known: Vec<&str> = pipeline.sources.keys().map(String::as_str).collect();
        anyhow::bail!(
            "unknown source \"{source}\"; known sources: {}",
            known.join(", ")
        );
    };
    let body = std::fs::read(event).with_context(|| format!("cannot read {}", event.display()))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (name, value) in src.verifier.sign(&body, now) {
        outln!("{name}: {value}");
    }
    Ok(0)
}
