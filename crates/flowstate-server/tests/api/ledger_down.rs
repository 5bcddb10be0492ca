//! The ledger unreachable (docs/degraded-mode.md): requests that need it answer 503 with `Retry-After`,
//! nothing is half-applied in either tier, and service resumes when it is back.

use std::time::Duration;

use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, TcpProxy, postgres_schema, postgres_url, spawn_app_with};

#[tokio::test]
async fn postgres_unreachable_answers_503_and_applies_nothing() {
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    let direct = postgres_schema(&schema).await;
    let port = proxy.port;
    let app = spawn_app_with(Backend::RedisPostgres, move |c| {
        let admin = postgres_url();
        let host = admin
            .split('@')
            .nth(1)
            .and_then(|h| h.split('/').next())
            .unwrap_or("")
            .to_string();
        c.database.url = direct.replace(&host, &format!("127.0.0.1:{port}"));
        c.database.acquire_timeout_ms = 500;
    })
    .await;
    app.register(json!({"flow_id": "before", "flow_type": "t"}))
        .await;
    app.register(json!({"flow_id": "other", "flow_type": "t"}))
        .await;
    app.get("/v1/flows/before").await;
    app.get("/v1/flows/other").await;

    proxy.cut();
    let down = app
        .post("/v1/flows", json!({"flow_id": "during", "flow_type": "t"}))
        .await;
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        down.body
    );
    assert_eq!(down.body["error"]["code"], "ledger_unavailable");
    assert!(down.headers.contains_key("retry-after"));
    let put = app
        .send(
            app.http
                .put(app.url("/v1/flows/before/state"))
                .json(&json!({"state": {"a": 1}})),
        )
        .await;
    assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE);
    let t = app
        .post(
            "/v1/flows/before/transitions",
            json!({"from": "initializing", "to": "running"}),
        )
        .await;
    assert_eq!(t.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        app.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let health = app.get("/v1/health").await;
    assert_eq!(
        (health.status, health.body["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
    );
    // Reads the hot tier can answer still work...
    assert_eq!(
        app.get("/v1/flows/other").await.body["status"],
        "initializing"
    );
    // ...except for a flow whose write may or may not have committed: its cached record was
    // dropped, and 503 beats a possibly stale answer.
    let unsure = app.get("/v1/flows/before").await;
    assert_eq!(
        unsure.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        unsure.body
    );
    let mut r = app.redis();
    let cached: bool = r
        .exists(app.key("orchestrator:flow:{before}"))
        .await
        .unwrap();
    assert!(!cached, "an unknown outcome drops the cached record");
    let leaked: bool = r
        .exists(app.key("orchestrator:flow:{during}"))
        .await
        .unwrap();
    assert!(
        !leaked,
        "a write the ledger refused never reaches the hot tier"
    );
    let state: bool = r
        .exists(app.key("cache:flow:state:{before}"))
        .await
        .unwrap();
    assert!(!state);

    proxy.restore();
    let mut back = None;
    for _ in 0..50 {
        let a = app
            .post("/v1/flows", json!({"flow_id": "after", "flow_type": "t"}))
            .await;
        if a.status == StatusCode::CREATED {
            back = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back.is_some(), "the ledger came back");
    assert_eq!(
        app.get("/v1/flows/during").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/v1/flows/before").await.body["status"],
        "initializing",
        "nothing half-applied"
    );
    assert_eq!(
        app.get("/v1/flows/before/state").await.body["error"]["code"],
        "state_not_found"
    );
}
