//! Security: tokens and roles on every route, signed Redis values, sensitive flows sealed in
//! both tiers, key rotation, the loopback rule, the rate limit, JSON limits and a Redis ACL
//! user, all against the real server.

use std::collections::BTreeMap;

use flowstate::Config;
use flowstate::config::{Secret, SecretList};
use flowstate_server::Application;
use redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, RedisServer, TestApp, spawn_app_from, spawn_app_with};

const READ: &str = "reader-token-0123456789";
const WRITE: &str = "writer-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
const SECRET_KEY: &str = "an hmac key of at least thirty-two bytes";

fn tokens() -> SecretList {
    SecretList(vec![
        format!("read:{READ}"),
        format!("write:{WRITE}"),
        // The admin token configured by its digest, as an operator would.
        format!("admin:sha256:{}", sha256_hex(ADMIN)),
    ])
}

fn sha256_hex(text: &str) -> String {
    use std::fmt::Write;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes());
    digest.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn key(byte: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

async fn call(app: &TestApp, method: Method, path: &str, token: Option<&str>) -> StatusCode {
    let mut req = app.http.request(method.clone(), app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if matches!(method, Method::POST | Method::PUT) {
        req = req.json(&json!({}));
    }
    req.send().await.unwrap().status()
}

/// The role each route needs, written out: read for GETs and the checkpoint search, admin
/// for backups, the fallback log, the audit, cache invalidation and recursive deletes.
fn needed(method: &Method, template: &str) -> Option<&'static str> {
    if matches!(template, "/healthz" | "/readyz" | "/openapi.json") {
        return None;
    }
    if template.starts_with("/v1/backups")
        || matches!(template, "/v1/fallbacks" | "/v1/audit")
        || (*method == Method::DELETE && template == "/v1/agent-cache/{agent}")
    {
        return Some("admin");
    }
    if *method == Method::GET || template == "/v1/checkpoints/search" {
        return Some("read");
    }
    Some("write")
}

#[tokio::test]
async fn every_route_answers_401_and_403_by_role() {
    let app = spawn_app_with(Backend::Embedded, |c| c.security.api_tokens = tokens()).await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut routes: Vec<(Method, String, String)> = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let path = template
                .replace("{flow_id}", "f1")
                .replace("{phase}", "p1")
                .replace("{agent}", "a1")
                .replace("{snapshot_id}", "s1")
                .replace("{name}", "l1")
                .replace("{backup_id}", "b1")
                .replace("{thread_id}", "t1")
                .replace("{checkpoint_id}", "c1");
            routes.push((method, template.clone(), path));
        }
    }
    routes.push((
        Method::DELETE,
        "recursive delete".into(),
        "/v1/flows/f1?recursive=true".into(),
    ));
    assert!(routes.len() > 45, "{} routes", routes.len());
    let rank = |role: &str| ["read", "write", "admin"].iter().position(|r| *r == role);
    let mut checked = BTreeMap::new();
    for (method, template, path) in &routes {
        let need = if template == "recursive delete" {
            Some("admin")
        } else if template == "/metrics" {
            Some("read")
        } else {
            needed(method, template)
        };
        let anonymous = call(&app, method.clone(), path, None).await;
        let wrong = call(&app, method.clone(), path, Some("not-a-configured-token")).await;
        match need {
            None => {
                assert_ne!(anonymous, StatusCode::UNAUTHORIZED, "{method} {path}");
                continue;
            }
            Some(_) => {
                assert_eq!(
                    anonymous,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} without a token"
                );
                assert_eq!(
                    wrong,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} with a wrong token"
                );
            }
        }
        for (role, token) in [("read", READ), ("write", WRITE), ("admin", ADMIN)] {
            let status = call(&app, method.clone(), path, Some(token)).await;
            if rank(role) < need.and_then(rank) {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path} as {role}");
            } else {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{method} {path} as {role}: {status}"
                );
            }
        }
        checked.insert(format!("{method} {template}"), need);
    }
    // The recursive delete is admin however its query is spelled.
    for query in [
        "recursive=%74rue",
        "recur%73ive=true",
        "recursive=true&recursive=true",
    ] {
        let path = format!("/v1/flows/f1?{query}");
        let status = call(&app, Method::DELETE, &path, Some(WRITE)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{query}");
    }
    // Unauthorised answers carry the error format and the challenge.
    let a = app.get("/v1/flows").await;
    assert_eq!(a.body["error"]["code"], "unauthorized");
    assert_eq!(a.headers["www-authenticate"], "Bearer");
    let forbidden = app
        .send(app.http.get(app.url("/v1/backups")).bearer_auth(WRITE))
        .await;
    assert_eq!(forbidden.body["error"]["code"], "forbidden");
    assert!(checked.len() > 45);
}

