//! Degraded mode (docs/degraded-mode.md): Redis killed or hung mid-workload. Every request still succeeds,
//! every write stays readable, responses say they are degraded, fallbacks are logged, and when
//! Redis is back no read is stale and the hot tier serves again.

use std::time::Duration;

use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, RedisServer, TcpProxy, TestApp, spawn_app_from, spawn_app_with};

const FLOWS: usize = 8;

async fn app_on(redis: &RedisServer) -> TestApp {
    let url = redis.url();
    spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(url);
        c.redis.command_timeout_ms = 200;
        c.redis.connect_timeout_ms = 200;
        c.redis.reconnect_max_delay_ms = 200;
    })
    .await
}

/// One round of the workload: write a state, a phase and a transition for every flow, then
/// read them all back; every request must succeed and read its own write.
async fn workload(app: &TestApp, round: usize) -> usize {
    let mut degraded = 0;
    for i in 0..FLOWS {
        let f = format!("/v1/flows/f{i}");
        let put = app
            .send(
                app.http
                    .put(app.url(&format!("{f}/state")))
                    .json(&json!({"state": {"round": round}})),
            )
            .await;
        assert_eq!(put.status, StatusCode::OK, "round {round}: {}", put.body);
        let phase = app
            .send(
                app.http
                    .put(app.url(&format!("{f}/phases/analysis")))
                    .json(&json!({"state": {"round": round}})),
            )
            .await;
        assert_eq!(
            phase.status,
            StatusCode::OK,
            "round {round}: {}",
            phase.body
        );
        let (from, to) = if round.is_multiple_of(2) {
            ("initializing", "running")
        } else {
            ("running", "initializing")
        };
        let t = app
            .post(&format!("{f}/transitions"), json!({"from": from, "to": to}))
            .await;
        assert_eq!(t.status, StatusCode::OK, "round {round}: {}", t.body);

        let state = app.get(&format!("{f}/state")).await;
        assert_eq!(
            state.body["state"],
            json!({"round": round}),
            "round {round}: read your write"
        );
        let phase = app.get(&format!("{f}/phases/analysis")).await;
        assert_eq!(phase.body["state"], json!({"round": round}));
        let flow = app.get(&f).await;
        assert_eq!(flow.body["status"], to);
        degraded += [state, phase, flow]
            .iter()
            .filter(|a| a.headers.contains_key("flowstate-degraded"))
            .count();
    }
    degraded
}

