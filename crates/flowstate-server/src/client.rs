//! `flowstate health`, `flowstate flows ls | show | tree` and `flowstate backup create | list |
//! restore`: the CLI side of the HTTP API, for operators at a terminal (human output by
//! default, `--json` where a script wants it). It talks to a running server like any other
//! client.

use std::io::IsTerminal;

use anyhow::{Context, bail};
use serde_json::Value;

/// Which server to talk to.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Base URL of the flowstate server.
    #[arg(
        long,
        env = "FLOWSTATE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// API token (`FLOWSTATE_TOKEN`), sent as `Authorization: Bearer <token>`.
    #[arg(long, env = "FLOWSTATE_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

/// `flowstate flows …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum FlowsCommand {
    /// List flows (registration order), optionally filtered.
    Ls {
        /// Only flows in this status.
        #[arg(long)]
        status: Option<String>,
        /// Only flows of this type.
        #[arg(long = "type")]
        flow_type: Option<String>,
        /// Only children of this flow.
        #[arg(long)]
        parent: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print them as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one flow.
    Show {
        /// The flow id.
        flow_id: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a flow and its descendants as a tree.
    Tree {
        /// The root flow id.
        flow_id: String,
        /// Print it as nested JSON (`{flow, children: [...]}`).
        #[arg(long)]
        json: bool,
    },
}

/// `flowstate backup …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BackupCommand {
    /// Back up the keys matching the patterns (the server's configured ones by default),
    /// showing progress while it runs.
    Create {
        /// Key patterns (`*`, `?`), relative to the server's key prefix; repeatable.
        #[arg(long = "pattern")]
        patterns: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the backups, newest first.
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup (every key, or those matching the patterns).
    Restore {
        /// The backup.
        backup_id: String,
        /// Only keys matching these; repeatable.
        #[arg(long = "pattern")]
        patterns: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(target: &Target) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: target.url.trim_end_matches('/').to_string(),
            token: target.token.clone(),
        }
    }

    /// GETs `path` and returns its JSON, turning an API error into a readable one.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        // An unhealthy server answers its health report with 503; anything else is an error.
        let report = path.ends_with("/health");
        self.send(self.http.get(&url).query(query), &url, report)
            .await
    }

    /// POSTs `body` to `path` and returns its JSON, turning an API error into a readable one.
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.post(&url).json(body), &url, false)
            .await
    }

    /// Sends `req` (to `url`) with the token, if any, and returns its JSON; an error answer
    /// becomes a readable error, except a 503 when `report_503` (a health report).
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        report_503: bool,
    ) -> anyhow::Result<Value> {
        let req = match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("{url}: not JSON"))?;
        let report = report_503 && status == reqwest::StatusCode::SERVICE_UNAVAILABLE;
        if !status.is_success() && !report {
            bail!(
                "{status}: {} ({})",
                body["error"]["message"].as_str().unwrap_or("error"),
                body["error"]["code"].as_str().unwrap_or("?")
            );
        }
        Ok(body)
    }

    /// `flow` and its descendants as nested JSON: `{flow, children: [...]}`.
    async fn tree(&self, flow: Value) -> anyhow::Result<Value> {
        let id = str_of(&flow, "flow_id").to_string();
        let mut children = Vec::new();
        for child in self.flows(&[("parent_flow_id", id)], u32::MAX).await? {
            children.push(Box::pin(self.tree(child)).await?);
        }
        Ok(serde_json::json!({ "flow": flow, "children": children }))
    }

    /// Every flow matching `query`, following cursors.
    async fn flows(&self, query: &[(&str, String)], limit: u32) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            q.push(("limit", limit.min(1000).to_string()));
            if let Some(c) = &cursor {
                q.push(("cursor", c.clone()));
            }
            let page = self.get("/v1/flows", &q).await?;
            out.extend(page["flows"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) if (out.len() as u32) < limit => cursor = Some(c.to_string()),
                _ => break,
            }
        }
        out.truncate(limit as usize);
        Ok(out)
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("-")
}

/// `flowstate health` options.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Which server.
    #[command(flatten)]
    pub target: Target,
    /// Print the report as JSON instead of for people.
    #[arg(long)]
    pub json: bool,
}

/// `flowstate health`: prints the health report and the active alerts; fails unless healthy.
pub async fn health(args: &HealthArgs) -> anyhow::Result<()> {
    let report = Client::new(&args.target).get("/v1/health", &[]).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human_health(&report));
    }
    match report["status"].as_str() {
        Some("healthy") => Ok(()),
        other => bail!("status {}", other.unwrap_or("unknown")),
    }
}

/// The health report for people: status, tiers, then one line per active alert.
fn human_health(report: &Value) -> String {
    let mut out = format!("status: {}\n", str_of(report, "status"));
    for tier in ["redis", "ledger"] {
        let t = &report[tier];
        let state = if t["ok"].as_bool() == Some(true) {
            format!("ok ({:.1} ms)", t["latency_ms"].as_f64().unwrap_or(0.0))
        } else {
            format!("DOWN: {}", str_of(t, "error"))
        };
        out.push_str(&format!("{tier:<7} {:<9} {state}\n", str_of(t, "backend")));
    }
    let alerts = report["alerts"].as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        out.push_str("alerts: none\n");
    }
    for a in &alerts {
        out.push_str(&format!(
            "ALERT {}: {} (value {}, threshold {}, since {})\n",
            str_of(a, "metric"),
            str_of(a, "message"),
            a["value"],
            a["threshold"],
            str_of(a, "since")
        ));
    }
    out
}

