//! A flow's state, phase states and per-flow agent results, on every backend.

use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, TestApp, all_backends, spawn_app};

async fn put(app: &TestApp, path: &str, body: serde_json::Value) -> crate::helpers::Answer {
    app.send(app.http.put(app.url(path)).json(&body)).await
}

async fn state_phases_agents(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "f", "flow_type": "discovery"}))
        .await;

    let none = app.get("/v1/flows/f/state").await;
    assert_eq!(
        (none.status, none.body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("state_not_found"))
    );

    let saved = put(
        &app,
        "/v1/flows/f/state",
        json!({"state": {"step": 1, "notes": ["a"]}}),
    )
    .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    for _ in 0..2 {
        let got = app.get("/v1/flows/f/state").await;
        assert_eq!(got.body["state"], json!({"step": 1, "notes": ["a"]}));
        assert_eq!(got.body["version"], 1);
    }
    put(&app, "/v1/flows/f/state", json!({"state": {"step": 2}})).await;
    assert_eq!(
        app.get("/v1/flows/f/state").await.body["state"],
        json!({"step": 2})
    );

    // A large state (compressed in Redis) comes back byte for byte.
    let text = "tool call result summary ".repeat(400);
    put(&app, "/v1/flows/f/state", json!({"state": {"text": text}})).await;
    assert_eq!(
        app.get("/v1/flows/f/state").await.body["state"]["text"],
        json!(text)
    );

    for (phase, n) in [("synthesis", 1), ("data_discovery", 2)] {
        let a = put(
            &app,
            &format!("/v1/flows/f/phases/{phase}"),
            json!({"state": {"n": n}}),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    let phase = app.get("/v1/flows/f/phases/synthesis").await;
    assert_eq!(phase.body["phase"], "synthesis");
    assert_eq!(phase.body["state"], json!({"n": 1}));
    assert!(phase.body["saved_at"].is_string());
    assert_eq!(
        app.get("/v1/flows/f/phases").await.body,
        json!({"phases": ["data_discovery", "synthesis"]})
    );
    let missing = app.get("/v1/flows/f/phases/review").await;
    assert_eq!(missing.body["error"]["code"], "phase_not_found");
    // Saving a phase invalidated the cached state; reading it still gives the ledger's.
    assert_eq!(
        app.get("/v1/flows/f/state").await.body["state"]["text"],
        json!(text)
    );

    put(
        &app,
        "/v1/flows/f/agents/codebase_analyzer",
        json!({"results": {"files": 12}}),
    )
    .await;
    put(
        &app,
        "/v1/flows/f/agents/planner",
        json!({"results": {"plan": ["x"]}}),
    )
    .await;
    let agent = app.get("/v1/flows/f/agents/codebase_analyzer").await;
    assert_eq!(agent.body["agent"], "codebase_analyzer");
    assert_eq!(agent.body["results"], json!({"files": 12}));
    assert!(agent.body["cached_at"].is_string());
    assert_eq!(
        app.get("/v1/flows/f/agents").await.body,
        json!({"agents": ["codebase_analyzer", "planner"]})
    );

    // Deleting the flow deletes its documents in both tiers.
    assert_eq!(
        app.delete("/v1/flows/f").await.status,
        StatusCode::NO_CONTENT
    );
    for path in [
        "/v1/flows/f/state",
        "/v1/flows/f/phases/synthesis",
        "/v1/flows/f/agents/planner",
        "/v1/flows/f/phases",
    ] {
        let a = app.get(path).await;
        assert_eq!(a.body["error"]["code"], "flow_not_found", "{path}");
    }
    app.register(json!({"flow_id": "f", "flow_type": "again"}))
        .await;
    assert_eq!(
        app.get("/v1/flows/f/phases/synthesis").await.body["error"]["code"],
        "phase_not_found"
    );
    assert_eq!(
        app.get("/v1/flows/f/state").await.body["error"]["code"],
        "state_not_found"
    );
}
all_backends!(state_phases_agents);

async fn document_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    for (path, body, status, code) in [
        (
            "/v1/flows/f/state",
            json!({"state": [1, 2]}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/v1/flows/f/state",
            json!({"state": "text"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/v1/flows/f/state",
            json!({"other": {}}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/v1/flows/f/phases/bad%20phase",
            json!({"state": {}}),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "/v1/flows/f/agents/a%2Fb",
            json!({"results": {}}),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "/v1/flows/f/agents/x",
            json!({"results": 3}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "/v1/flows/ghost/state",
            json!({"state": {}}),
            StatusCode::NOT_FOUND,
            "flow_not_found",
        ),
        (
            "/v1/flows/ghost/phases/p",
            json!({"state": {}}),
            StatusCode::NOT_FOUND,
            "flow_not_found",
        ),
    ] {
        let a = put(&app, path, body).await;
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {}",
            a.body
        );
    }
    let big = json!({"state": {"blob": "x".repeat(1024 * 1024)}});
    let a = put(&app, "/v1/flows/f/state", big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        app.get("/v1/flows/ghost/state").await.body["error"]["code"],
        "flow_not_found"
    );
    assert_eq!(
        app.get("/v1/flows/f/state").await.body["error"]["code"],
        "state_not_found",
        "nothing was written"
    );
}
all_backends!(document_bad_input);

/// Concurrent writers: whatever order their hot-tier writes land in, the cache ends on the
/// version the ledger kept.
async fn concurrent_state_writes_never_leave_a_stale_cache(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    let writes = (0..32).map(|i| {
        let req = app
            .http
            .put(app.url("/v1/flows/f/state"))
            .json(&json!({"state": {"i": i}}));
        async move { assert!(req.send().await.unwrap().status().is_success()) }
    });
    futures::future::join_all(writes).await;
    let cached = app.get("/v1/flows/f/state").await.body;
    assert_eq!(cached["version"], 32);
    if let Some(mut r) = app.redis.clone() {
        let _: () = r.del(app.key("cache:flow:state:{f}")).await.unwrap();
    }
    assert_eq!(
        app.get("/v1/flows/f/state").await.body,
        cached,
        "cache == ledger"
    );
}
all_backends!(concurrent_state_writes_never_leave_a_stale_cache);

#[tokio::test]
async fn redis_keys_types_and_ttls() {
    let app = spawn_app(Backend::RedisSqlite).await;
    app.register(json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    let mut r = app.redis();
    let ttl = |r: &mut redis::aio::MultiplexedConnection, k: &str| {
        let k = app.key(k);
        let mut r = r.clone();
        async move { r.ttl::<_, i64>(k).await.unwrap() }
    };
    put(&app, "/v1/flows/f/state", json!({"state": {"a": 1}})).await;
    let t = ttl(&mut r, "cache:flow:state:{f}").await;
    assert!((298..=315).contains(&t), "active state ttl {t}");
    let raw: Vec<u8> = r.get(app.key("cache:flow:state:{f}")).await.unwrap();
    assert_eq!(raw[0], b'j', "small values are plain JSON");

    app.post(
        "/v1/flows/f/transitions",
        json!({"from": "initializing", "to": "completed"}),
    )
    .await;
    put(
        &app,
        "/v1/flows/f/state",
        json!({"state": {"text": "summary of the run ".repeat(100)}}),
    )
    .await;
    let t = ttl(&mut r, "cache:flow:state:{f}").await;
    assert!((3598..=3780).contains(&t), "completed state ttl {t}");
    let raw: Vec<u8> = r.get(app.key("cache:flow:state:{f}")).await.unwrap();
    assert_eq!(raw[0], b'z', "values over 1 KiB are compressed");
    assert!(raw.len() < 1000, "{} bytes", raw.len());

    put(
        &app,
        "/v1/flows/f/phases/technology_analysis",
        json!({"state": {"x": 1}}),
    )
    .await;
    let t = ttl(&mut r, "discovery:phase:{f}:technology_analysis").await;
    assert!((7198..=7560).contains(&t), "phase ttl {t}");
    let marker: Vec<u8> = r.get(app.key("cache:flow:state:{f}")).await.unwrap();
    assert_eq!(
        marker[0], b'x',
        "a phase save leaves an invalidation marker on the cached state"
    );
    assert!(ttl(&mut r, "cache:flow:state:{f}").await <= 60);
    let phases: Vec<String> = r
        .smembers(app.key("discovery:state:{f}:phases"))
        .await
        .unwrap();
    assert_eq!(phases, ["technology_analysis"]);
    let t = ttl(&mut r, "discovery:state:{f}:phases").await;
    assert!((86398..=90720).contains(&t), "phase set ttl {t}");

    put(
        &app,
        "/v1/flows/f/agents/codebase_analyzer",
        json!({"results": {"n": 1}}),
    )
    .await;
    put(
        &app,
        "/v1/flows/f/agents/planner",
        json!({"results": {"n": 2}}),
    )
    .await;
    let t = ttl(&mut r, "discovery:agents:{f}:codebase_analyzer").await;
    assert!((3598..=3780).contains(&t), "analyzer ttl {t}");
    let t = ttl(&mut r, "discovery:agents:{f}:planner").await;
    assert!((1798..=1890).contains(&t), "agent ttl {t}");
    let mut agents: Vec<String> = r
        .smembers(app.key("discovery:state:{f}:cached_agents"))
        .await
        .unwrap();
    agents.sort();
    assert_eq!(agents, ["codebase_analyzer", "planner"]);

    app.delete("/v1/flows/f").await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*{{f}}*", app.config.key_prefix))
        .query_async(&mut r)
        .await
        .unwrap();
    let mut left = left;
    left.sort();
    assert_eq!(
        left,
        [
            app.key("flow:events:{f}"),
            app.key("flow:events:{f}:meta"),
            app.key("orchestrator:flow:{f}"),
        ],
        "only the tombstone remains, and the event stream for subscribers to see FLOW_DELETED"
    );
    for key in ["flow:events:{f}", "flow:events:{f}:meta"] {
        let t = ttl(&mut r, key).await;
        assert!(
            (1..=60).contains(&t),
            "{key} lives as long as the tombstone: {t}"
        );
    }
}
