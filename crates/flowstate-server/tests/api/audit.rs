//! The cache audit: sampled operations with their keys, hit or miss and latency reach
//! `redis_cache_audit` in batches; with sampling off, failed ones still do.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, RedisServer, TestApp, spawn_app_with};

/// Waits for the audit of `flow` to hold at least `n` records.
async fn audited(app: &TestApp, flow: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let a = app
            .get(&format!("/v1/audit?flow_id={flow}&limit=1000"))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let records = a.body["records"].as_array().unwrap().clone();
        if records.len() >= n {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} audit records for {flow}");
}

fn has(records: &[Value], op: &str, hit_miss: Option<&str>, key_part: &str) -> bool {
    records.iter().any(|r| {
        r["operation"] == op
            && r["hit_miss"].as_str() == hit_miss
            && r["cache_key"].as_str().unwrap().contains(key_part)
            && r["latency_ms"].as_f64().unwrap() >= 0.0
    })
}

#[tokio::test]
async fn operations_are_audited() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(url);
        c.audit.sample_rate = 1.0;
        c.redis.command_timeout_ms = 200;
        c.redis.connect_timeout_ms = 200;
    })
    .await;
    app.register(json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    assert_eq!(app.get("/v1/flows/f").await.status, StatusCode::OK);
    let put = app
        .send(
            app.http
                .put(app.url("/v1/flows/f/state"))
                .json(&json!({"state": {"a": 1}})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(app.get("/v1/flows/f/state").await.status, StatusCode::OK);
    let records = audited(&app, "f", 3).await;
    assert!(
        has(&records, "GET", Some("HIT"), "orchestrator:flow:{f}"),
        "{records:?}"
    );
    assert!(has(&records, "SET", None, "{f}"), "{records:?}");
    assert!(has(&records, "GET", Some("HIT"), "{f}"), "{records:?}");

    let lookup = json!({"input": {"q": 1}});
    app.post("/v1/agent-cache/planner/lookup", lookup.clone())
        .await;
    let store = app
        .send(
            app.http
                .put(app.url("/v1/agent-cache/planner"))
                .json(&json!({"input": {"q": 1}, "output": {"a": 2}})),
        )
        .await;
    assert_eq!(store.status, StatusCode::CREATED, "{}", store.body);
    app.post("/v1/agent-cache/planner/lookup", lookup).await;
    let agent = audited(&app, "agent:planner", 3).await;
    assert!(
        has(&agent, "GET", Some("MISS"), "agent:results"),
        "{agent:?}"
    );
    assert!(
        has(&agent, "GET", Some("HIT"), "agent:results"),
        "{agent:?}"
    );
    assert!(has(&agent, "SET", None, "agent:results"), "{agent:?}");

    // A failed read is audited with its error.
    redis.kill();
    assert_eq!(
        app.get("/v1/flows/f").await.status,
        StatusCode::OK,
        "served by the ledger"
    );
    let after = audited(&app, "f", 4).await;
    assert!(
        after
            .iter()
            .any(|r| r["error"].is_string() && r["operation"] == "GET"),
        "{after:?}"
    );
}

#[tokio::test]
async fn without_sampling_only_failures_are_audited() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(url);
        c.audit.sample_rate = 0.0;
        c.redis.command_timeout_ms = 200;
        c.redis.connect_timeout_ms = 200;
    })
    .await;
    app.register(json!({"flow_id": "g", "flow_type": "t"}))
        .await;
    for _ in 0..5 {
        app.get("/v1/flows/g").await;
    }
    redis.kill();
    app.get("/v1/flows/g").await;
    let records = audited(&app, "g", 1).await;
    assert!(
        records.iter().all(|r| r["error"].is_string()),
        "{records:?}"
    );
    let bad = app.get("/v1/audit?limit=0").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
