//! Bad input gets a clear error (status + code + message) and leaves nothing behind in either
//! tier.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, all_backends, spawn_app};

/// Everything the server holds: the ledger's flows and, on Redis, every key under the prefix.
async fn snapshot(app: &TestApp) -> (Value, Vec<String>) {
    let flows = app.get("/v1/flows").await.body;
    let keys = match &app.redis {
        Some(_) => {
            let mut conn = app.redis();
            let mut keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", app.config.key_prefix))
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.sort();
            keys
        }
        None => Vec::new(),
    };
    (flows, keys)
}

fn assert_error(a: &crate::helpers::Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["error"]["code"], code, "{}", a.body);
    assert!(
        !a.body["error"]["message"].as_str().unwrap_or("").is_empty(),
        "errors carry a message: {}",
        a.body
    );
}

async fn rejected_without_side_effects(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "p", "flow_type": "t"}))
        .await;
    let before = snapshot(&app).await;

    let long = "x".repeat(129);
    for body in [
        json!({"flow_id": "a b", "flow_type": "t"}),
        json!({"flow_id": "a{b}", "flow_type": "t"}),
        json!({"flow_id": "", "flow_type": "t"}),
        json!({"flow_id": long, "flow_type": "t"}),
        json!({"flow_id": "ok", "flow_type": "bad type"}),
        json!({"flow_id": "ok", "flow_type": "t", "parent_flow_id": "no/such"}),
    ] {
        let a = app.post("/v1/flows", body.clone()).await;
        assert_error(&a, StatusCode::BAD_REQUEST, "invalid_id");
    }
    assert_error(
        &app.get("/v1/flows/a%20b").await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    );
    assert_error(
        &app.get(&format!("/v1/flows/{long}")).await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    );
    assert_error(
        &app.post(
            "/v1/flows/p/transitions",
            json!({"from": "initializing", "to": "no way"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    );

    let raw = |body: &'static str| {
        app.http
            .post(app.url("/v1/flows"))
            .header("content-type", "application/json")
            .body(body)
    };
    assert_error(
        &app.send(raw("{\"flow_type\":")).await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    assert_error(
        &app.send(raw("{}")).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_error(
        &app.send(raw("[1]")).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_error(
        &app.send(raw("{\"flow_type\":\"t\",\"metadata\":[1]}"))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_error(
        &app.send(raw("{\"flow_type\":\"t\",\"surprise\":1}")).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_error(
        &app.send(
            app.http
                .post(app.url("/v1/flows"))
                .body("{\"flow_type\":\"t\"}"),
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_error(
        &app.post("/v1/flows/p/transitions", json!({"from": "initializing"}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );

    assert_error(
        &app.post(
            "/v1/flows",
            json!({"flow_id": "orphan", "flow_type": "t", "parent_flow_id": "ghost"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "parent_not_found",
    );
    assert_error(
        &app.post("/v1/flows", json!({"flow_id": "p", "flow_type": "other"}))
            .await,
        StatusCode::CONFLICT,
        "flow_exists",
    );
    assert_error(
        &app.post(
            "/v1/flows",
            json!({"flow_id": "self", "flow_type": "t", "parent_flow_id": "self"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    assert_error(
        &app.get("/v1/flows/ghost").await,
        StatusCode::NOT_FOUND,
        "flow_not_found",
    );
    assert_error(
        &app.get("/v1/flows/ghost/children").await,
        StatusCode::NOT_FOUND,
        "flow_not_found",
    );
    assert_error(
        &app.delete("/v1/flows/ghost").await,
        StatusCode::NOT_FOUND,
        "flow_not_found",
    );

    // Over the 1 MiB default limit.
    let big =
        json!({"flow_id": "big", "flow_type": "t", "metadata": {"blob": "x".repeat(1024 * 1024)}});
    assert_error(
        &app.post("/v1/flows", big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    assert_error(
        &app.get("/v1/nothing-here").await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    );
    assert_error(
        &app.send(app.http.put(app.url("/v1/flows"))).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );

    assert_eq!(
        snapshot(&app).await,
        before,
        "no partial write in either tier"
    );
    // The one flow that exists is untouched.
    let p = app.get("/v1/flows/p").await;
    assert_eq!(
        (p.body["status"].as_str(), p.body["version"].as_i64()),
        (Some("initializing"), Some(1))
    );
}
all_backends!(rejected_without_side_effects);

async fn body_limit_is_configurable(backend: Backend) {
    let app = crate::helpers::spawn_app_with(backend, |c| c.max_body_bytes = 2048).await;
    let a = app
        .post(
            "/v1/flows",
            json!({"flow_type": "t", "metadata": {"blob": "x".repeat(4096)}}),
        )
        .await;
    assert_error(&a, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let ok = app
        .post(
            "/v1/flows",
            json!({"flow_type": "t", "metadata": {"blob": "x".repeat(512)}}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
}
all_backends!(body_limit_is_configurable);
