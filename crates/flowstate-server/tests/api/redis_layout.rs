//! The Redis keys, types and TTLs of docs/redis-keys.md, as an operator would find them.

use flowstate::hot::ttl::Ttls;
use redis::AsyncCommands;
use serde_json::json;

use crate::helpers::{Backend, TestApp, spawn_app};

async fn key_type(app: &TestApp, key: &str) -> String {
    redis::cmd("TYPE")
        .arg(app.key(key))
        .query_async(&mut app.redis())
        .await
        .unwrap()
}

async fn ttl(app: &TestApp, key: &str) -> i64 {
    app.redis().ttl(app.key(key)).await.unwrap()
}

fn assert_ttl_within(app: &TestApp, key: &str, ttl: i64, base: u64) {
    let (lo, hi) = Ttls::new(app.config.ttl.clone()).bounds(base);
    // A second may pass between the write and the check.
    assert!(
        (lo as i64 - 2..=hi as i64).contains(&ttl),
        "{key}: ttl {ttl} outside {lo}..={hi}"
    );
}

async fn layout(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "parent", "flow_type": "orchestration"}))
        .await;
    app.register(json!({"flow_id": "child", "flow_type": "research", "parent_flow_id": "parent"}))
        .await;
    app.post(
        "/v1/flows/child/transitions",
        json!({"from": "initializing", "to": "running", "metadata": {"n": 1}}),
    )
    .await;
    let mut r = app.redis();
    let t = &app.config.ttl;

    assert_eq!(key_type(&app, "orchestrator:flow:{child}").await, "hash");
    let record: std::collections::HashMap<String, String> = r
        .hgetall(app.key("orchestrator:flow:{child}"))
        .await
        .unwrap();
    let data: serde_json::Value = serde_json::from_str(&record["data"]).unwrap();
    assert_eq!(data["status"], "running");
    assert_eq!(record["status"], "running");
    assert_eq!(record["version"], "2");
    assert!(record.contains_key("last_updated"));
    assert_ttl_within(
        &app,
        "flow",
        ttl(&app, "orchestrator:flow:{child}").await,
        t.flow,
    );

    assert_eq!(key_type(&app, "orchestrator:flows").await, "set");
    let mut registry: Vec<String> = r.smembers(app.key("orchestrator:flows")).await.unwrap();
    registry.sort();
    assert_eq!(registry, ["child", "parent"]);
    assert_eq!(
        ttl(&app, "orchestrator:flows").await,
        -1,
        "the registry does not expire"
    );

    assert_eq!(
        key_type(&app, "orchestrator:hierarchy:{parent}").await,
        "set"
    );
    let kids: Vec<String> = r
        .smembers(app.key("orchestrator:hierarchy:{parent}"))
        .await
        .unwrap();
    assert_eq!(kids, ["child"]);
    assert_ttl_within(
        &app,
        "hierarchy",
        ttl(&app, "orchestrator:hierarchy:{parent}").await,
        t.hierarchy,
    );

    assert_eq!(key_type(&app, "flow:transitions:{child}").await, "stream");
    let entries: redis::streams::StreamRangeReply = r
        .xrange_all(app.key("flow:transitions:{child}"))
        .await
        .unwrap();
    assert_eq!(entries.ids.len(), 1);
    let e = &entries.ids[0];
    assert_eq!(
        e.get::<String>("from_state").as_deref(),
        Some("initializing")
    );
    assert_eq!(e.get::<String>("to_state").as_deref(), Some("running"));
    assert_eq!(e.get::<String>("metadata").as_deref(), Some(r#"{"n":1}"#));
    assert_eq!(e.get::<String>("seq").as_deref(), Some("2"));
    assert!(
        e.get::<String>("timestamp").is_none(),
        "the entry id carries the time"
    );
    assert_ttl_within(
        &app,
        "transitions",
        ttl(&app, "flow:transitions:{child}").await,
        t.transitions,
    );

    // Delete: out of the registry and hierarchy, stream gone, record tombstoned briefly.
    app.delete("/v1/flows/child").await;
    let registry: Vec<String> = r.smembers(app.key("orchestrator:flows")).await.unwrap();
    assert_eq!(registry, ["parent"]);
    let exists: bool = r
        .exists(app.key("orchestrator:hierarchy:{parent}"))
        .await
        .unwrap();
    assert!(!exists, "empty hierarchy set is gone");
    let exists: bool = r.exists(app.key("flow:transitions:{child}")).await.unwrap();
    assert!(!exists);
    let tomb: std::collections::HashMap<String, String> = r
        .hgetall(app.key("orchestrator:flow:{child}"))
        .await
        .unwrap();
    assert_eq!(tomb.get("deleted").map(String::as_str), Some("1"));
    assert!(!tomb.contains_key("data"));
    assert!(ttl(&app, "orchestrator:flow:{child}").await <= 60);
}

#[tokio::test]
async fn layout_redis_sqlite() {
    layout(Backend::RedisSqlite).await
}

#[tokio::test]
async fn layout_redis_postgres() {
    layout(Backend::RedisPostgres).await
}

/// `ttl_multiplier` (managed plans use 0.8) and jitter apply to every key written.
#[tokio::test]
async fn multiplier_applies() {
    let app = crate::helpers::spawn_app_with(Backend::RedisSqlite, |c| {
        c.ttl.multiplier = 0.8;
        c.ttl.jitter = 0.0;
    })
    .await;
    app.register(json!({"flow_id": "m", "flow_type": "t"}))
        .await;
    let ttl = ttl(&app, "orchestrator:flow:{m}").await;
    assert!((2878..=2880).contains(&ttl), "{ttl}");
}

/// A flow whose cached record expired is read from the ledger and cached again.
#[tokio::test]
async fn read_through_repopulates() {
    let app = spawn_app(Backend::RedisSqlite).await;
    let flow = app
        .register(json!({"flow_id": "r", "flow_type": "t"}))
        .await;
    let _: () = app
        .redis()
        .del(app.key("orchestrator:flow:{r}"))
        .await
        .unwrap();
    assert_eq!(app.get("/v1/flows/r").await.body, flow);
    let exists: bool = app
        .redis()
        .exists(app.key("orchestrator:flow:{r}"))
        .await
        .unwrap();
    assert!(exists, "repopulated");
}
