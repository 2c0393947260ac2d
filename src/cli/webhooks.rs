//! `clickup-bridge clickup webhooks list|create|delete|reactivate`.

use super::outln;
use crate::clickup::{ClickUpApi, NewWebhook};
use crate::pipeline::{Endpoint, Pipeline};
use crate::verify::Secret;
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Which ClickUp credentials to use.
#[derive(Debug, Args)]
pub struct Credentials {
    /// A ClickUp API token [default: the token of a clickup target].
    #[arg(long, global = true, value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The clickup target whose token and base_url are used [default: the only one].
    #[arg(long, global = true, value_name = "NAME")]
    pub target: Option<String>,
    /// The API base URL [default: the target's, else https://api.clickup.com/api/v2].
    #[arg(long, global = true, value_name = "URL")]
    pub base_url: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The webhook commands.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// The team's webhooks with their health (status, fail count).
    List {
        /// Team (workspace) id.
        #[arg(long)]
        team: String,
    },
    /// Create a webhook; prints its id and signing secret.
    Create {
        /// Team (workspace) id.
        #[arg(long)]
        team: String,
        /// Public URL of this daemon's /hooks/{source}.
        #[arg(long)]
        endpoint: String,
        /// Events, comma-separated (e.g. taskCreated,taskStatusUpdated), or *.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        events: Vec<String>,
        /// Only this space.
        #[arg(long)]
        space: Option<String>,
        /// Only this folder.
        #[arg(long)]
        folder: Option<String>,
        /// Only this list.
        #[arg(long)]
        list: Option<String>,
        /// Only this task.
        #[arg(long)]
        task: Option<String>,
        /// Also write the secret as NAME=secret to this file (mode 0600).
        #[arg(long, value_name = "FILE")]
        env_file: Option<PathBuf>,
        /// The variable name for --env-file.
        #[arg(long, default_value = "CLICKUP_WEBHOOK_SECRET")]
        env_var: String,
    },
    /// Delete a webhook.
    Delete {
        /// Webhook id.
        id: String,
    },
    /// Set a (suspended) webhook back to active.
    Reactivate {
        /// Team (workspace) id the webhook belongs to.
        #[arg(long)]
        team: String,
        /// Webhook id.
        id: String,
    },
}

fn api(creds: &Credentials, pipeline: Option<&Pipeline>) -> anyhow::Result<ClickUpApi> {
    let from_target = pipeline.and_then(|p| {
        let clickups: Vec<_> = p
            .targets
            .values()
            .filter(|t| matches!(t.kind, Endpoint::ClickUp(_)))
            .collect();
        let chosen = match &creds.target {
            Some(name) => clickups.into_iter().find(|t| &t.name == name),
            None if clickups.len() == 1 => clickups.into_iter().next(),
            None => None,
        };
        match chosen.map(|t| &t.kind) {
            Some(Endpoint::ClickUp(api)) => Some((api.token.clone(), api.base_url.clone())),
            _ => None,
        }
    });
    if creds.target.is_some() && from_target.is_none() {
        bail!(
            "no clickup target named {:?} in routes.yaml",
            creds.target.as_deref().unwrap_or_default()
        );
    }
    let token = match (&creds.token, &from_target) {
        (Some(t), _) => Secret::new(t.clone()),
        (None, Some((t, _))) => t.clone(),
        (None, None) => bail!(
            "no ClickUp token: pass --token, or define one clickup target in routes.yaml (or name it with --target)"
        ),
    };
    let base = creds
        .base_url
        .clone()
        .or_else(|| from_target.map(|(_, b)| b))
        .unwrap_or_else(|| "https://api.clickup.com/api/v2".to_owned());
    let client = crate::deliver::http_client().context("cannot build the HTTP client")?;
    Ok(ClickUpApi::new(client, &base, token))
}

/// Writes `NAME=secret` to `path`, readable by its owner only.
fn write_env_file(path: &std::path::Path, name: &str, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{name}={secret}").with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its mode on open: make sure.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(())
}

/// Runs a webhook command.
pub async fn run(
    cmd: WebhooksCommand,
    creds: &Credentials,
    pipeline: Option<&Pipeline>,
) -> anyhow::Result<i32> {
    let api = api(creds, pipeline)?;
    match cmd {
        WebhooksCommand::List { team } => {
            let hooks = api.list_webhooks(&team).await?;
            if creds.json {
                let v: Vec<serde_json::Value> = hooks
                    .iter()
                    .map(|h| serde_json::json!({"id": h.id, "endpoint": h.endpoint, "status": h.status, "fail_count": h.fail_count, "events": h.events, "scope": h.scope}))
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(0);
            }
            if hooks.is_empty() {
                outln!("no webhooks in team {team}");
                return Ok(0);
            }
            outln!(
                "{:<38}  {:<10}  {:>5}  {:<6}  ENDPOINT",
                "ID",
                "STATUS",
                "FAILS",
                "EVENTS"
            );
            for h in &hooks {
                let events = if h.events.len() > 3 {
                    h.events.len().to_string()
                } else {
                    h.events.join(",")
                };
                outln!(
                    "{:<38}  {:<10}  {:>5}  {:<6}  {}",
                    h.id,
                    h.status,
                    h.fail_count,
                    events,
                    h.endpoint
                );
            }
            let unhealthy = hooks.iter().filter(|h| h.status != "active").count();
            if unhealthy > 0 {
                outln!(
                    "\n{unhealthy} webhook(s) not active: ClickUp stops sending to a suspended webhook; `clickup-bridge clickup webhooks reactivate --team {team} ID` sets it back"
                );
            }
        }
        WebhooksCommand::Create {
            team,
            endpoint,
            events,
            space,
            folder,
            list,
            task,
            env_file,
            env_var,
        } => {
            let new = NewWebhook {
                endpoint,
                events,
                space_id: space,
                folder_id: folder,
                list_id: list,
                task_id: task,
            };
            let hook = api.create_webhook(&team, &new).await?;
            let secret = hook.secret.clone().unwrap_or_default();
            if let Some(path) = &env_file {
                write_env_file(path, &env_var, &secret)?;
            }
            if creds.json {
                outln!(
                    "{}",
                    serde_json::json!({"id": hook.id, "secret": secret, "endpoint": hook.endpoint})
                );
            } else {
                outln!("webhook  {}", hook.id);
                outln!("secret   {secret}");
                if let Some(path) = &env_file {
                    outln!("written  {env_var}=... to {} (mode 0600)", path.display());
                }
                outln!(
                    "\nSet the secret of the clickup source to it (e.g. {env_var}), then reload."
                );
            }
        }
        WebhooksCommand::Delete { id } => {
            api.delete_webhook(&id).await?;
            outln!("deleted {id}");
        }
        WebhooksCommand::Reactivate { team, id } => {
            let hooks = api.list_webhooks(&team).await?;
            let Some(hook) = hooks.iter().find(|h| h.id == id) else {
                bail!("team {team} has no webhook {id}");
            };
            let h = api.reactivate(hook).await?;
            outln!("{} is {}", h.id, h.status);
        }
    }
    Ok(0)
}