#[tokio::test]
async fn metrics_can_be_opened() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.security.api_tokens = tokens();
        c.security.open_metrics = true;
    })
    .await;
    assert_eq!(
        call(&app, Method::GET, "/metrics", None).await,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, Method::GET, "/v1/flows", None).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn no_tokens_means_loopback_only_unless_insecure_open() {
    let mut config = Config {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..Config::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    config.database.url = format!("sqlite://{}", tmp.path().join("f.db").display());
    config.health.interval_s = 0;
    let err = Application::build(config.clone())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("refusing to listen on 0.0.0.0"),
        "{err}"
    );
    let mut insecure = config.clone();
    insecure.security.insecure_open = true;
    assert!(Application::build(insecure).await.is_ok());
    let mut with_tokens = config;
    with_tokens.security.api_tokens = tokens();
    assert!(Application::build(with_tokens).await.is_ok());
}

#[tokio::test]
async fn a_burst_beyond_the_rate_gets_429_with_retry_after_per_token() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.security.api_tokens = tokens();
        c.limits.rate_per_s = 2;
        c.limits.rate_burst = 5;
    })
    .await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..20 {
        let a = app
            .send(app.http.get(app.url("/v1/flows")).bearer_auth(READ))
            .await;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(a.body["error"]["code"], "rate_limited");
            retry_after = a.headers.get("retry-after").cloned();
        }
        statuses.push(a.status);
    }
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!((10..=15).contains(&limited), "{statuses:?}");
    let secs: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!(secs >= 1);
    // Another token has its own budget.
    let other = app
        .send(app.http.get(app.url("/v1/flows")).bearer_auth(WRITE))
        .await;
    assert_eq!(other.status, StatusCode::OK);
    // Probes are never limited.
    assert_eq!(
        call(&app, Method::GET, "/healthz", None).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn oversized_deep_and_wide_bodies_are_refused() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.max_body_bytes = 4096;
        c.limits.max_json_depth = 16;
        c.limits.max_json_items = 50;
    })
    .await;
    app.register(json!({"flow_id": "lim", "flow_type": "t"}))
        .await;
    let put = |body: Value| app.http.put(app.url("/v1/flows/lim/state")).json(&body);
    let big = app
        .send(put(json!({"state": {"text": "x".repeat(5000)}})))
        .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(big.body["error"]["code"], "payload_too_large");
    let mut deep = json!(1);
    for _ in 0..20 {
        deep = json!([deep]);
    }
    let a = app.send(put(json!({"state": {"deep": deep}}))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["error"]["code"], "json_too_deep");
    let a = app
        .send(put(json!({"state": {"wide": (0..60).collect::<Vec<_>>()}})))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["error"]["code"], "json_too_large");
    // Nothing was written by the refused requests; a fitting one is.
    assert_eq!(
        app.get("/v1/flows/lim/state").await.status,
        StatusCode::NOT_FOUND
    );
    let ok = app.send(put(json!({"state": {"fits": [1, 2, 3]}}))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
}

/// A server on a private redis-server with a secret key, and a connection to that Redis.
async fn signed_app(redis: &RedisServer) -> TestApp {
    let url = redis.url();
    spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(url);
        c.security.secret_key = Some(Secret(SECRET_KEY.into()));
    })
    .await
}

