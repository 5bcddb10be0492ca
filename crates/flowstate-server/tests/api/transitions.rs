//! Compare-and-set transitions and their history, on every backend.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, all_backends, spawn_app};

async fn compare_and_set(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    // Warm the hot tier so the transition has a cached record to update.
    app.get("/v1/flows/f").await;

    let ok = app
        .post(
            "/v1/flows/f/transitions",
            json!({"from": "initializing", "to": "running", "metadata": {"by": "planner"}}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body["flow"]["status"], "running");
    assert_eq!(ok.body["flow"]["version"], 2);
    assert_eq!(ok.body["transition"]["id"], 2);
    assert_eq!(ok.body["transition"]["metadata"], json!({"by": "planner"}));

    let stale = app
        .post(
            "/v1/flows/f/transitions",
            json!({"from": "initializing", "to": "failed"}),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.body["error"]["code"], "stale_transition");
    assert_eq!(stale.body["current"], "running");

    app.post(
        "/v1/flows/f/transitions",
        json!({"from": "running", "to": "waiting"}),
    )
    .await;
    app.post(
        "/v1/flows/f/transitions",
        json!({"from": "waiting", "to": "completed"}),
    )
    .await;

    let flow = app.get("/v1/flows/f").await;
    assert_eq!(
        flow.body["status"], "completed",
        "reads never see a stale status"
    );
    assert_eq!(flow.body["version"], 4);

    let history = app.get("/v1/flows/f/transitions").await;
    let steps: Vec<(String, String)> = history.body["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from"].as_str().unwrap().into(),
                t["to"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("initializing", "running"),
            ("running", "waiting"),
            ("waiting", "completed")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let page = app.get("/v1/flows/f/transitions?after=2&limit=1").await;
    assert_eq!(page.body["transitions"].as_array().unwrap().len(), 1);
    assert_eq!(page.body["transitions"][0]["id"], 3);

    let none = app.get("/v1/flows/nope/transitions").await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    let missing = app
        .post(
            "/v1/flows/nope/transitions",
            json!({"from": "a", "to": "b"}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}
all_backends!(compare_and_set);

async fn concurrent_transitions_one_winner(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "race", "flow_type": "t"}))
        .await;
    let attempts = (0..24).map(|i| {
        let req = app
            .http
            .post(app.url("/v1/flows/race/transitions"))
            .json(&json!({"from": "initializing", "to": format!("worker-{i}")}));
        async move { req.send().await.expect("sent").status() }
    });
    let statuses = futures::future::join_all(attempts).await;
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let lost = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((won, lost), (1, 23), "{statuses:?}");

    let history = app.get("/v1/flows/race/transitions").await;
    assert_eq!(history.body["transitions"].as_array().unwrap().len(), 1);
    let flow = app.get("/v1/flows/race").await;
    assert_eq!(flow.body["version"], 2);
    assert_eq!(flow.body["status"], history.body["transitions"][0]["to"]);
}
all_backends!(concurrent_transitions_one_winner);
