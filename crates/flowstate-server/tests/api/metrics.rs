//! `/metrics` read by a Prometheus text parser: HTTP requests by route and status with latency
//! buckets, Redis command latency buckets and errors from flowstate's own client, the breaker,
//! pool and agent-cache lookups.

use prometheus_parse::{Scrape, Value};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, spawn_app};

#[tokio::test]
async fn metrics_parse_with_buckets() {
    let app = spawn_app(Backend::RedisSqlite).await;
    app.register(json!({"flow_id": "m", "flow_type": "t"}))
        .await;
    assert_eq!(app.get("/v1/flows/m").await.status, StatusCode::OK);
    let lookup = app
        .post("/v1/agent-cache/a/lookup", json!({"input": {"q": 1}}))
        .await;
    assert_eq!(lookup.status, StatusCode::OK);

    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text");
    // The parser folds a histogram's label sets into one sample; count the bucket lines.
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| matches!(s.value, Value::Histogram(_))),
        "histograms, not summaries"
    );
    let buckets = |name: &str, label: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket{{")) && l.contains(label))
            .count()
    };
    assert!(
        buckets(
            "flowstate_http_request_duration_seconds",
            r#"path="/v1/flows/{flow_id}""#
        ) >= 10,
        "{text}"
    );
    assert!(
        buckets(
            "flowstate_redis_command_duration_seconds",
            r#"command="EVALSHA""#
        ) >= 10
    );
    let has = |name: &str| scrape.samples.iter().any(|s| s.metric == name);
    for name in [
        "flowstate_http_requests_total",
        "flowstate_agent_cache_lookups_total",
        "flowstate_redis_breaker_open",
        "flowstate_redis_pool_size",
        "flowstate_redis_round_trips_total",
    ] {
        assert!(has(name), "{name} missing");
    }
    let created = scrape.samples.iter().any(|s| {
        s.metric == "flowstate_http_requests_total"
            && s.labels.get("path") == Some("/v1/flows")
            && s.labels.get("status") == Some("201")
    });
    assert!(created, "requests by route and status");
}