async fn unverified_count(app: &TestApp) -> f64 {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("flowstate_redis_unverified_values_total"))
        .and_then(|l| l.split_whitespace().last())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn a_value_tampered_in_redis_is_not_served_and_is_counted() {
    let redis = RedisServer::start().await;
    let app = signed_app(&redis).await;
    let mut r = app.redis();
    for id in ["victim", "other"] {
        app.register(json!({"flow_id": id, "flow_type": "t"})).await;
        let a = app
            .send(
                app.http
                    .put(app.url(&format!("/v1/flows/{id}/state")))
                    .json(&json!({"state": {"owner": id}})),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    let state_key = app.key("cache:flow:state:{victim}");
    let genuine: Vec<u8> = r.get(&state_key).await.unwrap();
    assert!(genuine[0].is_ascii_uppercase(), "signed codec");
    let before = unverified_count(&app).await;

    // 1. The payload rewritten, the old tag kept.
    let text = String::from_utf8_lossy(&genuine).replace("victim", "forged");
    let _: () = r.set(&state_key, text.as_bytes()).await.unwrap();
    let a = app.get("/v1/flows/victim/state").await;
    assert_eq!(
        a.body["state"]["owner"], "victim",
        "served from the ledger: {}",
        a.body
    );
    // 2. Another flow's genuine value moved over it.
    let other: Vec<u8> = r.get(app.key("cache:flow:state:{other}")).await.unwrap();
    let _: () = r.set(&state_key, other).await.unwrap();
    let a = app.get("/v1/flows/victim/state").await;
    assert_eq!(a.body["state"]["owner"], "victim", "{}", a.body);
    // 3. An unsigned value, as a writer without the key would store it.
    let _: () = r
        .set(&state_key, b"j00000000000000000009{\"saved_at\":\"2025-01-01T00:00:00Z\",\"body\":{\"owner\":\"forged\"}}".as_slice())
        .await
        .unwrap();
    let a = app.get("/v1/flows/victim/state").await;
    assert_eq!(a.body["state"]["owner"], "victim", "{}", a.body);
    // 4. A short value with a forged high version, which would otherwise block re-caching.
    let _: () = r
        .set(&state_key, b"J99999999999999999999".as_slice())
        .await
        .unwrap();
    let a = app.get("/v1/flows/victim/state").await;
    assert_eq!(a.body["state"]["owner"], "victim", "{}", a.body);
    let recached: Vec<u8> = r.get(&state_key).await.unwrap();
    assert!(recached.len() > 21 && recached[0] == b'J', "re-cached");
    // 5. A flow record with a forged status.
    let flow_key = app.key("orchestrator:flow:{victim}");
    let data: String = r.hget(&flow_key, "data").await.unwrap();
    let forged = data.replace("initializing", "completed");
    let _: () = r.hset(&flow_key, "data", forged).await.unwrap();
    let a = app.get("/v1/flows/victim").await;
    assert_eq!(a.body["status"], "initializing", "{}", a.body);

    // 6. A forged tombstone on a live flow: still found.
    let other_key = app.key("orchestrator:flow:{other}");
    let _: () = r.hset(&other_key, "deleted", "1").await.unwrap();
    let a = app.get("/v1/flows/other").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    let after = unverified_count(&app).await;
    assert!(after - before >= 6.0, "counted {before} -> {after}");
    // The ledger's answer repopulated Redis with a genuine value.
    let repaired: Vec<u8> = r.get(&state_key).await.unwrap();
    assert!(repaired[0].is_ascii_uppercase());
    assert!(!String::from_utf8_lossy(&repaired).contains("forged"));
}

/// Every value under the test's prefix in Redis, as raw bytes.
async fn redis_bytes(app: &TestApp) -> Vec<u8> {
    let mut r = app.redis();
    let keys: Vec<String> = r.keys(format!("{}*", app.config.key_prefix)).await.unwrap();
    let mut all = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut r)
            .await
            .unwrap();
        let value: redis::Value = match kind.as_str() {
            "string" => redis::cmd("GET")
                .arg(&key)
                .query_async(&mut r)
                .await
                .unwrap(),
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut r)
                .await
                .unwrap(),
            "stream" => redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .query_async(&mut r)
                .await
                .unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut r)
                .await
                .unwrap(),
            "set" => redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut r)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut r)
                .await
                .unwrap(),
            other => panic!("unexpected type {other}"),
        };
        if let redis::Value::BulkString(bytes) = &value {
            // Compressed values would hide their plaintext from this search.
            assert!(
                !matches!(bytes.first(), Some(b'z' | b'Z')),
                "{key} is compressed"
            );
        }
        all.extend(format!("{value:?}").into_bytes());
    }
    all
}

