//! The agent result cache over HTTP: canonical keys, per-agent TTLs that a hit slides,
//! statistics, invalidation, one Redis command per hit, and Redis down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Answer, Backend, RedisServer, TestApp, all_backends, spawn_app, spawn_app_with,
};

async fn put(app: &TestApp, agent: &str, body: Value) -> Answer {
    app.send(
        app.http
            .put(app.url(&format!("/v1/agent-cache/{agent}")))
            .json(&body),
    )
    .await
}

async fn lookup(app: &TestApp, agent: &str, body: Value) -> Answer {
    app.post(&format!("/v1/agent-cache/{agent}/lookup"), body)
        .await
}

async fn keys_and_stats(backend: Backend) {
    let app = spawn_app(backend).await;
    let miss = lookup(&app, "planner", json!({"input": {"q": "why", "n": [1, 2]}})).await;
    assert_eq!(miss.status, StatusCode::OK, "{}", miss.body);
    assert_eq!(miss.body, json!({"hit": false}));

    let stored = put(
        &app,
        "planner",
        json!({"input": {"q": "why", "n": [1, 2]}, "output": {"plan": ["a", "b"]}, "execution_time": 2.5}),
    )
    .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.body);
    assert_eq!(stored.body["stored"], true);
    assert_eq!(stored.body["hash"].as_str().unwrap().len(), 64);

    // Another key order, other whitespace, `1.0` for `1`: the same entry.
    let hit = app
        .send(
            app.http
                .post(app.url("/v1/agent-cache/planner/lookup"))
                .header("content-type", "application/json")
                .body(r#"{"input":{ "n":[1.0,2], "q":"why" }}"#),
        )
        .await;
    assert_eq!(hit.body["hit"], true, "{}", hit.body);
    assert_eq!(hit.body["output"], json!({"plan": ["a", "b"]}));
    assert_eq!(hit.body["execution_time"], 2.5);
    assert!(hit.body["cached_at"].is_string());

    // Another context, another agent: other entries.
    let other_context = lookup(
        &app,
        "planner",
        json!({"input": {"q": "why", "n": [1, 2]}, "context": {"model": "m2"}}),
    )
    .await;
    assert_eq!(other_context.body["hit"], false);
    let other_agent = lookup(&app, "critic", json!({"input": {"q": "why", "n": [1, 2]}})).await;
    assert_eq!(other_agent.body["hit"], false);

    let stats = app.get("/v1/agent-cache/planner/stats").await;
    assert_eq!(stats.status, StatusCode::OK);
    assert_eq!(stats.body["hit"], 1);
    assert_eq!(stats.body["miss"], 2);
    assert_eq!(stats.body["set"], 1);
    assert_eq!(stats.body["error"], 0);
    assert_eq!(stats.body["total_cached"], 1);
    assert!((stats.body["hit_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert!(stats.body["last_cached"].is_string());
    // Flushed to the hot tier, the totals stay the same.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.get("/v1/agent-cache/planner/stats").await.body,
        stats.body
    );
}
all_backends!(keys_and_stats);

async fn a_hit_slides_the_ttl_and_entries_expire(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.ttl.jitter = 0.0;
        c.ttl.agent_cache.insert("fast".into(), 2);
    })
    .await;
    let input = json!({"input": "x"});
    let stored = put(&app, "fast", json!({"input": "x", "output": 1})).await;
    assert_eq!(stored.status, StatusCode::CREATED);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1300)).await;
        // 2.6 s after the store by the second round: alive only because each hit slid it.
        assert_eq!(lookup(&app, "fast", input.clone()).await.body["hit"], true);
    }
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        lookup(&app, "fast", input).await.body["hit"],
        false,
        "expired"
    );
}
all_backends!(a_hit_slides_the_ttl_and_entries_expire);

