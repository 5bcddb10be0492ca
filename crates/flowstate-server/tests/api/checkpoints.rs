//! LangGraph checkpoints over HTTP, on every backend: lineage, writes (kept vs replaced), the
//! latest per namespace, search by metadata, copy, prune, delete by run, and bad input. (The
//! Python client runs LangGraph's own conformance suite against the same routes.)

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, all_backends, spawn_app};

async fn put(app: &TestApp, thread: &str, id: &str, body: Value) {
    let a = app
        .send(
            app.http
                .put(app.url(&format!("/v1/threads/{thread}/checkpoints/{id}")))
                .json(&body),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
}

fn checkpoint(ns: &str, parent: Option<&str>, run: &str, step: i64) -> Value {
    json!({
        "checkpoint_ns": ns,
        "parent_checkpoint_id": parent,
        "type": "msgpack",
        "checkpoint": "AAH/",
        "metadata": {"run_id": run, "step": step, "source": "loop"},
    })
}

async fn search(app: &TestApp, body: Value) -> Vec<Value> {
    let a = app.post("/v1/checkpoints/search", body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["checkpoints"].as_array().unwrap().clone()
}

fn ids(found: &[Value]) -> Vec<&str> {
    found
        .iter()
        .map(|c| c["checkpoint_id"].as_str().unwrap())
        .collect()
}

async fn lineage_writes_search_copy_prune(backend: Backend) {
    let app = spawn_app(backend).await;
    put(&app, "t1", "c1", checkpoint("", None, "r1", 0)).await;
    put(&app, "t1", "c2", checkpoint("", Some("c1"), "r1", 1)).await;
    put(&app, "t1", "c3", checkpoint("", Some("c2"), "r2", 2)).await;
    put(&app, "t1", "s1", checkpoint("sub:x", None, "r2", 0)).await;

    // Writes: an index >= 0 is kept once, a negative one replaces.
    let writes = |value: &str| {
        json!({"checkpoint_ns": "", "task_id": "task", "task_path": "a:b", "writes": [
            {"idx": 0, "channel": "ch", "type": "msgpack", "value": value},
            {"idx": -1, "channel": "__error__", "type": "msgpack", "value": value},
        ]})
    };
    for value in ["AQ==", "Ag=="] {
        let a = app
            .send(
                app.http
                    .put(app.url("/v1/threads/t1/checkpoints/c3/writes"))
                    .json(&writes(value)),
            )
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    }
    let c3 = app.get("/v1/threads/t1/checkpoints/c3").await;
    assert_eq!(c3.status, StatusCode::OK, "{}", c3.body);
    assert_eq!(c3.body["parent_checkpoint_id"], "c2");
    assert_eq!(c3.body["checkpoint"], "AAH/");
    let pending: Vec<(i64, &str)> = c3.body["pending_writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["idx"].as_i64().unwrap(), w["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        pending,
        [(-1, "Ag=="), (0, "AQ==")],
        "by index; -1 replaced"
    );

    // The latest per namespace, newest first, before, limit, metadata filters.
    let latest = search(
        &app,
        json!({"thread_id": "t1", "checkpoint_ns": "", "limit": 1}),
    )
    .await;
    assert_eq!(ids(&latest), ["c3"]);
    let all = search(&app, json!({"thread_id": "t1"})).await;
    assert_eq!(ids(&all), ["s1", "c3", "c2", "c1"], "every namespace");
    let before = search(
        &app,
        json!({"thread_id": "t1", "checkpoint_ns": "", "before": "c3"}),
    )
    .await;
    assert_eq!(ids(&before), ["c2", "c1"]);
    let r1 = search(&app, json!({"filter": {"run_id": "r1", "step": 1}})).await;
    assert_eq!(ids(&r1), ["c2"]);
    let none = search(&app, json!({"thread_id": "t1", "filter": {"absent": null}})).await;
    assert_eq!(none.len(), 4, "a missing key counts as null");

    // Copy under the same ids, then prune the copy to its latest per namespace.
    let a = app
        .post("/v1/threads/t1/copy", json!({"target_thread_id": "t2"}))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let copied = search(&app, json!({"thread_id": "t2"})).await;
    assert_eq!(ids(&copied), ids(&all));
    assert_eq!(copied[1]["pending_writes"].as_array().unwrap().len(), 2);
    let a = app
        .post("/v1/checkpoints/prune", json!({"thread_ids": ["t2"]}))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let pruned = search(&app, json!({"thread_id": "t2"})).await;
    assert_eq!(ids(&pruned), ["s1", "c3"]);
    assert_eq!(
        pruned[1]["pending_writes"].as_array().unwrap().len(),
        2,
        "kept with its writes"
    );

    // Delete a run everywhere, then a thread.
    let a = app
        .post("/v1/checkpoints/delete-runs", json!({"run_ids": ["r2"]}))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert_eq!(ids(&search(&app, json!({})).await), ["c2", "c1"]);
    let a = app.delete("/v1/threads/t1").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert!(search(&app, json!({})).await.is_empty());
    let gone = app.get("/v1/threads/t1/checkpoints/c1").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.body["error"]["code"], "checkpoint_not_found");
}
all_backends!(lineage_writes_search_copy_prune);

/// A thread is a flow: its first checkpoint registers one (listed and watched like any),
/// a copy registers the target's; deleting the thread deletes its flow and deleting the flow
/// deletes the thread; a flow of another type under the same id is the caller's and stays.
async fn a_thread_is_a_flow(backend: Backend) {
    let app = spawn_app(backend).await;
    put(&app, "lt", "c1", checkpoint("", None, "r1", 0)).await;
    put(&app, "lt", "c2", checkpoint("", Some("c1"), "r1", 1)).await;
    let flow = app.get("/v1/flows/lt").await;
    assert_eq!(flow.status, StatusCode::OK, "{}", flow.body);
    assert_eq!(flow.body["flow_type"], "langgraph.thread");
    let listed = app.get("/v1/flows?flow_type=langgraph.thread").await;
    assert_eq!(
        listed.body["flows"].as_array().unwrap().len(),
        1,
        "{}",
        listed.body
    );

    let a = app
        .post("/v1/threads/lt/copy", json!({"target_thread_id": "lt2"}))
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert_eq!(app.get("/v1/flows/lt2").await.status, StatusCode::OK);

    let a = app.delete("/v1/threads/lt").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert_eq!(app.get("/v1/flows/lt").await.status, StatusCode::NOT_FOUND);
    // Registered again by its next first checkpoint.
    put(&app, "lt", "c9", checkpoint("", None, "r9", 0)).await;
    assert_eq!(app.get("/v1/flows/lt").await.status, StatusCode::OK);

    let a = app.delete("/v1/flows/lt2").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    assert!(search(&app, json!({"thread_id": "lt2"})).await.is_empty());

    let own = app
        .post("/v1/flows", json!({"flow_id": "own", "flow_type": "crew"}))
        .await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.body);
    put(&app, "own", "c1", checkpoint("", None, "r1", 0)).await;
    let a = app.delete("/v1/threads/own").await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
    let kept = app.get("/v1/flows/own").await;
    assert_eq!(kept.body["flow_type"], "crew", "{}", kept.body);
}
all_backends!(a_thread_is_a_flow);

async fn bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        (
            "/v1/threads/bad%20id/checkpoints/c1",
            checkpoint("", None, "r", 0),
        ),
        (
            "/v1/threads/t/checkpoints/c1",
            json!({"type": "t", "checkpoint": "%%"}),
        ),
        (
            "/v1/threads/t/checkpoints/c1",
            json!({"checkpoint": "AA=="}),
        ),
        (
            "/v1/threads/t/checkpoints/c1",
            json!({"type": "t", "checkpoint": "AA==", "checkpoint_ns": "x".repeat(1025)}),
        ),
    ];
    for (path, body) in cases {
        let a = app.send(app.http.put(app.url(path)).json(&body)).await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{path} {body}: {}",
            a.body
        );
    }
    let a = app
        .post(
            "/v1/checkpoints/prune",
            json!({"thread_ids": ["t"], "strategy": "everything"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let a = app
        .post("/v1/checkpoints/search", json!({"limit": 10_001}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(
        search(&app, json!({})).await.is_empty(),
        "nothing was stored"
    );
}
all_backends!(bad_input);
