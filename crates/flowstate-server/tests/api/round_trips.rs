//! One Redis round trip per operation (against six and three in the reference), counted on a
//! private redis-server: by the server's own round-trip counter and by INFO commandstats.

use std::collections::BTreeMap;

use serde_json::json;

use crate::helpers::{Backend, RedisServer, TestApp, spawn_app_with};

pub(crate) async fn commandstats(app: &TestApp) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut app.redis())
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// Runs `op` and returns (round trips it made, commandstats delta without our probes).
pub(crate) async fn measure<F: std::future::Future<Output = ()>>(
    app: &TestApp,
    op: F,
) -> (u64, BTreeMap<String, u64>) {
    let rtt0 = app.round_trips().await;
    let cs0 = commandstats(app).await;
    op.await;
    let cs1 = commandstats(app).await;
    // The second health probe PINGs once.
    let rtt = app.round_trips().await - rtt0 - 1;
    let delta = cs1
        .into_iter()
        .filter(|(k, _)| !["info", "ping", "client|setinfo", "hello"].contains(&k.as_str()))
        .map(|(k, v)| {
            let d = v - cs0.get(&k).copied().unwrap_or(0);
            (k, d)
        })
        .filter(|(_, d)| *d > 0)
        .collect();
    (rtt, delta)
}

#[tokio::test]
async fn register_transition_and_read_cost_one_round_trip() {
    register_transition_and_read(None).await;
}

/// Signing adds no command: tags travel inside the same scripts and values.
#[tokio::test]
async fn signed_values_cost_no_more_round_trips() {
    register_transition_and_read(Some("a secret key of thirty-two bytes or more")).await;
}

async fn register_transition_and_read(secret_key: Option<&str>) {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(url);
        c.security.secret_key = secret_key.map(|k| flowstate::config::Secret(k.into()));
    })
    .await;
    app.register(json!({"flow_id": "parent", "flow_type": "t"}))
        .await;

    let (rtt, cmds) = measure(&app, async {
        app.register(json!({"flow_id": "child", "flow_type": "t", "parent_flow_id": "parent", "metadata": {"a": 1}}))
            .await;
    })
    .await;
    assert_eq!(rtt, 1, "register with parent: {cmds:?}");
    // The flow record's script and FLOW_REGISTERED's, in one pipeline.
    assert_eq!(cmds.get("evalsha"), Some(&2), "{cmds:?}");
    assert_eq!(cmds.get("publish"), Some(&1), "{cmds:?}");
    assert_eq!(cmds.get("sadd"), Some(&2), "registry + hierarchy: {cmds:?}");

    let (rtt, cmds) = measure(&app, async {
        let a = app
            .post(
                "/v1/flows/child/transitions",
                json!({"from": "initializing", "to": "running"}),
            )
            .await;
        assert_eq!(a.status, 200);
    })
    .await;
    assert_eq!(rtt, 1, "transition: {cmds:?}");
    // The transition's script and STATE_TRANSITION's: the transitions and events streams.
    assert_eq!(cmds.get("evalsha"), Some(&2), "{cmds:?}");
    assert_eq!(cmds.get("xadd"), Some(&2), "{cmds:?}");
    assert_eq!(cmds.get("publish"), Some(&1), "{cmds:?}");

    let (rtt, cmds) = measure(&app, async {
        assert_eq!(app.get("/v1/flows/child").await.status, 200);
    })
    .await;
    assert_eq!(rtt, 1, "cached read: {cmds:?}");
    assert_eq!(cmds, BTreeMap::from([("hgetall".to_string(), 1)]));

    let put = app
        .http
        .put(app.url("/v1/flows/child/state"))
        .json(&json!({"state": {"step": 1}}));
    assert_eq!(app.send(put).await.status, 200);
    let (rtt, cmds) = measure(&app, async {
        let a = app.get("/v1/flows/child/state").await;
        assert_eq!(a.body["state"]["step"], 1);
    })
    .await;
    assert_eq!(rtt, 1, "cached state: {cmds:?}");
    assert_eq!(cmds, BTreeMap::from([("get".to_string(), 1)]));
}

