//! The API contract: `/openapi.json` is an OpenAPI 3.1 document of every route the router
//! serves. Routes are only added through utoipa-axum's `routes!`, which registers a handler
//! and its description together; these tests check the two stay one.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Backend, spawn_app};

/// What the server answers `method path` with: status, and the error code if any.
async fn probe(http: &reqwest::Client, method: Method, url: &str) -> (StatusCode, Option<String>) {
    let mut req = http.request(method.clone(), url);
    if method == Method::POST || method == Method::PUT {
        req = req.json(&serde_json::json!({}));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().map(str::to_string);
    (status, code)
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = spawn_app(Backend::Embedded).await;
    let doc = app.get("/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.body["openapi"], "3.1.0");
    let paths = doc.body["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, code) = probe(&app.http, method.clone(), &app.url(&concrete)).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(code.as_deref(), Some("route_not_found"), "{method} {path}");
            assert!(!status.is_server_error(), "{method} {path}: {status}");
            operations += 1;
        }
    }
    assert!(operations >= 27, "only {operations} operations documented");
    // The probe can tell a route that does not exist.
    let (status, code) = probe(&app.http, Method::GET, &app.url("/v1/nope")).await;
    assert_eq!(
        (status, code.as_deref()),
        (StatusCode::NOT_FOUND, Some("route_not_found"))
    );
}

#[test]
fn routes_are_only_added_with_their_description() {
    let http = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    for entry in std::fs::read_dir(&http).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        for undocumented in [".route(", ".route_service(", ".nest(", ".nest_service("] {
            assert!(
                !src.contains(undocumented),
                "{} adds a route with `{undocumented}`: use `routes!` so it is documented",
                path.display()
            );
        }
    }
}

#[test]
fn every_error_response_is_described_with_its_body() {
    let doc = serde_json::to_value(flowstate_server::http::openapi()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/v1/") && path != "/v1/health" {
                assert!(responses.contains_key("500"), "{method} {path}");
                assert!(responses.contains_key("503"), "{method} {path}");
            }
            for (status, response) in responses {
                if !status.starts_with('4') && !status.starts_with('5') {
                    continue;
                }
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                // /v1/health answers 503 with its report; its auth errors are plain errors.
                let expected = if path == "/v1/health" && status == "503" {
                    "#/components/schemas/Health"
                } else {
                    "#/components/schemas/ErrorBody"
                };
                assert_eq!(schema, expected, "{method} {path} {status}");
            }
        }
    }
}
