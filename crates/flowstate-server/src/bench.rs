//! `flowstate bench`: drives a running server's HTTP API with C concurrent keep-alive clients
//! for one scenario and reports ops/s, latency percentiles and, when pointed at the server's
//! Redis, Redis commands and round trips per operation.
//!
//! Each worker owns one HTTP connection and issues requests back to back, as the reference's
//! own driver (`shared/bench/seed_baseline.py`) does with its asyncio tasks, so the two can be
//! compared at the same concurrency against the same Redis.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// What each operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `POST /v1/flows`: register a child flow (the parent exists), like the reference's
    /// `register_flow` with a parent.
    Register,
    /// `POST /v1/flows/{id}/transitions`: each worker moves its own flow running <-> waiting.
    Transition,
    /// `GET /v1/flows/{id}`: read a registered flow (hot-tier hit after the first read).
    GetFlow,
    /// `PUT /v1/flows/{id}/phases/{phase}`: save a ~1 KB phase state, cycling five phases.
    PhaseSave,
    /// `GET /v1/flows/{id}/phases/{phase}`: read a saved phase state.
    PhaseGet,
    /// `GET /v1/flows/{id}/state`: read the flow's state (the read that must stay fast in
    /// degraded mode).
    StateGet,
}

const PHASES: [&str; 5] = ["discovery", "analysis", "planning", "execution", "review"];

/// A ~1 KB phase state like the reference bench's (`make_phase_state`).
fn phase_state(seq: u64) -> serde_json::Value {
    let finding = "flow agent state cache redis event phase discovery analysis plan result token context memory vector query";
    json!({"state": {"phase": "analysis", "progress": (seq % 1000) as f64 / 1000.0,
        "findings": (0..6).map(|k| json!({"id": format!("f-{k}"), "text": finding, "confidence": 0.8})).collect::<Vec<_>>(),
        "updated_at": "2025-01-01T00:00:00+00:00"}})
}

/// Settings of one bench run.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Base URL of the flowstate server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Scenario to run.
    #[arg(long, value_enum, default_value = "register")]
    pub scenario: Scenario,
    /// Comma-separated concurrency levels, run one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// Measured seconds per concurrency level (after a short warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// The server's Redis, to count Redis commands per operation (INFO commandstats deltas).
    #[arg(long)]
    pub redis_url: Option<String>,
}

/// Figures of one concurrency level.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Scenario run.
    pub scenario: Scenario,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations (transport errors and non-2xx answers).
    pub errors: u64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Redis commands per operation (commands run inside scripts included).
    pub redis_cmds_per_op: Option<f64>,
    /// Network round trips to Redis per operation, as the server counted them.
    pub round_trips_per_op: Option<f64>,
}

const FLOW_META: &str = r#"{"source":"api","priority":"normal","tags":["agent","bench"],"description":"benchmark flow registered by flowstate bench"}"#;

/// Runs every concurrency level of `args` and prints a table.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Vec<BenchResult>> {
    let tag = uuid::Uuid::now_v7().simple().to_string()[20..].to_string();
    let base = args.url.trim_end_matches('/').to_string();
    let redis = match &args.redis_url {
        Some(url) => Some(
            redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await
                .context("connecting to --redis-url")?,
        ),
        None => None,
    };
    println!(
        "{:<11} {:>4} {:>9} {:>10} {:>8} {:>8} {:>8} {:>7} {:>9} {:>8}",
        "scenario",
        "c",
        "ops",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "errors",
        "cmds/op",
        "rtt/op"
    );
    let mut results = Vec::new();
    for &c in &args.concurrency {
        let r = run_level(args, &base, &format!("{tag}-{c}"), c, redis.clone()).await?;
        println!(
            "{:<11} {:>4} {:>9} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>9} {:>8}",
            clap::ValueEnum::to_possible_value(&r.scenario)
                .map(|v| v.get_name().to_string())
                .unwrap_or_default(),
            r.concurrency,
            r.ops,
            r.ops_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.errors,
            r.redis_cmds_per_op
                .map_or("-".into(), |v| format!("{v:.2}")),
            r.round_trips_per_op
                .map_or("-".into(), |v| format!("{v:.2}")),
        );
        results.push(r);
    }
    Ok(results)
}

