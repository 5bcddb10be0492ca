//! `flowstate bench`: drives a running server's HTTP API with C concurrent keep-alive clients
//! for one scenario and reports ops/s, latency percentiles and, when pointed at the server's
//! Redis, Redis commands and round trips per operation. With `--in-process` the workers call
//! the library instead, in this process, configured like `flowstate serve`.
//!
//! Each worker issues operations back to back, as the reference's own driver
//! (its `seed_baseline.py`) does with its asyncio tasks, so the two can be compared at
//! the same concurrency against the same Redis. That driver calls its Python functions in
//! process, so `--in-process` is the like-for-like figure; HTTP adds the server's cost on top.

pub mod fanout;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowstate::model::agent_cache::{CacheLookup, CachePut};
use flowstate::model::locks::{LockRequest, ReleaseRequest};
use flowstate::{Config, Flowstate, NewFlow, TransitionRequest};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};

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
    /// `POST /v1/agent-cache/{agent}/lookup`: every lookup hits (~1 KB input, ~2 KB output,
    /// four agents), like the reference's `get_cached_result`.
    CacheHit,
    /// The same with 7 of every 10 lookups hitting, the others missing (the reference's
    /// `get_cached_result_70`).
    CacheMix,
    /// `PUT /v1/agent-cache/{agent}`: store a result, like the reference's
    /// `cache_agent_result`.
    CacheSet,
    /// `POST /v1/locks/{name}` then `DELETE /v1/locks/{name}`: acquire and release an
    /// uncontended lock (each worker its own name); the reference's `acquire_flow_lock` is a
    /// bare `SET NX EX` with no release.
    Lock,
}

/// The reference bench's agents and context.
const AGENTS: [&str; 4] = ["researcher", "planner", "coder", "critic"];
const CACHE_CONTEXT: &str = r#"{"session_id":"sess-42","user_id":"user-7","locale":"en-US"}"#;

/// [`CACHE_CONTEXT`] parsed once, as the reference's driver passes one dict.
static CONTEXT_VALUE: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| serde_json::from_str(CACHE_CONTEXT).unwrap_or_default());

/// Entries each cache worker warms and looks up.
const WARM: u64 = 64;

/// A ~1 KB agent input like the reference bench's (`make_agent_input`).
fn agent_input(worker: &str, i: u64) -> Value {
    let text = "flow agent state cache redis event phase discovery analysis plan result token context memory vector query";
    json!({"task": format!("{worker}-{i}"), "instructions": text, "documents": (0..5).map(|k| json!({"id": k, "text": text})).collect::<Vec<_>>(), "params": {"temperature": 0.2, "max_tokens": 1024}})
}

