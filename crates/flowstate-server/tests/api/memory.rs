//! The memory of a typical flow in Redis, for the reference's example (§2.2): 1 KB of metadata,
//! 5 phases of 1 KB, 10 agents of 2 KB, 100 transitions (each also a `STATE_TRANSITION` event)
//! and 100 custom events of 100 B. The reference estimates 36 KB, counting 100 events in all.

use serde_json::{Value, json};

use crate::helpers::{Backend, RedisServer, spawn_app_with};

/// Prose-like text from a small vocabulary, deterministic (the reference bench's payload style).
fn text(seed: &mut u64, bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "flow",
        "agent",
        "state",
        "cache",
        "redis",
        "event",
        "phase",
        "discovery",
        "analysis",
        "plan",
        "result",
        "token",
        "context",
        "memory",
        "vector",
        "query",
        "document",
        "summary",
        "tool",
        "call",
        "retry",
        "budget",
        "latency",
        "schema",
        "user",
        "intent",
        "step",
        "graph",
        "node",
        "edge",
    ];
    let mut out = String::new();
    while out.len() < bytes {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(WORDS[(*seed >> 33) as usize % WORDS.len()]);
        out.push(' ');
    }
    out.truncate(bytes);
    out
}

#[tokio::test]
async fn typical_flow_fits_in_less_than_the_reference_estimate() {
    // A Redis of its own, so the keys carry no test prefix: sizes as in production.
    let redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(url);
        c.key_prefix = String::new();
    })
    .await;
    let seed = &mut 7u64;
    app.register(json!({"flow_id": "typical", "flow_type": "discovery",
        "metadata": {"description": text(seed, 900), "client": "acme", "tags": ["a", "b"]}}))
        .await;
    for p in [
        "data_discovery",
        "technology_analysis",
        "middleware_discovery",
        "infrastructure_analysis",
        "synthesis",
    ] {
        let state = json!({"state": {"phase": p, "progress": 0.5,
            "findings": (0..6).map(|k| json!({"id": format!("f-{k}"), "text": text(seed, 110), "confidence": 0.8})).collect::<Vec<Value>>()}});
        let a = app
            .send(
                app.http
                    .put(app.url(&format!("/v1/flows/typical/phases/{p}")))
                    .json(&state),
            )
            .await;
        assert_eq!(a.status, 200);
    }
    for i in 0..10 {
        let results = json!({"results": {"answer": text(seed, 1200),
            "citations": (0..6).map(|_| json!({"doc_id": format!("doc-{i}"), "score": 0.42, "span": text(seed, 60)})).collect::<Vec<Value>>(),
            "usage": {"prompt_tokens": 812, "completion_tokens": 301}}});
        let a = app
            .send(
                app.http
                    .put(app.url(&format!("/v1/flows/typical/agents/agent_{i}_analyzer")))
                    .json(&results),
            )
            .await;
        assert_eq!(a.status, 200);
    }
    let mut status = "initializing".to_string();
    for step in 0..100 {
        let to = if status == "running" {
            "waiting"
        } else {
            "running"
        };
        let a = app
            .post(
                "/v1/flows/typical/transitions",
                json!({"from": status, "to": to, "metadata": {"step": step, "agent": "planner"}}),
            )
            .await;
        assert_eq!(a.status, 200);
        status = to.to_string();
    }
    let mut seed = 7;
    for _ in 0..100 {
        let a = app
            .post(
                "/v1/flows/typical/events",
                json!({"event_type": "AGENT_PROGRESS", "payload": {"note": text(&mut seed, 80)}}),
            )
            .await;
        assert_eq!(a.status, 202);
    }
    let memory = app.get("/v1/flows/typical/memory").await.body;
    let total = memory["total_bytes"].as_u64().unwrap();
    let group = |part: &str| -> u64 {
        memory["keys"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains(part))
            .map(|(_, v)| v.as_u64().unwrap())
            .sum()
    };
    println!(
        "typical flow: total {total} B = {:.1} KiB (flow record {} B, phases {} B, agents {} B, transitions {} B, events {} B)",
        total as f64 / 1024.0,
        group("orchestrator:flow:"),
        group("discovery:phase:") + group(":phases"),
        group("discovery:agents:") + group(":cached_agents"),
        group("flow:transitions:"),
        group("flow:events:"),
    );
    if std::env::var_os("MEMORY_DETAIL").is_some() {
        println!("{memory:#}");
    }
    assert!(
        memory["keys"].as_object().unwrap().len() >= 5 + 10 + 2,
        "{memory}"
    );
    // Measured on Redis 7.0: see docs/redis-keys.md ("Memory of a typical flow"); the guard
    // leaves room for allocator and version differences.
    assert!(
        total < 60 * 1024,
        "the reference estimates 36 KB; we use {total} B"
    );
}