struct Worker {
    /// For setup and resynchronisation, where convenience beats cost.
    http: reqwest::Client,
    base: String,
    /// `host:port` of the server.
    authority: String,
    /// The measured requests' connection: a bare hyper HTTP/1.1 client, so the load generator
    /// spends as little of the shared CPU as it can.
    conn: Option<SendRequest<Full<Bytes>>>,
    scenario: Scenario,
    /// This worker's flow: the parent of registered flows, or the flow it transitions/reads.
    flow_id: String,
    status: String,
    seq: u64,
}

impl Worker {
    async fn setup(&mut self) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{}/v1/flows", self.base))
            .json(&json!({"flow_id": self.flow_id, "flow_type": "research"}))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("setup failed: {} {}", resp.status(), resp.text().await?);
        }
        self.status = "initializing".into();
        let flow = format!("{}/v1/flows/{}", self.base, self.flow_id);
        for url in [
            format!("{flow}/state"),
            format!("{flow}/phases/{}", PHASES[0]),
        ] {
            let resp = self.http.put(url).json(&phase_state(0)).send().await?;
            if !resp.status().is_success() {
                bail!("setup failed: {} {}", resp.status(), resp.text().await?);
            }
        }
        Ok(())
    }

    /// The next request of this worker's scenario: method, path and JSON body (empty for GETs).
    fn next_request(&mut self) -> (Method, String, Bytes) {
        self.seq += 1;
        let flow = &self.flow_id;
        match self.scenario {
            Scenario::Register => {
                let body = format!(
                    r#"{{"flow_id":"{flow}-c{}","flow_type":"research","parent_flow_id":"{flow}","metadata":{FLOW_META}}}"#,
                    self.seq
                );
                (Method::POST, "/v1/flows".into(), body.into())
            }
            Scenario::Transition => {
                let to = if self.status == "running" {
                    "waiting"
                } else {
                    "running"
                };
                let body = json!({"from": self.status, "to": to, "metadata": {"step": self.seq, "agent": "planner"}});
                self.status = to.to_string();
                (
                    Method::POST,
                    format!("/v1/flows/{flow}/transitions"),
                    body.to_string().into(),
                )
            }
            Scenario::GetFlow => (Method::GET, format!("/v1/flows/{flow}"), Bytes::new()),
            Scenario::PhaseSave => {
                let phase = PHASES[(self.seq % 5) as usize];
                (
                    Method::PUT,
                    format!("/v1/flows/{flow}/phases/{phase}"),
                    phase_state(self.seq).to_string().into(),
                )
            }
            Scenario::PhaseGet => (
                Method::GET,
                format!("/v1/flows/{flow}/phases/{}", PHASES[0]),
                Bytes::new(),
            ),
            Scenario::StateGet => (Method::GET, format!("/v1/flows/{flow}/state"), Bytes::new()),
        }
    }

    /// One operation over this worker's own keep-alive connection (opened on first use and
    /// again after an error).
    async fn op(&mut self) -> anyhow::Result<()> {
        let (method, path, body) = self.next_request();
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            self.conn = Some(connect(&self.authority).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            bail!("no connection");
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.authority.as_str());
        if !body.is_empty() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let result = async {
            conn.ready().await?;
            let resp = conn.send_request(request.body(Full::new(body))?).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            anyhow::Ok(status)
        }
        .await;
        match result {
            Ok(status) if status.is_success() => Ok(()),
            Ok(status) => bail!("HTTP {status}"),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// Opens one HTTP/1.1 keep-alive connection; its driver runs on its own task.
async fn connect(authority: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn run_level(
    args: &BenchArgs,
    base: &str,
    tag: &str,
    concurrency: usize,
    redis: Option<redis::aio::MultiplexedConnection>,
) -> anyhow::Result<BenchResult> {
    let authority = base
        .strip_prefix("http://")
        .context("--url must be http://host:port")?
        .to_string();
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut worker = Worker {
            http,
            base: base.to_string(),
            authority: authority.clone(),
            conn: None,
            scenario: args.scenario,
            flow_id: format!("bench-{tag}-w{w}"),
            status: String::new(),
            seq: 0,
        };
        worker.setup().await?;
        workers.push(worker);
    }
    // Warm-up: open connections, prime caches and code paths; not measured.
    let warm_until = Instant::now() + Duration::from_millis(300);
    let mut warm = Vec::new();
    for mut worker in workers {
        warm.push(tokio::spawn(async move {
            while Instant::now() < warm_until {
                let _ = worker.op().await;
            }
            worker
        }));
    }
    let mut workers = Vec::new();
    for h in warm {
        workers.push(h.await?);
    }

    let stats_before = commandstats(redis.clone()).await?;
    let rtt_before = round_trips(base).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let mut handles = Vec::new();
    for mut worker in workers {
        handles.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match worker.op().await {
                    Ok(()) => hist.record(t.elapsed().as_micros().max(1) as u64)?,
                    Err(_) => {
                        errors += 1;
                        // Resynchronise a transition worker with the server after an error.
                        if worker.scenario == Scenario::Transition {
                            worker.status = current_status(&worker).await.unwrap_or_default();
                        }
                    }
                }
            }
            anyhow::Ok((hist, errors))
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for h in handles {
        let (h, e) = h.await??;
        hist.add(h)?;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rtt_after = round_trips(base).await;
    let stats_after = commandstats(redis).await?;
    let ops = hist.len();
    let total = (ops + errors).max(1) as f64;
    let redis_cmds_per_op = match (stats_before, stats_after) {
        (Some(a), Some(b)) => {
            let delta: u64 = b
                .iter()
                .map(|(k, v)| v - a.get(k).copied().unwrap_or(0))
                .sum();
            Some(delta as f64 / total)
        }
        _ => None,
    };
    // The health probe after the run pings Redis once: not part of any operation.
    let round_trips_per_op = match (rtt_before, rtt_after) {
        (Some(a), Some(b)) if b > a => Some((b - a - 1) as f64 / total),
        _ => None,
    };
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(BenchResult {
        scenario: args.scenario,
        concurrency,
        ops,
        errors,
        ops_per_sec: ops as f64 / elapsed,
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        redis_cmds_per_op,
        round_trips_per_op,
    })
}

async fn current_status(worker: &Worker) -> anyhow::Result<String> {
    let flow: Value = worker
        .http
        .get(format!("{}/v1/flows/{}", worker.base, worker.flow_id))
        .send()
        .await?
        .json()
        .await?;
    Ok(flow["status"].as_str().unwrap_or_default().to_string())
}

/// Calls per command from INFO commandstats, without the bench's and monitors' own commands.
async fn commandstats(
    conn: Option<redis::aio::MultiplexedConnection>,
) -> anyhow::Result<Option<BTreeMap<String, u64>>> {
    const EXCLUDE: &[&str] = &[
        "info",
        "client|setinfo",
        "hello",
        "config|resetstat",
        "ping",
    ];
    let Some(mut conn) = conn else {
        return Ok(None);
    };
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        if EXCLUDE.contains(&name) {
            continue;
        }
        let calls = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        out.insert(name.to_string(), calls);
    }
    Ok(Some(out))
}

/// The server's own count of Redis round trips (from `/v1/health`), if it runs on Redis.
async fn round_trips(base: &str) -> Option<u64> {
    let health: Value = reqwest::get(format!("{base}/v1/health"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    if health["redis"]["backend"] != "redis" {
        return None;
    }
    health["redis"]["stats"]["round_trips"].as_u64()
}
