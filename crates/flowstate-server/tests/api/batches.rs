//! PostgreSQL runs writes that arrive together as one statement per kind. These tests force
//! batches (a row lock holds each kind's only lane while the rest queue) and check that every
//! request in a batch still gets its own answer, and that a row PostgreSQL refuses does not
//! take its batch down with it. A row lock also holds a write still while its client hangs up,
//! or while other flows' writes must get past it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};

/// Sends a request on its own task, so many can be in flight while the test goes on.
fn spawn_request(app: &TestApp, method: Method, path: &str, body: Value) -> JoinHandle<Answer> {
    let req = app.http.request(method, app.url(path)).json(&body);
    tokio::spawn(async move {
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        Answer { status, body }
    })
}

struct Answer {
    status: StatusCode,
    body: Value,
}

async fn answer(handle: JoinHandle<Answer>) -> Answer {
    handle.await.expect("request task")
}

#[tokio::test]
async fn every_request_of_a_batch_gets_its_own_answer() {
    // Four connections give each kind of write a single lane.
    let app = spawn_app_with(Backend::RedisPostgres, |c| c.database.max_connections = 4).await;
    for id in ["blocker", "a1", "a2", "a3"] {
        app.register(json!({"flow_id": id, "flow_type": "t"})).await;
    }
    let pg = sqlx::PgPool::connect(&app.config.database.url)
        .await
        .unwrap();
    let mut lock = pg.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM flows WHERE flow_id = 'blocker' FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();

    // One write of each kind waits on the lock and holds its kind's lane...
    let held = [
        spawn_request(
            &app,
            Method::PUT,
            "/v1/flows/blocker/phases/p",
            json!({"state": {"n": 0}}),
        ),
        spawn_request(
            &app,
            Method::POST,
            "/v1/flows/blocker/transitions",
            json!({"from": "initializing", "to": "running"}),
        ),
        spawn_request(
            &app,
            Method::POST,
            "/v1/flows",
            json!({"flow_id": "held-child", "flow_type": "t", "parent_flow_id": "blocker"}),
        ),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;

    // ...so these queue behind it and go out together, one statement per kind.
    let put = |flow: &str, body: Value| {
        spawn_request(
            &app,
            Method::PUT,
            &format!("/v1/flows/{flow}/phases/p"),
            body,
        )
    };
    let saved_a1 = put("a1", json!({"state": {"n": 1}}));
    let saved_a2 = put("a2", json!({"state": {"n": 2}}));
    // PostgreSQL cannot store a NUL in jsonb: this row fails the batch statement, and the
    // batch is replayed request by request.
    let unstorable = put("a3", json!({"state": {"text": "nul \u{0} inside"}}));
    let no_flow = put("ghost", json!({"state": {"n": 4}}));

    let transition = |flow: &str, from: &str, to: &str| {
        spawn_request(
            &app,
            Method::POST,
            &format!("/v1/flows/{flow}/transitions"),
            json!({"from": from, "to": to}),
        )
    };
    let moved = transition("a1", "initializing", "running");
    let stale = transition("a2", "running", "completed");
    let moved_a3 = transition("a3", "initializing", "waiting");
    let no_flow_transition = transition("ghost", "initializing", "running");

    let register = |body: Value| spawn_request(&app, Method::POST, "/v1/flows", body);
    let new_root = register(json!({"flow_id": "n1", "flow_type": "t"}));
    let new_child = register(json!({"flow_id": "n2", "flow_type": "t", "parent_flow_id": "a1"}));
    let duplicate = register(json!({"flow_id": "a3", "flow_type": "t"}));
    let orphan = register(json!({"flow_id": "n3", "flow_type": "t", "parent_flow_id": "ghost"}));
    // A parent and its child queued together: the child waits for the parent's batch, whose
    // commit its statement must see (in one statement it would not).
    let queued_parent = register(json!({"flow_id": "p1", "flow_type": "t"}));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued_child = register(json!({"flow_id": "c1", "flow_type": "t", "parent_flow_id": "p1"}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.commit().await.unwrap();

    for (handle, status) in
        held.into_iter()
            .zip([StatusCode::OK, StatusCode::OK, StatusCode::CREATED])
    {
        let a = answer(handle).await;
        assert_eq!(a.status, status, "held request: {}", a.body);
    }

    let a = answer(saved_a1).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(answer(saved_a2).await.status, StatusCode::OK);
    let a = answer(unstorable).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "invalid_input");
    let a = answer(no_flow).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.body["error"]["code"], "flow_not_found");

    let a = answer(moved).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["flow"]["version"], 2);
    let a = answer(stale).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.body["current"], "initializing");
    assert_eq!(answer(moved_a3).await.status, StatusCode::OK);
    assert_eq!(
        answer(no_flow_transition).await.status,
        StatusCode::NOT_FOUND
    );

    assert_eq!(answer(new_root).await.status, StatusCode::CREATED);
    assert_eq!(answer(new_child).await.status, StatusCode::CREATED);
    let a = answer(duplicate).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.body["error"]["code"], "flow_exists");
    let a = answer(orphan).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.body["error"]["code"], "parent_not_found");
    assert_eq!(answer(queued_parent).await.status, StatusCode::CREATED);
    let a = answer(queued_child).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);

    // What was answered is what is stored.
    assert_eq!(app.get("/v1/flows/a1").await.body["status"], "running");
    assert_eq!(app.get("/v1/flows/a2").await.body["status"], "initializing");
    assert_eq!(app.get("/v1/flows/a3").await.body["status"], "waiting");
    assert_eq!(app.get("/v1/flows/a1/phases/p").await.body["state"]["n"], 1);
    assert_eq!(
        app.get("/v1/flows/a3/phases/p").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get("/v1/flows/n2").await.body["parent_flow_id"], "a1");
    assert_eq!(app.get("/v1/flows/n3").await.status, StatusCode::NOT_FOUND);
    let history = app.get("/v1/flows/a2/transitions").await;
    assert_eq!(history.body["transitions"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_stuck_batch_does_not_hold_up_other_flows() {
    // Eight connections allow two transition statements in flight: the second opens only
    // because the first is stuck on a row lock.
    let app = spawn_app_with(Backend::RedisPostgres, |c| c.database.max_connections = 8).await;
    for id in ["locked", "free"] {
        app.register(json!({"flow_id": id, "flow_type": "t"})).await;
    }
    let pg = sqlx::PgPool::connect(&app.config.database.url)
        .await
        .unwrap();
    let mut lock = pg.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM flows WHERE flow_id = 'locked' FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let stuck = spawn_request(
        &app,
        Method::POST,
        "/v1/flows/locked/transitions",
        json!({"from": "initializing", "to": "running"}),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Answered while the lock is still held (with one lane it waits for the commit below).
    let free = tokio::time::timeout(
        Duration::from_secs(5),
        app.post(
            "/v1/flows/free/transitions",
            json!({"from": "initializing", "to": "running"}),
        ),
    )
    .await
    .expect("a transition of another flow is not held up by the locked one");
    assert_eq!(free.status, StatusCode::OK, "{}", free.body);
    assert!(!stuck.is_finished(), "the locked flow's transition waits");

    lock.commit().await.unwrap();
    let a = answer(stuck).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["flow"]["version"], 2);
}

/// Locks flow `f`'s row in PostgreSQL, sends `request` (which waits on that lock) and hangs
/// up after 300 ms; returns the lock, for the test to release.
async fn hang_up_while_flow_f_is_locked(
    app: &TestApp,
    request: reqwest::RequestBuilder,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let pg = sqlx::PgPool::connect(&app.config.database.url)
        .await
        .unwrap();
    let mut lock = pg.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM flows WHERE flow_id = 'f' FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let gave_up = request.timeout(Duration::from_millis(300)).send().await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()), "the client hung up");
    lock
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_write_still_leaves_the_cache_current() {
    let app = spawn_app(Backend::RedisPostgres).await;
    app.register(json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    // Cached: a write that committed without reaching Redis would leave this record stale.
    assert_eq!(app.get("/v1/flows/f").await.body["status"], "initializing");

    // The transition waits on a row lock while the client gives up and hangs up.
    let lock = hang_up_while_flow_f_is_locked(
        &app,
        app.http
            .post(app.url("/v1/flows/f/transitions"))
            .json(&json!({"from": "initializing", "to": "running"})),
    )
    .await;

    // The lock goes; the abandoned transition commits, and its cache write still follows.
    lock.commit().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let history = app.get("/v1/flows/f/transitions").await;
        if history.body["transitions"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the transition never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.get("/v1/flows/f").await.body["status"] != "running" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cached record stayed stale after the commit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_restore_still_gets_it_done() {
    let app = spawn_app(Backend::RedisPostgres).await;
    app.register(json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    let put = app
        .send(
            app.http
                .put(app.url("/v1/flows/f/state"))
                .json(&json!({"state": {"n": 1}})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let taken = app
        .post(
            "/v1/flows/f/snapshots",
            json!({"snapshot_id": "s0", "state": {"n": 0}}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CREATED);
    assert_eq!(
        app.get("/v1/flows/f/state").await.body["state"],
        json!({"n": 1})
    );

    // The restore waits on a row lock while the client gives up and hangs up.
    let lock = hang_up_while_flow_f_is_locked(
        &app,
        app.http.post(app.url("/v1/flows/f/snapshots/s0/restore")),
    )
    .await;

    // The lock goes; the abandoned restore commits, and the cached state follows it.
    lock.commit().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.get("/v1/flows/f/state").await.body["state"] != json!({"n": 0}) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restore was dropped with its client, or the cached state stayed stale"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn history_left_behind_by_an_outside_delete_does_not_reach_the_next_flow() {
    let app = spawn_app(Backend::RedisPostgres).await;
    app.register(json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    let moved = app
        .post(
            "/v1/flows/f/transitions",
            json!({"from": "initializing", "to": "running"}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK);
    // Deleted by hand (or by an older flowstate that relied on a cascade): history stays.
    let pg = sqlx::PgPool::connect(&app.config.database.url)
        .await
        .unwrap();
    sqlx::query("DELETE FROM flows WHERE flow_id = 'f'")
        .execute(&pg)
        .await
        .unwrap();

    app.register(json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    let history = app.get("/v1/flows/f/transitions").await;
    assert_eq!(
        history.body["transitions"],
        json!([]),
        "starts with no history"
    );
    let moved = app
        .post(
            "/v1/flows/f/transitions",
            json!({"from": "initializing", "to": "waiting"}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    let history = app.get("/v1/flows/f/transitions").await;
    assert_eq!(history.body["transitions"].as_array().unwrap().len(), 1);
    assert_eq!(history.body["transitions"][0]["to"], "waiting");
}