fn backup_line(b: &Value) -> String {
    format!(
        "{:<36} {:<8} {:>9} keys {:>12} bytes  {}",
        str_of(b, "backup_id"),
        str_of(b, "status"),
        b["keys"],
        b["bytes"],
        str_of(b, "created_at")
    )
}

/// `flowstate backup …`.
pub async fn backup(target: &Target, command: &BackupCommand) -> anyhow::Result<()> {
    let client = Client::new(target);
    match command {
        BackupCommand::Create { patterns, json } => {
            let backup_id = uuid::Uuid::now_v7().to_string();
            let mut body = serde_json::json!({ "backup_id": backup_id });
            if !patterns.is_empty() {
                body["patterns"] = serde_json::json!(patterns);
            }
            let created = client.post("/v1/backups", &body);
            tokio::pin!(created);
            let show_progress = !json && std::io::stderr().is_terminal();
            let done = loop {
                tokio::select! {
                    done = &mut created => break done?,
                    () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {
                        if show_progress
                            && let Ok(b) = client.get(&format!("/v1/backups/{backup_id}"), &[]).await
                        {
                            eprint!("\rbacking up: {} keys, {} bytes", b["keys"], b["bytes"]);
                        }
                    }
                }
            };
            if show_progress {
                eprintln!();
            }
            if *json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!("{}", backup_line(&done));
            }
            if done["status"] != "complete" {
                bail!("backup failed: {}", str_of(&done, "error"));
            }
        }
        BackupCommand::List { json } => {
            let all = client.get("/v1/backups", &[]).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&all["backups"])?);
            } else {
                for b in all["backups"].as_array().cloned().unwrap_or_default() {
                    println!("{}", backup_line(&b));
                }
            }
        }
        BackupCommand::Restore {
            backup_id,
            patterns,
            json,
        } => {
            let body = if patterns.is_empty() {
                serde_json::json!({})
            } else {
                serde_json::json!({ "patterns": patterns })
            };
            let done = client
                .post(&format!("/v1/backups/{backup_id}/restore"), &body)
                .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!("restored {} keys from {backup_id}", done["keys"]);
            }
        }
    }
    Ok(())
}

/// `flowstate flows …`.
pub async fn flows(target: &Target, command: &FlowsCommand) -> anyhow::Result<()> {
    let client = Client::new(target);
    match command {
        FlowsCommand::Ls {
            status,
            flow_type,
            parent,
            limit,
            json,
        } => {
            let mut query = Vec::new();
            for (key, value) in [
                ("status", status),
                ("flow_type", flow_type),
                ("parent_flow_id", parent),
            ] {
                if let Some(v) = value {
                    query.push((key, v.clone()));
                }
            }
            let flows = client.flows(&query, *limit).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&flows)?);
                return Ok(());
            }
            println!(
                "{:<40} {:<24} {:<16} {:<40}",
                "FLOW", "TYPE", "STATUS", "PARENT"
            );
            for f in &flows {
                println!(
                    "{:<40} {:<24} {:<16} {:<40}",
                    str_of(f, "flow_id"),
                    str_of(f, "flow_type"),
                    str_of(f, "status"),
                    str_of(f, "parent_flow_id")
                );
            }
        }
        FlowsCommand::Show { flow_id, json } => {
            let flow = client.get(&format!("/v1/flows/{flow_id}"), &[]).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&flow)?);
            } else {
                for field in [
                    "flow_id",
                    "flow_type",
                    "status",
                    "parent_flow_id",
                    "version",
                    "created_at",
                    "updated_at",
                ] {
                    let value = match &flow[field] {
                        Value::String(s) => s.clone(),
                        Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    println!("{field:<15} {value}");
                }
                println!("{:<15} {}", "metadata", flow["metadata"]);
            }
        }
        FlowsCommand::Tree { flow_id, json } => {
            let root = client.get(&format!("/v1/flows/{flow_id}"), &[]).await?;
            if *json {
                let tree = client.tree(root).await?;
                println!("{}", serde_json::to_string_pretty(&tree)?);
                return Ok(());
            }
            let mut stack = vec![(root, 0usize)];
            while let Some((flow, depth)) = stack.pop() {
                println!(
                    "{}{} [{}] {}",
                    "  ".repeat(depth),
                    str_of(&flow, "flow_id"),
                    str_of(&flow, "flow_type"),
                    str_of(&flow, "status")
                );
                let id = str_of(&flow, "flow_id").to_string();
                let children = client.flows(&[("parent_flow_id", id)], u32::MAX).await?;
                // Reversed so the first child is printed first.
                stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
            }
        }
    }
    Ok(())
}