/// The SQLite ledger's files, raw.
fn ledger_bytes(config: &Config) -> Vec<u8> {
    let path = config
        .database
        .url
        .trim_start_matches("sqlite://")
        .to_string();
    let mut all = Vec::new();
    for suffix in ["", "-wal"] {
        if let Ok(bytes) = std::fs::read(format!("{path}{suffix}")) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_sensitive_flows_data_is_sealed_in_redis_and_in_the_ledger() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(url);
        c.security.encryption_keys = SecretList(vec![format!("k1:{}", key(1))]);
    })
    .await;
    let secret = "hunter2-plaintext";
    app.register(json!({"flow_id": "s", "flow_type": "t", "sensitive": true}))
        .await;
    app.register(json!({"flow_id": "plain", "flow_type": "t"}))
        .await;
    let put = |path: &str, body: Value| app.http.put(app.url(path)).json(&body);
    for (path, body) in [
        ("/v1/flows/s/state", json!({"state": {"password": secret}})),
        (
            "/v1/flows/s/phases/p1",
            json!({"state": {"password": secret}}),
        ),
        (
            "/v1/flows/s/agents/a1",
            json!({"results": {"password": secret}}),
        ),
        (
            "/v1/flows/plain/state",
            json!({"state": {"note": "visible-plaintext"}}),
        ),
    ] {
        let a = app.send(put(path, body.clone())).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
    }
    let snap = app
        .post(
            "/v1/flows/s/snapshots",
            json!({"snapshot_id": "s1", "state": {"password": secret}}),
        )
        .await;
    assert_eq!(snap.status, StatusCode::CREATED, "{}", snap.body);
    let ev = app
        .post(
            "/v1/flows/s/events",
            json!({"event_type": "note", "payload": {"password": secret}}),
        )
        .await;
    assert!(ev.status.is_success(), "{}", ev.body);

    // Served in the clear to the API.
    assert_eq!(
        app.get("/v1/flows/s/state").await.body["state"]["password"],
        secret
    );
    assert_eq!(
        app.get("/v1/flows/s/phases/p1").await.body["state"]["password"],
        secret
    );
    assert_eq!(
        app.get("/v1/flows/s/snapshots/s1").await.body["state"]["password"],
        secret
    );
    assert_eq!(app.get("/v1/flows/s").await.body["sensitive"], true);
    // A fork inherits sensitivity and opens its copy.
    let fork = app
        .post(
            "/v1/flows/s/snapshots/s1/fork",
            json!({"flow_id": "s-fork"}),
        )
        .await;
    assert!(fork.status.is_success(), "{}", fork.body);
    assert_eq!(app.get("/v1/flows/s-fork").await.body["sensitive"], true);
    assert_eq!(
        app.get("/v1/flows/s-fork/state").await.body["state"]["password"],
        secret
    );

    // At rest: not in Redis, not in the ledger's files; the control flow's text is.
    let in_redis = redis_bytes(&app).await;
    assert!(!contains(&in_redis, secret), "plaintext in Redis");
    assert!(contains(&in_redis, "visible-plaintext"), "the search works");
    let in_ledger = ledger_bytes(&app.config);
    assert!(!contains(&in_ledger, secret), "plaintext in the ledger");
    assert!(
        contains(&in_ledger, "visible-plaintext"),
        "the search works"
    );
    assert!(contains(&in_ledger, "$sealed"));

    // Reserved shape, and sensitive without keys.
    let a = app
        .send(put(
            "/v1/flows/plain/state",
            json!({"state": {"$sealed": "x"}}),
        ))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let keyless = spawn_app_with(Backend::Embedded, |_| {}).await;
    let a = keyless
        .post("/v1/flows", json!({"flow_type": "t", "sensitive": true}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
}

#[tokio::test]
async fn keys_rotate_old_ones_still_open_new_writes_use_the_first() {
    let app = spawn_app_with(Backend::Embedded, |c| {
        c.security.encryption_keys = SecretList(vec![format!("k1:{}", key(1))]);
    })
    .await;
    app.register(json!({"flow_id": "r", "flow_type": "t", "sensitive": true}))
        .await;
    let put = |app: &TestApp, path: &str, body: Value| app.http.put(app.url(path)).json(&body);
    app.send(put(
        &app,
        "/v1/flows/r/phases/old",
        json!({"state": {"v": "sealed-by-k1"}}),
    ))
    .await;
    let (mut config, tmp) = app.crash().await;
    config.security.encryption_keys =
        SecretList(vec![format!("k2:{}", key(2)), format!("k1:{}", key(1))]);
    let app = spawn_app_from(config.clone(), tmp).await;
    assert_eq!(
        app.get("/v1/flows/r/phases/old").await.body["state"]["v"],
        "sealed-by-k1"
    );
    app.send(put(
        &app,
        "/v1/flows/r/phases/new",
        json!({"state": {"v": "sealed-by-k2"}}),
    ))
    .await;
    assert_eq!(
        app.get("/v1/flows/r/phases/new").await.body["state"]["v"],
        "sealed-by-k2"
    );

    let pool = sqlx::SqlitePool::connect(&config.database.url)
        .await
        .unwrap();
    let kid = |name: &'static str| {
        let pool = pool.clone();
        async move {
            let body: String = sqlx::query_scalar(
                "SELECT body FROM flow_documents WHERE flow_id = 'r' AND kind = 'phase' AND name = $1",
            )
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap();
            let body: serde_json::Map<String, Value> = serde_json::from_str(&body).unwrap();
            flowstate::security::envelope::key_id_of(&body)
        }
    };
    assert_eq!(kid("old").await.as_deref(), Some("k1"));
    assert_eq!(kid("new").await.as_deref(), Some("k2"));

    // Without k1, what it sealed cannot be opened: an error, never ciphertext or a panic.
    let (mut config, tmp) = app.crash().await;
    config.security.encryption_keys = SecretList(vec![format!("k2:{}", key(2))]);
    let app = spawn_app_from(config, tmp).await;
    assert_eq!(
        app.get("/v1/flows/r/phases/old").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        app.get("/v1/flows/r/phases/new").await.body["state"]["v"],
        "sealed-by-k2"
    );

    // With no key at all, a ledger holding sensitive flows does not start: their new writes
    // would be stored in the clear.
    let (mut config, _tmp) = app.crash().await;
    config.security.encryption_keys = SecretList::default();
    let err = Application::build(config).await.err().expect("refused");
    assert!(
        err.to_string().contains("sensitive flows are registered"),
        "{err}"
    );
}