/// After Redis loses its script cache (restart, SCRIPT FLUSH) the scripts are loaded again and
/// the write still lands.
#[tokio::test]
async fn scripts_reload_after_flush() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(Backend::RedisSqlite, |c| c.redis.url = Some(url)).await;
    app.register(json!({"flow_id": "s", "flow_type": "t"}))
        .await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut app.redis())
        .await
        .unwrap();
    app.post(
        "/v1/flows/s/transitions",
        json!({"from": "initializing", "to": "running"}),
    )
    .await;
    let status: String = redis::cmd("HGET")
        .arg(app.key("orchestrator:flow:{s}"))
        .arg("status")
        .query_async(&mut app.redis())
        .await
        .unwrap();
    assert_eq!(status, "running");
}

/// Publishing a custom event on a cached flow is one round trip (the append checks the flow
/// itself), and so is a restore, which carries its `STATE_RESTORED`; a resume is one more.
#[tokio::test]
async fn events_cost_one_round_trip() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(Backend::RedisSqlite, |c| c.redis.url = Some(url)).await;
    app.register(json!({"flow_id": "e", "flow_type": "t"}))
        .await;

    let (rtt, cmds) = measure(&app, async {
        let a = app
            .post(
                "/v1/flows/e/events",
                json!({"event_type": "X", "payload": {"a": 1}}),
            )
            .await;
        assert_eq!(a.status, 202);
    })
    .await;
    assert_eq!(rtt, 1, "post event: {cmds:?}");
    assert_eq!(cmds.get("evalsha"), Some(&1), "{cmds:?}");
    assert_eq!(cmds.get("xadd"), Some(&1), "{cmds:?}");
    assert_eq!(cmds.get("publish"), Some(&1), "{cmds:?}");

    let snap = app
        .post(
            "/v1/flows/e/snapshots",
            json!({"snapshot_id": "s", "state": {"a": 1}}),
        )
        .await;
    assert_eq!(snap.status, 201);
    let (rtt, cmds) = measure(&app, async {
        let a = app.post("/v1/flows/e/snapshots/s/restore", json!({})).await;
        assert_eq!(a.status, 200);
    })
    .await;
    assert_eq!(rtt, 1, "restore: {cmds:?}");
    assert_eq!(cmds.get("publish"), Some(&1), "{cmds:?}");
}

/// A lock's acquire and release are one round trip each (once the lock authority is read).
#[tokio::test]
async fn locks_cost_one_round_trip() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(Backend::RedisSqlite, |c| c.redis.url = Some(url)).await;
    let warm = app.post("/v1/locks/warm", json!({"ttl_ms": 1000})).await;
    assert_eq!(warm.status, 200);

    let mut token = String::new();
    let (rtt, cmds) = measure(&app, async {
        let a = app.post("/v1/locks/l", json!({"ttl_ms": 30000})).await;
        assert_eq!(a.status, 200);
        token = a.body["token"].as_str().unwrap().to_string();
    })
    .await;
    assert_eq!(rtt, 1, "acquire: {cmds:?}");
    assert_eq!(cmds.get("evalsha"), Some(&1), "{cmds:?}");
    assert_eq!(
        cmds.get("set"),
        Some(&3),
        "the lock, its fencing token and the grantor's SET NX (a no-op once written): {cmds:?}"
    );

    let (rtt, cmds) = measure(&app, async {
        let a = app
            .send(
                app.http
                    .delete(app.url("/v1/locks/l"))
                    .json(&json!({"token": token})),
            )
            .await;
        assert_eq!(a.status, 204);
    })
    .await;
    assert_eq!(rtt, 1, "release: {cmds:?}");
    assert_eq!(cmds.get("publish"), Some(&1), "waiters are woken: {cmds:?}");
}
