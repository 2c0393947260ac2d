//! `events` and `deliveries`: the admin API from the shell.

use super::outln;
use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::Value;

/// `clickup-bridge events ...`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Recent events, newest first.
    #[command(after_help = "Example:\n  clickup-bridge events list --source clickup --limit 5")]
    List {
        /// Only this source.
        #[arg(long, help_heading = "Filters")]
        source: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20, help_heading = "Filters")]
        limit: u32,
    },
    /// One event: payload, matched routes, deliveries.
    #[command(after_help = "Example:\n  clickup-bridge events show evt_01a2...")]
    Show {
        /// The event id (evt_...).
        id: String,
    },
}

/// `clickup-bridge deliveries ...`
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Deliveries, newest first.
    #[command(
        after_help = "Example:\n  clickup-bridge deliveries list --status dead --target team-slack"
    )]
    List {
        /// pending, delivered or dead.
        #[arg(long, help_heading = "Filters")]
        status: Option<String>,
        /// Only this target.
        #[arg(long, help_heading = "Filters")]
        target: Option<String>,
        /// Only this route.
        #[arg(long, help_heading = "Filters")]
        route: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20, help_heading = "Filters")]
        limit: u32,
    },
    /// One delivery with its attempts.
    #[command(after_help = "Example:\n  clickup-bridge deliveries show dlv_01a2...")]
    Show {
        /// The delivery id (dlv_...).
        id: String,
    },
    /// Queue deliveries again: one by id ("try now" for a pending one), or
    /// in bulk every dead (or delivered) one matching --target and --route,
    /// after showing the count and asking (or with --yes).
    #[command(
        after_help = "Examples:\n  clickup-bridge deliveries replay dlv_01a2...\n  clickup-bridge deliveries replay --all-dead --target team-slack\n  clickup-bridge deliveries replay --status delivered --route task-audit --yes"
    )]
    Replay {
        /// The delivery id (dlv_...).
        id: Option<String>,
        /// Bulk: every dead delivery (the same as --status dead).
        #[arg(long, help_heading = "Bulk replay")]
        all_dead: bool,
        /// Bulk: every delivery in this state: dead or delivered.
        #[arg(long, value_name = "STATUS", help_heading = "Bulk replay")]
        status: Option<String>,
        /// Bulk: only this target.
        #[arg(long, help_heading = "Bulk replay")]
        target: Option<String>,
        /// Bulk: only this route.
        #[arg(long, help_heading = "Bulk replay")]
        route: Option<String>,
        /// Bulk: replay without asking.
        #[arg(long, short = 'y', help_heading = "Bulk replay")]
        yes: bool,
    },
}

/// Asks on the terminal; `false` without one (a script must say --yes).
fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{IsTerminal as _, Write as _};
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the answer")?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Where the admin API is and how to authenticate.
pub struct Admin {
    /// Base URL, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    /// Bearer token.
    pub token: Option<String>,
    /// Print JSON instead of tables.
    pub json: bool,
}

impl Admin {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<Value> {
        let client = reqwest::Client::new();
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.url.trim_end_matches('/')))
            .with_context(|| format!("invalid admin URL {}", self.url))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let mut req = client.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the admin API at {}: {}; is the daemon running there? pass --admin URL or set admin_listen",
                self.url,
                crate::errors::root_cause(&e)
            )
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .context("cannot read the admin API's answer")?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.as_u16() == 401 {
            bail!("the admin API refused the token (401): pass --token or set admin_token");
        }
        if !status.is_success() {
            let msg = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no details");
            bail!("admin API answered {status}: {msg}");
        }
        Ok(body)
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        outln!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn print_json(v: &Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn delivery_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|d| {
            vec![
                s(&d["id"]),
                // A pending delivery behind another one says so.
                if d["waiting_for"].is_string() {
                    "waiting".to_owned()
                } else {
                    s(&d["status"])
                },
                s(&d["target"]),
                s(&d["route"]),
                s(&d["attempts"]),
                s(&d["created_at"]),
                crate::transform::helpers::truncate_chars(&s(&d["last_error"]), 60),
            ]
        })
        .collect()
}

const DELIVERY_HEADERS: &[&str] = &[
    "ID",
    "STATUS",
    "TARGET",
    "ROUTE",
    "ATTEMPTS",
    "CREATED",
    "LAST ERROR",
];

