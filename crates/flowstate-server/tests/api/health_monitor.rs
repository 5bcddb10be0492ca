//! The health monitor with thresholds set low, against a private redis-server: alerts reach a
//! webhook receiver in the test and `/v1/health`, series land in `metrics:redis:*`, and a
//! webhook that hangs or is down holds up neither the checks nor requests; the embedded tier
//! reports its own figures.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::helpers::{Backend, RedisServer, TestApp, spawn_app_with};

/// An HTTP receiver on a free port that forwards every JSON body it is POSTed.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State(tx): State<mpsc::UnboundedSender<Value>>, Json(body): Json<Value>| async move {
                    let _ = tx.send(body);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// A receiver that accepts connections and never answers.
async fn hanging() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

async fn app_on(redis: &RedisServer, webhook: String) -> TestApp {
    let url = redis.url();
    spawn_app_with(Backend::RedisSqlite, move |c| {
        c.redis.url = Some(url);
        c.health.interval_s = 1;
        c.health.max_clients = 0;
        c.health.alert_webhook = Some(webhook);
    })
    .await
}

async fn series_len(redis: &RedisServer, app: &TestApp, metric: &str) -> u64 {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("ZCARD")
        .arg(app.key(&format!("metrics:redis:{metric}")))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn alerts_reach_the_webhook_and_health() {
    let redis = RedisServer::start().await;
    let (hook, mut posted) = receiver().await;
    let app = app_on(&redis, hook).await;

    let alert = tokio::time::timeout(Duration::from_secs(20), posted.recv())
        .await
        .expect("no alert posted")
        .unwrap();
    assert_eq!(alert["status"], "firing", "{alert}");
    assert_eq!(alert["metric"], "connected_clients", "{alert}");
    assert!(alert["value"].as_f64().unwrap() >= 1.0, "{alert}");
    assert_eq!(alert["threshold"], 0.0);
    assert!(alert["since"].as_i64().is_some());

    let health = app.get("/v1/health").await;
    let alerts = health.body["alerts"].as_array().unwrap();
    let clients = alerts
        .iter()
        .find(|a| a["metric"] == "connected_clients")
        .expect("active in /v1/health");
    for field in ["value", "threshold", "since", "message"] {
        assert!(!clients[field].is_null(), "{field}: {clients}");
    }
    assert!(
        health.body["monitor"]["connected_clients"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(series_len(&redis, &app, "connected_clients").await >= 1);
}

/// A webhook that accepts connections and never answers.
#[tokio::test]
async fn a_hanging_webhook_delays_nothing() {
    checks_and_requests_go_on(hanging().await).await;
}

/// The same with a webhook nobody listens on (connection refused on every attempt).
#[tokio::test]
async fn a_webhook_that_is_down_delays_nothing() {
    let port = crate::helpers::free_port();
    checks_and_requests_go_on(format!("http://127.0.0.1:{port}/hook")).await;
}

/// With alerts posted to `webhook`, the monitor keeps checking and requests are served.
async fn checks_and_requests_go_on(webhook: String) {
    let redis = RedisServer::start().await;
    let app = app_on(&redis, webhook).await;
    // Checks go on while every post hangs: the series keeps growing.
    let mut grown = 0;
    for _ in 0..100 {
        grown = series_len(&redis, &app, "connected_clients").await;
        if grown >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        grown >= 3,
        "checks stalled behind the webhook: {grown} samples"
    );
    // And requests are served.
    let a = app
        .post("/v1/flows", json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(app.get("/v1/health").await.status, StatusCode::OK);
}

/// A plan with a tiny daily command limit: the alert comes at 80 % of it, with today's use in
/// `/v1/health`; pooled connections recycled every second keep serving.
#[tokio::test]
async fn a_tiny_budget_alerts_at_80_pct() {
    let redis = RedisServer::start().await;
    let (hook, mut posted) = receiver().await;
    let url = redis.url();
    let app = spawn_app_with(Backend::RedisSqlite, move |c| {
        c.redis.url = Some(url);
        c.health.interval_s = 1;
        c.health.alert_webhook = Some(hook);
        c.budget.plan = Some("free".into());
        c.budget.max_commands_per_day = Some(10);
        c.budget.connection_pool_recycle_s = 1;
    })
    .await;
    let alert = loop {
        let alert = tokio::time::timeout(Duration::from_secs(20), posted.recv())
            .await
            .expect("no budget alert")
            .unwrap();
        if alert["metric"] == "daily_commands_pct" {
            break alert;
        }
    };
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["threshold"], 80.0);
    assert!(alert["value"].as_f64().unwrap() >= 80.0, "{alert}");
    let health = app.get("/v1/health").await;
    let budget = &health.body["monitor"]["budget"];
    assert!(budget["commands"].as_u64().unwrap() >= 8, "{budget}");
    assert_eq!(budget["commands_limit"], 10);
    assert_eq!(
        budget["bytes_limit"],
        100 * 1024 * 1024,
        "the free plan's bandwidth"
    );
    // Requests go on across recycled connections.
    for i in 0..3 {
        let a = app
            .post(
                "/v1/flows",
                json!({"flow_id": format!("f{i}"), "flow_type": "t"}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

/// With the in-process tier the monitor reports that tier's own figures: its cached entries
/// and the bytes of its cached agent results.
#[tokio::test]
async fn the_embedded_tier_reports_its_entries_and_memory() {
    let app = spawn_app_with(Backend::Embedded, |c| c.health.interval_s = 1).await;
    let a = app
        .post("/v1/flows", json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let a = app
        .send(
            app.http
                .put(app.url("/v1/agent-cache/writer"))
                .json(&json!({"input": {"q": "x"}, "output": {"text": "y".repeat(1000)}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let mut monitor = Value::Null;
    for _ in 0..50 {
        monitor = app.get("/v1/health").await.body["monitor"].clone();
        if monitor["keys"].as_u64() >= Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(monitor["backend"], "memory", "{monitor}");
    assert!(monitor["keys"].as_u64() >= Some(2), "{monitor}");
    assert!(
        monitor["used_memory"].as_u64() >= Some(1000),
        "the cached result's bytes: {monitor}"
    );
}