async fn invalidation(backend: Backend) {
    let app = spawn_app(backend).await;
    let hashes: Vec<String> = futures::stream::iter(0..10_000)
        .map(|i| {
            let app = &app;
            async move {
                let a = put(app, "bulk", json!({"input": i, "output": i})).await;
                assert_eq!(a.status, StatusCode::CREATED);
                a.body["hash"].as_str().unwrap().to_string()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    put(&app, "other", json!({"input": 1, "output": 1})).await;

    // Those whose hash starts with "a": about 1/16 of them.
    let expected = hashes.iter().filter(|h| h.starts_with('a')).count() as u64;
    let by_pattern = app.delete("/v1/agent-cache/bulk?pattern=a*").await;
    assert_eq!(by_pattern.status, StatusCode::OK, "{}", by_pattern.body);
    assert_eq!(by_pattern.body["deleted"], expected);
    let all = app.delete("/v1/agent-cache/bulk").await;
    assert_eq!(all.body["deleted"], 10_000 - expected);
    assert_eq!(
        lookup(&app, "bulk", json!({"input": 7})).await.body["hit"],
        false
    );
    assert_eq!(
        lookup(&app, "other", json!({"input": 1})).await.body["hit"],
        true,
        "another agent's entries stay"
    );
    let bad = app.delete("/v1/agent-cache/bulk?pattern=A*").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["error"]["code"], "invalid_input");
}
all_backends!(invalidation);

#[tokio::test]
async fn bad_input_is_refused() {
    let app = spawn_app_with(Backend::Embedded, |c| c.max_body_bytes = 4096).await;
    let bad_agent = lookup(&app, "a b", json!({"input": 1})).await;
    assert_eq!(bad_agent.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_agent.body["error"]["code"], "invalid_id");
    let no_input = lookup(&app, "planner", json!({"context": 1})).await;
    assert_eq!(no_input.status, StatusCode::BAD_REQUEST);
    let no_output = put(&app, "planner", json!({"input": 1})).await;
    assert_eq!(no_output.status, StatusCode::BAD_REQUEST);
    let negative = put(
        &app,
        "planner",
        json!({"input": 1, "output": 1, "execution_time": -1}),
    )
    .await;
    assert_eq!(negative.status, StatusCode::BAD_REQUEST);
    let big = put(
        &app,
        "planner",
        json!({"input": 1, "output": "x".repeat(5000)}),
    )
    .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn one_command_per_hit_and_one_round_trip_per_store() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(Backend::RedisSqlite, |c| c.redis.url = Some(url)).await;
    put(&app, "planner", json!({"input": 1, "output": 2})).await;
    let (rtt, cmds) = request_only(
        crate::round_trips::measure(&app, async {
            let hit = lookup(&app, "planner", json!({"input": 1})).await;
            assert_eq!(hit.body["hit"], true);
        })
        .await,
    );
    assert_eq!((rtt, cmds), (1, commands(&[("getex", 1)])));
    let (rtt, cmds) = request_only(
        crate::round_trips::measure(&app, async {
            put(&app, "planner", json!({"input": 3, "output": 4})).await;
        })
        .await,
    );
    assert_eq!((rtt, cmds), (1, commands(&[("setex", 1)])));
}

fn commands(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
    list.iter().map(|(c, n)| (c.to_string(), *n)).collect()
}

/// Counters reach Redis once a second, off the request path: a flush that happens to fall in
/// a measured window (one round trip of HINCRBY / EXPIRE / HSET) is not the request's cost.
fn request_only((rtt, mut cmds): (u64, BTreeMap<String, u64>)) -> (u64, BTreeMap<String, u64>) {
    let flushed = ["hincrby", "expire", "hset"]
        .iter()
        .filter_map(|c| cmds.remove(*c))
        .count()
        .min(1) as u64;
    (rtt - flushed, cmds)
}

#[tokio::test]
async fn redis_down_means_misses_and_dropped_stores() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(Backend::RedisSqlite, |c| c.redis.url = Some(url)).await;
    put(&app, "planner", json!({"input": 1, "output": 2})).await;
    redis.kill();
    for _ in 0..5 {
        let miss = lookup(&app, "planner", json!({"input": 1})).await;
        assert_eq!(miss.status, StatusCode::OK);
        assert_eq!(miss.body["hit"], false);
        assert!(miss.headers.contains_key("flowstate-degraded"));
    }
    let dropped = put(&app, "planner", json!({"input": 5, "output": 6})).await;
    assert_eq!(dropped.status, StatusCode::CREATED);
    assert_eq!(dropped.body["stored"], false);
    let stats = app.get("/v1/agent-cache/planner/stats").await;
    assert_eq!(stats.status, StatusCode::OK);
    assert_eq!(stats.body["error"], 6);
    let invalidate = app.delete("/v1/agent-cache/planner").await;
    assert_eq!(invalidate.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(invalidate.body["error"]["code"], "hot_tier_unavailable");
}

async fn one_lease_among_concurrent_lookups(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..50 {
        let (http, url, tx) = (
            app.http.clone(),
            app.url("/v1/agent-cache/planner/lookup"),
            tx.clone(),
        );
        tokio::spawn(async move {
            let answer: Value = http
                .post(url)
                .json(&json!({"input": {"q": 1}, "lease_ms": 10_000, "wait_ms": 10_000}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let _ = tx.send(answer);
        });
    }
    // The lease holder is answered at once; everyone else waits for its result.
    let holder = rx.recv().await.unwrap();
    assert_eq!(holder["hit"], false, "{holder}");
    let token = holder["lease_token"]
        .as_str()
        .expect("the first answer holds the lease");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        rx.try_recv().is_err(),
        "the others wait for the holder's result"
    );
    let stored = put(
        &app,
        "planner",
        json!({"input": {"q": 1}, "output": "computed once", "lease_token": token}),
    )
    .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.body);
    for _ in 0..49 {
        let waiter = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("every waiter is served")
            .unwrap();
        assert_eq!(waiter["hit"], true, "{waiter}");
        assert_eq!(waiter["output"], "computed once");
        assert!(waiter.get("lease_token").is_none());
    }
    let stats = app.get("/v1/agent-cache/planner/stats").await;
    assert_eq!(
        (stats.body["hit"].clone(), stats.body["miss"].clone()),
        (json!(49), json!(1))
    );
}
all_backends!(one_lease_among_concurrent_lookups);

/// A holder whose computation failed gives its lease up: a caller waiting for its result
/// takes the lease at once (long before the holder's 30 s `lease_ms`); a token that no
/// longer holds the lease is `409 stale_lease`.
async fn a_released_lease_goes_to_a_waiter_at_once(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    let leased = json!({"input": {"q": "r"}, "context": {"v": 1}, "lease_ms": 30_000});
    let holder = lookup(&app, "writer", leased.clone()).await;
    let token = holder.body["lease_token"].as_str().unwrap().to_string();
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move {
            let waiting = json!({"input": {"q": "r"}, "context": {"v": 1},
                "lease_ms": 30_000, "wait_ms": 20_000});
            lookup(&app, "writer", waiting).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let release = |token: String| {
        let app = app.clone();
        async move {
            app.post(
                "/v1/agent-cache/writer/release",
                json!({"input": {"q": "r"}, "context": {"v": 1}, "lease_token": token}),
            )
            .await
        }
    };
    let released = release(token.clone()).await;
    assert_eq!(released.status, StatusCode::NO_CONTENT, "{}", released.body);
    let started = std::time::Instant::now();
    let taken = waiter.await.unwrap();
    assert_eq!(taken.body["hit"], false, "{}", taken.body);
    let fresh = taken.body["lease_token"]
        .as_str()
        .expect("the waiter takes the lease");
    assert_ne!(fresh, token);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "taken on release, not when the 30 s lease lapsed"
    );
    let again = release(token).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(again.body["error"]["code"], "stale_lease");
}
all_backends!(a_released_lease_goes_to_a_waiter_at_once);

async fn an_expired_lease_is_taken_over_and_its_store_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let leased = |ms: u64| json!({"input": "x", "lease_ms": ms});
    let first = lookup(&app, "planner", leased(300)).await;
    let stale = first.body["lease_token"].as_str().unwrap().to_string();
    let held = lookup(&app, "planner", leased(300)).await;
    assert_eq!(
        held.body,
        json!({"hit": false}),
        "held by the first caller, no wait"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = lookup(&app, "planner", leased(5000)).await;
    let fresh = second.body["lease_token"]
        .as_str()
        .expect("the expired lease is taken over");
    let refused = put(
        &app,
        "planner",
        json!({"input": "x", "output": 1, "lease_token": stale}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.body["error"]["code"], "stale_lease");
    assert_eq!(
        lookup(&app, "planner", json!({"input": "x"})).await.body["hit"],
        false,
        "nothing stored"
    );
    let stored = put(
        &app,
        "planner",
        json!({"input": "x", "output": 2, "lease_token": fresh}),
    )
    .await;
    assert_eq!(stored.status, StatusCode::CREATED);
    assert_eq!(
        lookup(&app, "planner", json!({"input": "x"})).await.body["output"],
        2
    );
    let reused = put(
        &app,
        "planner",
        json!({"input": "x", "output": 3, "lease_token": fresh}),
    )
    .await;
    assert_eq!(
        reused.status,
        StatusCode::CONFLICT,
        "a lease serves one store"
    );
    // A waiter whose holder never stores gets the lease once it expires.
    let holder = lookup(&app, "critic", json!({"input": "y", "lease_ms": 300})).await;
    assert!(holder.body["lease_token"].is_string());
    let waiter = lookup(
        &app,
        "critic",
        json!({"input": "y", "lease_ms": 300, "wait_ms": 3000}),
    )
    .await;
    assert!(waiter.body["lease_token"].is_string(), "{}", waiter.body);
}
all_backends!(an_expired_lease_is_taken_over_and_its_store_refused);

/// What `app` answers for planner's input 1.
async fn output(app: &TestApp) -> Value {
    lookup(app, "planner", json!({"input": 1})).await.body["output"].clone()
}

/// How many GETEX a private redis-server has run.
async fn getex_calls(app: &TestApp) -> u64 {
    crate::round_trips::commandstats(app)
        .await
        .get("getex")
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn the_l1_serves_hits_and_stays_coherent_across_instances() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let a = spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(url);
        c.agent_cache.l1 = true;
        c.agent_cache.l1_ttl_ms = 300;
    })
    .await;
    // A second instance on the same Redis and key prefix, with a ledger of its own.
    let tmp = tempfile::tempdir().unwrap();
    let mut config = a.config.clone();
    config.database.url = format!("sqlite://{}", tmp.path().join("b.db").display());
    let b = crate::helpers::spawn_app_from(config, tmp).await;
    put(&a, "planner", json!({"input": 1, "output": "v1"})).await;
    assert_eq!(output(&a).await, "v1");
    let before = getex_calls(&a).await;
    for _ in 0..20 {
        assert_eq!(output(&a).await, "v1");
    }
    assert_eq!(
        getex_calls(&a).await - before,
        0,
        "hits served from process memory"
    );

    // This instance's own store is seen at once.
    put(&a, "planner", json!({"input": 1, "output": "v2"})).await;
    assert_eq!(output(&a).await, "v2");

    // Another instance's store and invalidation arrive within the L1 time (300 ms).
    put(&b, "planner", json!({"input": 1, "output": "v3"})).await;
    let bound = Duration::from_millis(300 + 700);
    let seen = async {
        while output(&a).await != "v3" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(bound, seen)
        .await
        .expect("the other instance's store reached this L1 in time");
    assert_eq!(b.delete("/v1/agent-cache/planner").await.body["deleted"], 1);
    let gone = async {
        while lookup(&a, "planner", json!({"input": 1})).await.body["hit"] != false {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(bound, gone)
        .await
        .expect("the other instance's invalidation reached this L1 in time");
}