#[tokio::test]
async fn an_acl_user_works_and_its_password_is_never_shown() {
    let redis = RedisServer::start().await;
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let password = "acl-pass-7c1e5b9a";
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "flowstate",
                "on",
                &format!(">{password}"),
                "~*",
                "&*",
                "+@all",
            ][..],
        )
        .query_async(&mut admin)
        .await
        .unwrap();
    // Nobody else gets in.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "off"][..])
        .query_async(&mut admin)
        .await
        .unwrap();
    let port = redis.port;
    for via_url in [true, false] {
        let app = spawn_app_with(Backend::RedisSqlite, |c| {
            if via_url {
                c.redis.url = Some(format!("redis://flowstate:{password}@127.0.0.1:{port}/0"));
            } else {
                c.redis.url = Some(format!("redis://127.0.0.1:{port}/0"));
                c.redis.username = Some("flowstate".into());
                c.redis.password = Some(Secret(password.into()));
            }
        })
        .await;
        app.register(json!({"flow_id": "acl", "flow_type": "t"}))
            .await;
        let health = app.get("/v1/health").await;
        assert_eq!(health.body["redis"]["ok"], true, "{}", health.body);
        assert!(!health.body.to_string().contains(password));
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    // A wrong password: Redis is reported down, and the password is not in the report.
    let wrong = "wrong-pass-3f9d2c";
    let app = spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(format!("redis://flowstate:{wrong}@127.0.0.1:{port}/0"));
    })
    .await;
    let health = app.get("/v1/health").await;
    assert_eq!(health.body["redis"]["ok"], false, "{}", health.body);
    assert!(!health.body.to_string().contains(wrong), "{}", health.body);
    // Requests still succeed, from the ledger.
    app.register(json!({"flow_id": "acl2", "flow_type": "t"}))
        .await;
}

#[tokio::test]
async fn the_cli_sends_its_token() {
    let app = spawn_app_with(Backend::Embedded, |c| c.security.api_tokens = tokens()).await;
    let run = |token: Option<&'static str>, args: &'static [&'static str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowstate"));
        cmd.args(args)
            .env("FLOWSTATE_URL", &app.base)
            .env("RUST_LOG", "off")
            .env_remove("FLOWSTATE_TOKEN");
        if let Some(token) = token {
            cmd.env("FLOWSTATE_TOKEN", token);
        }
        async move { cmd.output().await.expect("the flowstate binary runs") }
    };
    let denied = run(None, &["flows", "ls"]).await;
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("unauthorized"));
    let health = run(None, &["health"]).await;
    assert!(!health.status.success());
    assert!(String::from_utf8_lossy(&health.stderr).contains("unauthorized"));
    let listed = run(Some(READ), &["flows", "ls", "--json"]).await;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let backups = run(Some(READ), &["backup", "list"]).await;
    assert!(String::from_utf8_lossy(&backups.stderr).contains("forbidden"));
    let backups = run(Some(ADMIN), &["backup", "list", "--json"]).await;
    assert!(
        backups.status.success(),
        "{}",
        String::from_utf8_lossy(&backups.stderr)
    );
}

