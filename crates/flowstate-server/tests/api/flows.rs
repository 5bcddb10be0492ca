//! The flow registry over HTTP, on every backend.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, all_backends, spawn_app};

async fn register_and_get(backend: Backend) {
    let app = spawn_app(backend).await;
    let generated = app
        .register(json!({"flow_type": "research", "metadata": {"k": [1, 2]}}))
        .await;
    let id = generated["flow_id"].as_str().unwrap();
    let uuid = uuid::Uuid::parse_str(id).expect("generated ids are UUIDs");
    assert_eq!(uuid.get_version_num(), 7);
    assert_eq!(generated["status"], "initializing");
    assert_eq!(generated["version"], 1);
    assert_eq!(generated["parent_flow_id"], json!(null));
    assert_eq!(generated["metadata"], json!({"k": [1, 2]}));

    let a = app
        .post(
            "/v1/flows",
            json!({"flow_id": "f-1", "flow_type": "research"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.headers["location"], "/v1/flows/f-1");

    // Twice: the second read is served by the hot tier and must be identical.
    for _ in 0..2 {
        let got = app.get(&format!("/v1/flows/{id}")).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, generated);
    }
}
all_backends!(register_and_get);

async fn list_filters_and_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "root", "flow_type": "orchestration"}))
        .await;
    for i in 0..5 {
        app.register(
            json!({"flow_id": format!("c{i}"), "flow_type": "research", "parent_flow_id": "root"}),
        )
        .await;
    }
    app.post(
        "/v1/flows/c0/transitions",
        json!({"from": "initializing", "to": "running"}),
    )
    .await;

    let all = app.get("/v1/flows").await;
    assert_eq!(all.body["flows"].as_array().unwrap().len(), 6);
    assert_eq!(all.body["next_cursor"], json!(null));

    let research = app.get("/v1/flows?flow_type=research").await;
    assert_eq!(research.body["flows"].as_array().unwrap().len(), 5);
    let running = app.get("/v1/flows?status=running").await;
    assert_eq!(running.body["flows"][0]["flow_id"], "c0");
    assert_eq!(running.body["flows"].as_array().unwrap().len(), 1);
    let kids = app
        .get("/v1/flows?parent_flow_id=root&status=initializing")
        .await;
    assert_eq!(kids.body["flows"].as_array().unwrap().len(), 4);

    // Paging: every flow exactly once, in registration order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/flows?limit=2&cursor={c}"),
            None => "/v1/flows?limit=2".to_string(),
        };
        let page = app.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        for f in page.body["flows"].as_array().unwrap() {
            seen.push(f["flow_id"].as_str().unwrap().to_string());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["root", "c0", "c1", "c2", "c3", "c4"]);

    for bad in [
        "limit=0",
        "limit=1001",
        "cursor=zzz",
        "limit=x",
        "colour=red",
    ] {
        let a = app.get(&format!("/v1/flows?{bad}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.body);
    }
}
all_backends!(list_filters_and_pages);

async fn children_and_delete(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "p", "flow_type": "t"}))
        .await;
    app.register(json!({"flow_id": "a", "flow_type": "t", "parent_flow_id": "p"}))
        .await;
    app.register(json!({"flow_id": "b", "flow_type": "t", "parent_flow_id": "p"}))
        .await;
    app.register(json!({"flow_id": "a1", "flow_type": "t", "parent_flow_id": "a"}))
        .await;
    app.register(json!({"flow_id": "a1x", "flow_type": "t", "parent_flow_id": "a1"}))
        .await;

    let direct = app.get("/v1/flows/p/children").await;
    assert_eq!(direct.body, json!({"children": ["a", "b"]}));
    let all = app.get("/v1/flows/p/children?recursive=true").await;
    assert_eq!(all.body, json!({"children": ["a", "b", "a1", "a1x"]}));
    let leaf = app.get("/v1/flows/a1x/children").await;
    assert_eq!(leaf.body, json!({"children": []}));

    // History to be deleted with its flows (PostgreSQL keeps it without a foreign key).
    for flow in ["b", "a1x"] {
        let moved = app
            .post(
                &format!("/v1/flows/{flow}/transitions"),
                json!({"from": "initializing", "to": "running"}),
            )
            .await;
        assert_eq!(moved.status, StatusCode::OK, "{flow}: {}", moved.body);
    }

    let refused = app.delete("/v1/flows/a").await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.body["error"]["code"], "flow_has_children");
    assert_eq!(
        app.get("/v1/flows/a").await.status,
        StatusCode::OK,
        "nothing deleted"
    );

    assert_eq!(
        app.delete("/v1/flows/b").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete("/v1/flows/a?recursive=true").await.status,
        StatusCode::NO_CONTENT
    );
    for gone in ["a", "b", "a1", "a1x"] {
        let a = app.get(&format!("/v1/flows/{gone}")).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{gone}");
        assert_eq!(a.body["error"]["code"], "flow_not_found");
    }
    assert_eq!(
        app.get("/v1/flows/p/children?recursive=true").await.body,
        json!({"children": []})
    );
    assert_eq!(
        app.get("/v1/flows/a/children").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete("/v1/flows/a").await.status,
        StatusCode::NOT_FOUND
    );

    // A deleted id can be registered again, and reads see the new flow, not the old one,
    // without the old one's history.
    let again = app
        .register(json!({"flow_id": "a", "flow_type": "second"}))
        .await;
    assert_eq!(app.get("/v1/flows/a").await.body, again);
    for (flow, parent) in [("b", "p"), ("a1", "a"), ("a1x", "a1")] {
        app.register(json!({"flow_id": flow, "flow_type": "t", "parent_flow_id": parent}))
            .await;
        let history = app.get(&format!("/v1/flows/{flow}/transitions")).await;
        assert_eq!(history.status, StatusCode::OK);
        assert_eq!(history.body["transitions"], json!([]), "{flow}");
    }
}
all_backends!(children_and_delete);

/// A burst of concurrent registrations, half of them duplicates: on SQLite they share commit
/// groups, where a rejected request must not take its neighbours down with it.
async fn concurrent_registrations(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "root", "flow_type": "t"}))
        .await;
    let attempts = (0..60).map(|i| {
        let body = match i % 3 {
            0 => json!({"flow_id": format!("f{}", i % 30), "flow_type": "t", "parent_flow_id": "root"}),
            1 => json!({"flow_id": format!("f{}", i % 30), "flow_type": "t"}),
            _ => json!({"flow_id": format!("orphan{i}"), "flow_type": "t", "parent_flow_id": "ghost"}),
        };
        let req = app.http.post(app.url("/v1/flows")).json(&body);
        async move { req.send().await.expect("sent").status() }
    });
    let statuses = futures::future::join_all(attempts).await;
    let count = |s: StatusCode| statuses.iter().filter(|x| **x == s).count();
    assert_eq!(
        count(StatusCode::NOT_FOUND),
        20,
        "orphans rejected: {statuses:?}"
    );
    // 20 distinct ids, each attempted twice: one wins, one conflicts.
    assert_eq!(count(StatusCode::CREATED), 20, "{statuses:?}");
    assert_eq!(count(StatusCode::CONFLICT), 20, "{statuses:?}");
    let listed = app.get("/v1/flows?limit=1000").await.body["flows"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        listed,
        1 + count(StatusCode::CREATED),
        "every 201 is durable, nothing else is"
    );
    for i in (0..30).filter(|i| i % 3 != 2) {
        assert_eq!(
            app.get(&format!("/v1/flows/f{i}")).await.status,
            StatusCode::OK
        );
    }
}
all_backends!(concurrent_registrations);
