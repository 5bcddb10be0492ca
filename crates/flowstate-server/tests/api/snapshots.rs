//! Snapshots: newest ten kept, lineage, restore (roll back) and fork (branch), on every backend.

use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, all_backends, spawn_app};

async fn lineage_restore_fork(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "f", "flow_type": "research"}))
        .await;
    for i in 0..12 {
        let a = app
            .post(
                "/v1/flows/f/snapshots",
                json!({"snapshot_id": format!("s{i}"), "state": {"n": i}}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        let parent = if i == 0 {
            json!(null)
        } else {
            json!(format!("s{}", i - 1))
        };
        assert_eq!(a.body["parent_snapshot_id"], parent);
    }
    let list = app.get("/v1/flows/f/snapshots").await;
    let expected: Vec<String> = (2..12).rev().map(|i| format!("s{i}")).collect();
    assert_eq!(
        list.body["snapshots"],
        json!(expected),
        "newest ten, newest first"
    );
    for gone in ["s0", "s1"] {
        let a = app.get(&format!("/v1/flows/f/snapshots/{gone}")).await;
        assert_eq!(a.body["error"]["code"], "snapshot_not_found", "{gone}");
    }
    for _ in 0..2 {
        let s5 = app.get("/v1/flows/f/snapshots/s5").await;
        assert_eq!(s5.body["state"], json!({"n": 5}));
        assert_eq!(s5.body["parent_snapshot_id"], "s4");
        assert!(s5.body["created_at"].is_string());
    }
    let dup = app
        .post(
            "/v1/flows/f/snapshots",
            json!({"snapshot_id": "s5", "state": {}}),
        )
        .await;
    assert_eq!(
        (dup.status, dup.body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("snapshot_exists"))
    );
    let generated = app
        .post("/v1/flows/f/snapshots", json!({"state": {"n": 12}}))
        .await;
    let gid = generated.body["snapshot_id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&gid).is_ok());

    // Restore: the state rolls back, and the next snapshot descends from the restored one.
    app.send(
        app.http
            .put(app.url("/v1/flows/f/state"))
            .json(&json!({"state": {"n": 99}})),
    )
    .await;
    app.get("/v1/flows/f/state").await;
    let restored = app
        .post("/v1/flows/f/snapshots/s5/restore", json!(null))
        .await;
    assert_eq!(restored.status, StatusCode::OK, "{}", restored.body);
    assert_eq!(restored.body["flow"]["flow_id"], "f");
    assert_eq!(
        app.get("/v1/flows/f/state").await.body["state"],
        json!({"n": 5})
    );
    let next = app
        .post(
            "/v1/flows/f/snapshots",
            json!({"snapshot_id": "after", "state": {"n": 6}}),
        )
        .await;
    assert_eq!(next.body["parent_snapshot_id"], "s5");

    // Fork: a child flow whose state starts from the snapshot.
    let fork = app
        .send(app.http.post(app.url("/v1/flows/f/snapshots/s7/fork")))
        .await;
    assert_eq!(fork.status, StatusCode::CREATED, "{}", fork.body);
    let child = fork.body["flow"]["flow_id"].as_str().unwrap().to_string();
    assert_eq!(fork.body["flow"]["parent_flow_id"], "f");
    assert_eq!(fork.body["flow"]["flow_type"], "research");
    assert_eq!(
        fork.body["flow"]["metadata"]["forked_from"],
        json!({"flow_id": "f", "snapshot_id": "s7"})
    );
    assert_eq!(
        app.get(&format!("/v1/flows/{child}/state")).await.body["state"],
        json!({"n": 7})
    );
    let named = app
        .post(
            "/v1/flows/f/snapshots/s8/fork",
            json!({"flow_id": "branch", "flow_type": "what_if"}),
        )
        .await;
    assert_eq!(named.body["flow"]["flow_type"], "what_if");
    let first = app
        .post(
            "/v1/flows/branch/snapshots",
            json!({"snapshot_id": "b0", "state": {}}),
        )
        .await;
    assert_eq!(
        first.body["parent_snapshot_id"], "s8",
        "a fork's lineage starts at its snapshot"
    );
    assert_eq!(
        app.get("/v1/flows/f/children").await.body["children"],
        json!([child, "branch"])
    );
    let again = app
        .post(
            "/v1/flows/f/snapshots/s8/fork",
            json!({"flow_id": "branch"}),
        )
        .await;
    assert_eq!(again.body["error"]["code"], "flow_exists");
    // A `null` body is no body, as the OpenAPI document says (schemathesis sent one).
    let null_body = app
        .send(
            app.http
                .post(app.url("/v1/flows/f/snapshots/s8/fork"))
                .header("content-type", "application/json")
                .body("null"),
        )
        .await;
    assert_eq!(null_body.status, StatusCode::CREATED, "{}", null_body.body);
    assert_eq!(null_body.body["flow"]["flow_type"], "research");

    for (path, code) in [
        ("/v1/flows/f/snapshots/s0/restore", "snapshot_not_found"),
        ("/v1/flows/f/snapshots/s0/fork", "snapshot_not_found"),
        ("/v1/flows/ghost/snapshots/s5/restore", "flow_not_found"),
    ] {
        let a = app.post(path, json!({})).await;
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some(code)),
            "{path}"
        );
    }
    let bad = app
        .post(
            "/v1/flows/f/snapshots",
            json!({"snapshot_id": "no good", "state": {}}),
        )
        .await;
    assert_eq!(bad.body["error"]["code"], "invalid_id");
    let bad = app
        .post(
            "/v1/flows/f/snapshots",
            json!({"snapshot_id": "list", "state": {}}),
        )
        .await;
    assert_eq!(
        bad.body["error"]["code"], "invalid_id",
        "'list' names the snapshot list key"
    );
    let big = app
        .send(
            app.http
                .post(app.url("/v1/flows/f/snapshots/s5/fork"))
                .body("x".repeat(2 * 1024 * 1024)),
        )
        .await;
    assert_eq!(
        (big.status, big.body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let bad = app.post("/v1/flows/f/snapshots", json!({"state": 5})).await;
    assert_eq!(bad.body["error"]["code"], "invalid_body");
    assert_eq!(
        app.get("/v1/flows/ghost/snapshots").await.body["error"]["code"],
        "flow_not_found"
    );

    if let Some(mut r) = app.redis.clone() {
        let list: Vec<String> = r
            .lrange(app.key("flow:snapshots:{f}:list"), 0, -1)
            .await
            .unwrap();
        assert_eq!(list.len(), 10);
        assert_eq!(list[0], "after");
        let ttl: i64 = r.ttl(app.key("flow:snapshots:{f}:s9")).await.unwrap();
        assert!((604_790..=635_040).contains(&ttl), "{ttl}");
        let evicted: bool = r.exists(app.key("flow:snapshots:{f}:s0")).await.unwrap();
        assert!(!evicted);
        let events: redis::streams::StreamRangeReply =
            r.xrange_all(app.key("flow:events:{f}")).await.unwrap();
        let restored = events
            .ids
            .iter()
            .find(|e| e.get::<String>("t").as_deref() == Some("STATE_RESTORED"));
        assert!(restored.is_some(), "restore emitted STATE_RESTORED");
    }

    app.delete("/v1/flows/f?recursive=true").await;
    assert_eq!(
        app.get("/v1/flows/f/snapshots/s9").await.body["error"]["code"],
        "flow_not_found"
    );
    if let Some(mut r) = app.redis.clone() {
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}flow:snapshots:*", app.config.key_prefix))
            .query_async(&mut r)
            .await
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
}
all_backends!(lineage_restore_fork);

/// Numbers at the edges of f64 come back as they were sent, from every ledger: PostgreSQL's
/// jsonb prints f64::MAX as 309 digits, which serde_json's default float parser refused
/// ("number out of range", a 500 on restore; found by schemathesis).
async fn extreme_numbers_round_trip(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "n", "flow_type": "t"}))
        .await;
    let state = json!({"max": f64::MAX, "min": f64::MIN, "tiny": 5e-324, "pi": std::f64::consts::PI,
                       "big_int": 18446744073709551615_u64, "neg": -9223372036854775808_i64});
    let taken = app
        .post(
            "/v1/flows/n/snapshots",
            json!({"snapshot_id": "s", "state": state}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CREATED, "{}", taken.body);
    let restored = app
        .send(app.http.post(app.url("/v1/flows/n/snapshots/s/restore")))
        .await;
    assert_eq!(restored.status, StatusCode::OK, "{}", restored.body);
    assert_eq!(restored.body["state"]["state"], state);
    let forked = app
        .send(app.http.post(app.url("/v1/flows/n/snapshots/s/fork")))
        .await;
    assert_eq!(forked.status, StatusCode::CREATED, "{}", forked.body);
    assert_eq!(forked.body["state"]["state"], state);
}
all_backends!(extreme_numbers_round_trip);