async fn wait_healthy(app: &TestApp) -> Value {
    for _ in 0..200 {
        let h = app.get("/v1/health").await;
        if h.body["status"] == "healthy" {
            return h.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "hot tier did not come back: {}",
        app.get("/v1/health").await.body
    );
}

async fn fallback_rows(app: &TestApp) -> Vec<Value> {
    for _ in 0..100 {
        let rows = app.get("/v1/fallbacks?limit=100").await.body["fallbacks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !rows.is_empty() {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no fallback log rows");
}

async fn setup(app: &TestApp) {
    for i in 0..FLOWS {
        app.register(json!({"flow_id": format!("f{i}"), "flow_type": "t"}))
            .await;
    }
}

/// Reads go to Redis again: the round-trip counter moves and the keys are back.
async fn assert_hot_tier_serves(app: &TestApp) {
    let before = app.round_trips().await;
    let state = app.get("/v1/flows/f0/state").await;
    assert!(
        !state.headers.contains_key("flowstate-degraded"),
        "healthy responses are not marked"
    );
    assert!(
        app.round_trips().await > before + 1,
        "reads use redis again"
    );
    // A fresh connection: the test's own may point at a Redis that was killed.
    let url = app.config.redis.url.clone().unwrap();
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let cached: bool = conn.exists(app.key("cache:flow:state:{f0}")).await.unwrap();
    assert!(cached, "state cached in redis again");
}

#[tokio::test]
async fn redis_killed_mid_workload() {
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let app = app_on(&redis).await;
    setup(&app).await;
    assert_eq!(workload(&app, 0).await, 0, "healthy: no degraded responses");

    redis.kill();
    let degraded = workload(&app, 1).await + workload(&app, 2).await;
    assert!(degraded > 0, "responses served without redis say so");
    let h = app.get("/v1/health").await;
    assert_eq!(h.body["status"], "degraded", "{}", h.body);
    assert_eq!(h.body["redis"]["stats"]["breaker_open"], true);

    let _redis = RedisServer::start_on(port).await;
    wait_healthy(&app).await;
    workload(&app, 3).await;
    assert_hot_tier_serves(&app).await;

    let rows = fallback_rows(&app).await;
    let total: i64 = rows.iter().map(|r| r["count"].as_i64().unwrap()).sum();
    assert!(total >= (FLOWS * 3) as i64, "{rows:?}");
    assert!(
        rows.len() < 40,
        "aggregated, not one row per request: {} rows",
        rows.len()
    );
    for r in &rows {
        assert!(
            ["timeout", "error", "unavailable"].contains(&r["reason"].as_str().unwrap()),
            "{r}"
        );
        assert_eq!(r["fallback_source"], "ledger");
    }
}

#[tokio::test]
async fn redis_hung_then_resumed_serves_no_stale_read() {
    let redis = RedisServer::start().await;
    let app = app_on(&redis).await;
    setup(&app).await;
    workload(&app, 0).await;
    // Every flow's state, phase and record are now cached in redis at round 0.

    redis.pause();
    let degraded = workload(&app, 1).await;
    assert!(degraded > 0);
    assert_eq!(app.get("/v1/health").await.body["status"], "degraded");

    redis.resume();
    let health = wait_healthy(&app).await;
    assert_eq!(health["redis"]["stats"]["dirty_keys"], 0, "{health}");
    // Redis kept its round-0 values through the pause; none of them may be served.
    for i in 0..FLOWS {
        let f = format!("/v1/flows/f{i}");
        assert_eq!(
            app.get(&format!("{f}/state")).await.body["state"],
            json!({"round": 1}),
            "{f}"
        );
        assert_eq!(
            app.get(&format!("{f}/phases/analysis")).await.body["state"],
            json!({"round": 1})
        );
        assert_eq!(
            app.get(&f).await.body["status"],
            "initializing",
            "{f}: round 1 moved it back"
        );
    }
    assert_hot_tier_serves(&app).await;
    workload(&app, 2).await;
    assert!(!fallback_rows(&app).await.is_empty());
}

/// Rows of `hot_invalidations` in the app's ledger.
async fn recorded_invalidations(app: &TestApp) -> i64 {
    let sql = "SELECT COUNT(*) FROM hot_invalidations";
    let url = &app.config.database.url;
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap()
    }
}

/// The keys a write could not reach are not only in the writing process's memory: the ledger
/// has them too, so a process that dies before it can reach Redis again cannot leave a stale
/// value to be read by the next one.
async fn keys_left_stale_by_a_dead_process_are_invalidated_by_the_next_one(backend: Backend) {
    let redis = RedisServer::start().await;
    // The first process reaches Redis through a proxy that the test cuts for good: it never
    // gets to clean up after itself.
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    let first = spawn_app_with(backend, |c| {
        c.redis.url = Some(format!("redis://127.0.0.1:{}/0", proxy.port));
        c.redis.command_timeout_ms = 200;
        c.redis.connect_timeout_ms = 200;
    })
    .await;
    first
        .register(json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    let put = |app: &TestApp, round: u32| {
        app.http
            .put(app.url("/v1/flows/f/state"))
            .json(&json!({"state": {"round": round}}))
    };
    assert_eq!(first.send(put(&first, 1)).await.status, StatusCode::OK);
    assert_eq!(
        first.get("/v1/flows/f/state").await.body["state"]["round"],
        1
    );

    proxy.cut();
    let written = first.send(put(&first, 2)).await;
    assert_eq!(written.status, StatusCode::OK, "{}", written.body);
    assert!(written.headers.contains_key("flowstate-degraded"));
    assert!(recorded_invalidations(&first).await > 0, "recorded");
    let (mut config, files) = first.crash().await;

    // Redis still holds round 1; the next process must not serve it.
    config.redis.url = Some(redis.url());
    let second = spawn_app_from(config, files).await;
    let state = second.get("/v1/flows/f/state").await;
    assert_eq!(state.body["state"]["round"], 2, "{}", state.body);
    assert!(
        !state.headers.contains_key("flowstate-degraded"),
        "served by a healthy hot tier"
    );
    // Once settled, the record is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while recorded_invalidations(&second).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "rows never cleared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        second.get("/v1/flows/f/state").await.body["state"]["round"],
        2
    );
}

#[tokio::test]
async fn keys_left_stale_by_a_dead_process_sqlite() {
    keys_left_stale_by_a_dead_process_are_invalidated_by_the_next_one(Backend::RedisSqlite).await;
}

#[tokio::test]
async fn keys_left_stale_by_a_dead_process_postgres() {
    keys_left_stale_by_a_dead_process_are_invalidated_by_the_next_one(Backend::RedisPostgres).await;
}