/// Runs an `events` command.
pub async fn events(admin: &Admin, cmd: EventsCommand) -> anyhow::Result<i32> {
    match cmd {
        EventsCommand::List { source, limit } => {
            let mut q = vec![("limit", limit.to_string())];
            if let Some(src) = source {
                q.push(("source", src));
            }
            let v = admin
                .call(reqwest::Method::GET, "/api/v1/events", &q)
                .await?;
            if admin.json {
                print_json(&v);
                return Ok(0);
            }
            let items = v["items"].as_array().cloned().unwrap_or_default();
            table(
                &["ID", "SOURCE", "TYPE", "RECEIVED", "ROUTED"],
                items
                    .iter()
                    .map(|e| {
                        vec![
                            s(&e["id"]),
                            s(&e["source"]),
                            s(&e["event_type"]),
                            s(&e["received_at"]),
                            s(&e["routed_at"]),
                        ]
                    })
                    .collect(),
            );
        }
        EventsCommand::Show { id } => {
            let v = admin
                .call(reqwest::Method::GET, &format!("/api/v1/events/{id}"), &[])
                .await?;
            if admin.json {
                print_json(&v);
                return Ok(0);
            }
            outln!("event     {}", s(&v["id"]));
            outln!("source    {}", s(&v["source"]));
            outln!("type      {}", s(&v["event_type"]));
            outln!("received  {}", s(&v["received_at"]));
            outln!("routed    {}", s(&v["routed_at"]));
            let routes: Vec<String> = v["matched_routes"]
                .as_array()
                .map(|a| a.iter().map(s).collect())
                .unwrap_or_default();
            outln!(
                "routes    {}",
                if routes.is_empty() {
                    "(none matched)".to_owned()
                } else {
                    routes.join(", ")
                }
            );
            outln!();
            table(
                DELIVERY_HEADERS,
                delivery_rows(v["deliveries"].as_array().map(Vec::as_slice).unwrap_or(&[])),
            );
            outln!();
            outln!("payload:");
            print_json(&v["payload"]);
        }
    }
    Ok(0)
}

/// Runs a `deliveries` command.
pub async fn deliveries(admin: &Admin, cmd: DeliveriesCommand) -> anyhow::Result<i32> {
    match cmd {
        DeliveriesCommand::List {
            status,
            target,
            route,
            limit,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            q.extend(status.map(|v| ("status", v)));
            q.extend(target.map(|v| ("target", v)));
            q.extend(route.map(|v| ("route", v)));
            let v = admin
                .call(reqwest::Method::GET, "/api/v1/deliveries", &q)
                .await?;
            if admin.json {
                print_json(&v);
                return Ok(0);
            }
            table(
                DELIVERY_HEADERS,
                delivery_rows(v["items"].as_array().map(Vec::as_slice).unwrap_or(&[])),
            );
        }
        DeliveriesCommand::Show { id } => {
            let v = admin
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/deliveries/{id}"),
                    &[],
                )
                .await?;
            if admin.json {
                print_json(&v);
                return Ok(0);
            }
            for key in [
                "id",
                "event_id",
                "route",
                "step",
                "target",
                "status",
                "attempts",
                "last_error",
                "created_at",
                "delivered_at",
                "waiting_for",
            ] {
                outln!("{key:<12} {}", s(&v[key]));
            }
            outln!();
            let attempts = v["attempts_list"].as_array().cloned().unwrap_or_default();
            table(
                &["N", "AT", "MS", "STATUS", "OUTCOME", "ERROR"],
                attempts
                    .iter()
                    .map(|a| {
                        vec![
                            s(&a["n"]),
                            s(&a["at"]),
                            s(&a["duration_ms"]),
                            s(&a["status_code"]),
                            s(&a["outcome"]),
                            s(&a["error"]),
                        ]
                    })
                    .collect(),
            );
        }
        DeliveriesCommand::Replay {
            id,
            all_dead,
            status,
            target,
            route,
            yes,
        } => {
            let bulk = all_dead || status.is_some();
            let v = match (id, bulk) {
                (Some(id), false) => {
                    admin
                        .call(
                            reqwest::Method::POST,
                            &format!("/api/v1/deliveries/{id}/replay"),
                            &[],
                        )
                        .await?
                }
                (None, true) => {
                    let status = status.unwrap_or_else(|| "dead".to_owned());
                    if all_dead && status != "dead" {
                        bail!("--all-dead means --status dead; give one of them");
                    }
                    let mut q = vec![("status", status.clone())];
                    q.extend(target.map(|v| ("target", v)));
                    q.extend(route.map(|v| ("route", v)));
                    let mut dry = q.clone();
                    dry.push(("dry_run", "true".to_owned()));
                    let count = admin
                        .call(reqwest::Method::POST, "/api/v1/deliveries/replay", &dry)
                        .await?;
                    let n = count["matched"].as_u64().unwrap_or(0);
                    if n == 0 {
                        outln!("no {status} deliveries match; nothing replayed");
                        return Ok(0);
                    }
                    if !yes && !confirm(&format!("Replay {n} {status} deliveries? [y/N] "))? {
                        bail!(
                            "{n} {status} deliveries match; nothing was replayed (add --yes to replay them without asking)"
                        );
                    }
                    admin
                        .call(reqwest::Method::POST, "/api/v1/deliveries/replay", &q)
                        .await?
                }
                _ => {
                    bail!(
                        "give a delivery id, or --all-dead / --status dead|delivered (with --target/--route to narrow it)"
                    )
                }
            };
            if admin.json {
                print_json(&v);
            } else {
                outln!("replayed {}", s(&v["replayed"]));
            }
        }
    }
    Ok(0)
}