/// A ~2 KB agent output like the reference bench's (`make_agent_output`).
fn agent_output(i: u64) -> Value {
    let text = "flow agent state cache redis event phase discovery analysis plan result token context memory vector query";
    json!({"answer": text, "i": i, "citations": (0..12).map(|k| json!({"doc": k, "span": [k, k + 40], "quote": text})).collect::<Vec<_>>()})
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
    /// Drive the library in this process instead of a server over HTTP. The service is
    /// configured like `flowstate serve` (DATABASE_URL, REDIS_URL, FLOWSTATE_CONFIG, ...).
    #[arg(long)]
    pub in_process: bool,
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

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The lock scenario's TTL, the reference's `LOCK_TTL` (30 s).
const LOCK_TTL_MS: u64 = 30_000;

const FLOW_META: &str = r#"{"source":"api","priority":"normal","tags":["agent","bench"],"description":"benchmark flow registered by flowstate bench"}"#;

/// Runs every concurrency level of `args` and prints a table.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Vec<BenchResult>> {
    let tag = uuid::Uuid::now_v7().simple().to_string()[20..].to_string();
    let mode = if args.in_process {
        let config = Config::load()?;
        Mode::Library(Flowstate::open(config).await?)
    } else {
        let base = args.url.trim_end_matches('/').to_string();
        let authority = base
            .strip_prefix("http://")
            .context("--url must be http://host:port")?
            .to_string();
        Mode::Http { base, authority }
    };
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
        let r = run_level(args, &mode, &format!("{tag}-{c}"), c, redis.clone()).await?;
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

/// How a worker reaches flowstate.
enum Target {
    /// Over HTTP: the measured requests use a bare hyper HTTP/1.1 connection, so the load
    /// generator spends as little of the shared CPU as it can; setup uses reqwest.
    Http {
        http: reqwest::Client,
        base: String,
        /// `host:port` of the server.
        authority: String,
        conn: Option<SendRequest<Full<Bytes>>>,
    },
    /// In process, through the library: what an embedding Rust program gets, and the same kind
    /// of measurement as the reference's driver, which calls its Python functions directly.
    Library(Flowstate),
}

/// One operation, before it is sent.
enum Call {
    Register {
        flow_id: String,
    },
    Transition {
        from: String,
        to: &'static str,
        step: u64,
    },
    GetFlow,
    PhaseSave {
        phase: &'static str,
        seq: u64,
    },
    PhaseGet,
    StateGet,
    CacheLookup {
        agent: &'static str,
        input: Value,
    },
    CachePut {
        agent: &'static str,
        input: Value,
    },
    Lock,
}

struct Worker {
    target: Target,
    scenario: Scenario,
    /// This worker's flow: the parent of registered flows, or the flow it transitions/reads.
    flow_id: String,
    status: String,
    seq: u64,
    /// The reference's flow metadata, parsed once.
    metadata: Map<String, Value>,
    /// Cache scenarios: the inputs looked up (warmed, then never stored), built once, as the
    /// reference's driver builds its payloads once.
    hit_inputs: Vec<Value>,
    miss_inputs: Vec<Value>,
}

impl Worker {
    async fn setup(&mut self) -> anyhow::Result<()> {
        let state = object(phase_state(0));
        match &self.target {
            Target::Library(service) => {
                service
                    .register_flow(NewFlow {
                        flow_id: Some(self.flow_id.clone()),
                        flow_type: "research".into(),
                        parent_flow_id: None,
                        metadata: None,
                        sensitive: false,
                    })
                    .await?;
                service.put_state(&self.flow_id, state.clone()).await?;
                service.put_phase(&self.flow_id, PHASES[0], state).await?;
            }
            Target::Http { http, base, .. } => {
                let flow = format!("{base}/v1/flows/{}", self.flow_id);
                let steps = [
                    http.post(format!("{base}/v1/flows"))
                        .json(&json!({"flow_id": self.flow_id, "flow_type": "research"})),
                    http.put(format!("{flow}/state")).json(&state),
                    http.put(format!("{flow}/phases/{}", PHASES[0]))
                        .json(&state),
                ];
                for step in steps {
                    let resp = step.send().await?;
                    if !resp.status().is_success() {
                        bail!("setup failed: {} {}", resp.status(), resp.text().await?);
                    }
                }
            }
        }
        if matches!(self.scenario, Scenario::CacheHit | Scenario::CacheMix) {
            self.hit_inputs = (0..WARM).map(|i| agent_input(&self.flow_id, i)).collect();
            self.miss_inputs = (0..WARM)
                .map(|i| agent_input(&self.flow_id, 1_000_000 + i))
                .collect();
            for (i, input) in self.hit_inputs.iter().enumerate() {
                self.cache_put(AGENTS[i % 4], input.clone()).await?;
            }
        }
        self.status = "initializing".into();
        Ok(())
    }

    /// Stores a result for `input` (setup; errors end the run).
    async fn cache_put(&self, agent: &str, input: Value) -> anyhow::Result<()> {
        let output = agent_output(0);
        match &self.target {
            Target::Library(service) => {
                service
                    .cache_put(
                        agent,
                        CachePut {
                            input,
                            context: Some(CONTEXT_VALUE.clone()),
                            output,
                            execution_time: Some(1.5),
                            lease_token: None,
                        },
                    )
                    .await?;
            }
            Target::Http { http, base, .. } => {
                let resp = http
                    .put(format!("{base}/v1/agent-cache/{agent}"))
                    .json(&json!({"input": input, "context": serde_json::from_str::<Value>(CACHE_CONTEXT)?,
                                  "output": output, "execution_time": 1.5}))
                    .send()
                    .await?;
                if !resp.status().is_success() {
                    bail!("setup failed: {} {}", resp.status(), resp.text().await?);
                }
            }
        }
        Ok(())
    }

    /// The next operation of this worker's scenario.
    fn next_call(&mut self) -> Call {
        self.seq += 1;
        match self.scenario {
            Scenario::Register => Call::Register {
                flow_id: format!("{}-c{}", self.flow_id, self.seq),
            },
            Scenario::Transition => {
                let to = if self.status == "running" {
                    "waiting"
                } else {
                    "running"
                };
                let from = std::mem::replace(&mut self.status, to.to_string());
                Call::Transition {
                    from,
                    to,
                    step: self.seq,
                }
            }
            Scenario::GetFlow => Call::GetFlow,
            Scenario::PhaseSave => Call::PhaseSave {
                phase: PHASES[(self.seq % 5) as usize],
                seq: self.seq,
            },
            Scenario::PhaseGet => Call::PhaseGet,
            Scenario::StateGet => Call::StateGet,
            Scenario::CacheHit => {
                let i = (self.seq % WARM) as usize;
                Call::CacheLookup {
                    agent: AGENTS[i % 4],
                    input: self.hit_inputs[i].clone(),
                }
            }
            Scenario::CacheMix => {
                let i = (self.seq % WARM) as usize;
                // 7 of every 10 hit a warmed entry; the others ask for one never stored.
                let input = if self.seq % 10 < 7 {
                    self.hit_inputs[i].clone()
                } else {
                    self.miss_inputs[i].clone()
                };
                Call::CacheLookup {
                    agent: AGENTS[i % 4],
                    input,
                }
            }
            Scenario::CacheSet => {
                let i = self.seq % 2000;
                Call::CachePut {
                    agent: AGENTS[(i % 4) as usize],
                    input: agent_input(&self.flow_id, i),
                }
            }
            Scenario::Lock => Call::Lock,
        }
    }

    /// One operation, over HTTP or through the library.
    async fn op(&mut self) -> anyhow::Result<()> {
        let call = self.next_call();
        let flow = self.flow_id.as_str();
        let (authority, conn) = match &mut self.target {
            Target::Library(service) => {
                match call {
                    Call::Register { flow_id } => {
                        service
                            .register_flow(NewFlow {
                                flow_id: Some(flow_id),
                                flow_type: "research".into(),
                                parent_flow_id: Some(flow.to_string()),
                                metadata: Some(self.metadata.clone()),
                                sensitive: false,
                            })
                            .await?;
                    }
                    Call::Transition { from, to, step } => {
                        let metadata = object(json!({"step": step, "agent": "planner"}));
                        service
                            .transition(
                                flow,
                                TransitionRequest {
                                    from,
                                    to: to.to_string(),
                                    metadata: Some(metadata),
                                },
                            )
                            .await?;
                    }
                    Call::GetFlow => drop(service.get_flow(flow).await?),
                    Call::PhaseSave { phase, seq } => {
                        let state = object(phase_state(seq));
                        service.put_phase(flow, phase, state).await?;
                    }
                    Call::PhaseGet => drop(service.get_phase(flow, PHASES[0]).await?),
                    Call::StateGet => drop(service.get_state(flow).await?),
                    Call::CacheLookup { agent, input } => {
                        let lookup = CacheLookup {
                            input,
                            context: Some(CONTEXT_VALUE.clone()),
                            lease_ms: None,
                            wait_ms: None,
                        };
                        drop(service.cache_lookup(agent, lookup).await?);
                    }
                    Call::CachePut { agent, input } => {
                        let put = CachePut {
                            input,
                            context: Some(CONTEXT_VALUE.clone()),
                            output: agent_output(self.seq),
                            execution_time: Some(1.5),
                            lease_token: None,
                        };
                        drop(service.cache_put(agent, put).await?);
                    }
                    Call::Lock => {
                        let req = LockRequest {
                            ttl_ms: LOCK_TTL_MS,
                            wait_ms: None,
                        };
                        let grant = service.acquire_lock(flow, req).await?;
                        let release = ReleaseRequest { token: grant.token };
                        service.release_lock(flow, release).await?;
                    }
                }
                return Ok(());
            }
            Target::Http {
                authority, conn, ..
            } => (authority.as_str(), conn),
        };
        let (method, path, body): (Method, String, Bytes) = match call {
            Call::Register { flow_id } => {
                let body = format!(
                    r#"{{"flow_id":"{flow_id}","flow_type":"research","parent_flow_id":"{flow}","metadata":{FLOW_META}}}"#,
                );
                (Method::POST, "/v1/flows".into(), body.into())
            }
            Call::Transition { from, to, step } => {
                let body =
                    json!({"from": from, "to": to, "metadata": {"step": step, "agent": "planner"}});
                (
                    Method::POST,
                    format!("/v1/flows/{flow}/transitions"),
                    body.to_string().into(),
                )
            }
            Call::GetFlow => (Method::GET, format!("/v1/flows/{flow}"), Bytes::new()),
            Call::PhaseSave { phase, seq } => (
                Method::PUT,
                format!("/v1/flows/{flow}/phases/{phase}"),
                phase_state(seq).to_string().into(),
            ),
            Call::PhaseGet => (
                Method::GET,
                format!("/v1/flows/{flow}/phases/{}", PHASES[0]),
                Bytes::new(),
            ),
            Call::StateGet => (Method::GET, format!("/v1/flows/{flow}/state"), Bytes::new()),
            Call::CacheLookup { agent, input } => (
                Method::POST,
                format!("/v1/agent-cache/{agent}/lookup"),
                format!(r#"{{"input":{input},"context":{CACHE_CONTEXT}}}"#).into(),
            ),
            Call::CachePut { agent, input } => (
                Method::PUT,
                format!("/v1/agent-cache/{agent}"),
                format!(
                    r#"{{"input":{input},"context":{CACHE_CONTEXT},"output":{},"execution_time":1.5}}"#,
                    agent_output(self.seq)
                )
                .into(),
            ),
            Call::Lock => {
                let path = format!("/v1/locks/{flow}");
                let body = format!(r#"{{"ttl_ms":{LOCK_TTL_MS}}}"#);
                let grant = exchange(conn, authority, Method::POST, &path, body.into()).await?;
                let token = serde_json::from_slice::<Value>(&grant)?["token"]
                    .as_str()
                    .context("no token in the grant")?
                    .to_string();
                let body = json!({ "token": token }).to_string();
                exchange(conn, authority, Method::DELETE, &path, body.into()).await?;
                return Ok(());
            }
        };
        exchange(conn, authority, method, &path, body)
            .await
            .map(drop)
    }
    /// After an error, a transition worker no longer knows its flow's status: ask.
    async fn resync(&mut self) {
        if self.scenario == Scenario::Transition {
            self.status = self.current_status().await.unwrap_or_default();
        }
    }

    /// The flow's status as flowstate has it, after an error left the worker unsure.
    async fn current_status(&self) -> anyhow::Result<String> {
        Ok(match &self.target {
            Target::Library(service) => service.get_flow(&self.flow_id).await?.status,
            Target::Http { http, base, .. } => {
                let flow: Value = http
                    .get(format!("{base}/v1/flows/{}", self.flow_id))
                    .send()
                    .await?
                    .json()
                    .await?;
                flow["status"].as_str().unwrap_or_default().to_string()
            }
        })
    }
}

/// The JSON object inside `value` (the bench's own literals are all objects).
fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
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

/// What the workers drive: a server at a base URL, or a service opened in this process.
enum Mode {
    Http { base: String, authority: String },
    Library(Flowstate),
}

impl Mode {
    fn target(&self) -> anyhow::Result<Target> {
        Ok(match self {
            Mode::Library(service) => Target::Library(service.clone()),
            Mode::Http { base, authority } => Target::Http {
                http: reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .timeout(REQUEST_TIMEOUT)
                    .build()?,
                base: base.clone(),
                authority: authority.clone(),
                conn: None,
            },
        })
    }

    /// The service's own count of Redis round trips, if it runs on Redis.
    async fn round_trips(&self) -> Option<u64> {
        let health = match self {
            Mode::Library(service) => serde_json::to_value(service.health().await).ok()?,
            Mode::Http { base, .. } => reqwest::get(format!("{base}/v1/health"))
                .await
                .ok()?
                .json()
                .await
                .ok()?,
        };
        if health["redis"]["backend"] != "redis" {
            return None;
        }
        health["redis"]["stats"]["round_trips"].as_u64()
    }
}

async fn run_level(
    args: &BenchArgs,
    mode: &Mode,
    tag: &str,
    concurrency: usize,
    redis: Option<redis::aio::MultiplexedConnection>,
) -> anyhow::Result<BenchResult> {
    let metadata = object(serde_json::from_str(FLOW_META)?);
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let mut worker = Worker {
            target: mode.target()?,
            scenario: args.scenario,
            flow_id: format!("bench-{tag}-w{w}"),
            status: String::new(),
            seq: 0,
            metadata: metadata.clone(),
            hit_inputs: Vec::new(),
            miss_inputs: Vec::new(),
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
                if worker.op().await.is_err() {
                    worker.resync().await;
                }
            }
            worker
        }));
    }
    let mut workers = Vec::new();
    for h in warm {
        workers.push(h.await?);
    }

    let stats_before = commandstats(redis.clone()).await?;
    let rtt_before = mode.round_trips().await;
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
                    Ok(()) => hist.saturating_record(t.elapsed().as_micros().max(1) as u64),
                    Err(_) => {
                        errors += 1;
                        worker.resync().await;
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
    let rtt_after = mode.round_trips().await;
    let stats_after = commandstats(redis).await?;
    let ops = hist.len();
    let total = (ops + errors).max(1) as f64;
    let redis_cmds_per_op = match (stats_before, stats_after) {
        (Some(a), Some(b)) => {
            let delta: u64 = b
                .iter()
                .map(|(k, v)| v.saturating_sub(a.get(k).copied().unwrap_or(0)))
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

/// One request on a worker's keep-alive connection (reconnecting if it closed); the body of a
/// 2xx answer.
async fn exchange(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    authority: &str,
    method: Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<Bytes> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(connect(authority).await?);
    }
    let Some(sender) = conn.as_mut() else {
        bail!("no connection");
    };
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority);
    if !body.is_empty() {
        request = request.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let exchange = async {
        sender.ready().await?;
        let resp = sender.send_request(request.body(Full::new(body))?).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    // A server that stops answering must not hang the level past its deadline.
    let result = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in {REQUEST_TIMEOUT:?}")));
    match result {
        Ok((status, body)) if status.is_success() => Ok(body),
        Ok((status, _)) => bail!("HTTP {status}"),
        Err(e) => {
            *conn = None;
            Err(e)
        }
    }
}