/// Ids deleted and registered again as sensitive through another instance: the first
/// instance, which knew them as plain flows, still seals a state, a snapshot and an event
/// (one flow each, since each path learns the new registration on its own).
#[tokio::test]
async fn a_flow_registered_again_as_sensitive_elsewhere_is_sealed_here_too() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let a = spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(url);
        c.security.encryption_keys = SecretList(vec![format!("k1:{}", key(1))]);
    })
    .await;
    let b = spawn_app_from(a.config.clone(), tempfile::tempdir().unwrap()).await;
    let put_state = |app: &TestApp, id: &str, body: Value| {
        app.http
            .put(app.url(&format!("/v1/flows/{id}/state")))
            .json(&json!({ "state": body }))
    };
    for id in ["x-state", "x-snap", "x-event"] {
        a.register(json!({"flow_id": id, "flow_type": "t"})).await;
        // A learns each as a plain flow.
        let put = a.send(put_state(&a, id, json!({"n": 1}))).await;
        assert_eq!(put.status, StatusCode::OK);
        assert_eq!(
            b.delete(&format!("/v1/flows/{id}")).await.status,
            StatusCode::NO_CONTENT
        );
        b.register(json!({"flow_id": id, "flow_type": "t", "sensitive": true}))
            .await;
    }
    let secret = "registered-again-secret";
    let put = a.send(put_state(&a, "x-state", json!({"s": secret}))).await;
    assert_eq!(put.status, StatusCode::OK);
    let snap = a
        .post(
            "/v1/flows/x-snap/snapshots",
            json!({"snapshot_id": "s1", "state": {"s": secret}}),
        )
        .await;
    assert_eq!(snap.status, StatusCode::CREATED, "{}", snap.body);
    let ev = a
        .post(
            "/v1/flows/x-event/events",
            json!({"event_type": "n", "payload": {"s": secret}}),
        )
        .await;
    assert!(ev.status.is_success(), "{}", ev.body);

    assert_eq!(
        b.get("/v1/flows/x-state/state").await.body["state"]["s"],
        secret
    );
    assert_eq!(
        b.get("/v1/flows/x-snap/snapshots/s1").await.body["state"]["s"],
        secret
    );
    // Redis: the event stream entry, the snapshot and the state, as raw bytes.
    let mut r = a.redis();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(a.key("flow:events:{x-event}"))
        .arg("-")
        .arg("+")
        .query_async(&mut r)
        .await
        .unwrap();
    let payloads: Vec<&str> = entries
        .iter()
        .flat_map(|(_, fields)| {
            fields
                .iter()
                .filter(|(k, _)| k == "p")
                .map(|(_, v)| v.as_str())
        })
        .collect();
    assert!(
        payloads.iter().any(|p| p.contains("$sealed")),
        "{payloads:?}"
    );
    assert!(payloads.iter().all(|p| !p.contains(secret)), "{payloads:?}");
    for key in ["cache:flow:state:{x-state}", "flow:snapshots:{x-snap}:s1"] {
        let value: Option<Vec<u8>> = r.get(a.key(key)).await.unwrap();
        if let Some(value) = value {
            assert!(!contains(&value, secret), "{key}");
        }
    }
    // The ledger's current rows (an overwritten row may linger in the WAL until a checkpoint:
    // these are read through SQL, not from the files).
    let pool = sqlx::SqlitePool::connect(&a.config.database.url)
        .await
        .unwrap();
    let state: String =
        sqlx::query_scalar("SELECT body FROM flow_documents WHERE flow_id = 'x-state'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let snapshot: String =
        sqlx::query_scalar("SELECT state FROM flow_snapshots WHERE flow_id = 'x-snap'")
            .fetch_one(&pool)
            .await
            .unwrap();
    for (what, row) in [("state", &state), ("snapshot", &snapshot)] {
        assert!(!row.contains(secret), "{what}: {row}");
        assert!(row.contains("$sealed"), "{what}: {row}");
    }
}
