//! Backups on a private redis-server: every key type of the layout (with and without TTLs),
//! backed up, FLUSHALL, restored: equal types and values, TTLs within 2 s, identical stream
//! entry ids and last ids; partial restores by pattern; bad input.

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;
use reqwest::StatusCode;
use serde_json::json;

use crate::cli::cli;
use crate::helpers::{Backend, RedisServer, TestApp, spawn_app, spawn_app_with};

async fn cmd<T: redis::FromRedisValue>(conn: &mut MultiplexedConnection, args: &[&[u8]]) -> T {
    let mut c = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await.unwrap()
}

/// Every key of the test's prefix: (type, value as text, PTTL).
async fn capture(
    conn: &mut MultiplexedConnection,
    app: &TestApp,
) -> BTreeMap<String, (String, String, i64)> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(app.key("*"))
        .query_async(conn)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for key in keys {
        let k = key.as_bytes();
        let kind: String = cmd(conn, &[b"TYPE", k]).await;
        let value = match kind.as_str() {
            "string" => format!("{:?}", cmd::<Vec<u8>>(conn, &[b"GET", k]).await),
            "hash" => {
                let mut pairs: Vec<(String, String)> = cmd(conn, &[b"HGETALL", k]).await;
                pairs.sort();
                format!("{pairs:?}")
            }
            "set" => {
                let mut members: Vec<String> = cmd(conn, &[b"SMEMBERS", k]).await;
                members.sort();
                format!("{members:?}")
            }
            "list" => format!(
                "{:?}",
                cmd::<Vec<String>>(conn, &[b"LRANGE", k, b"0", b"-1"]).await
            ),
            "zset" => format!(
                "{:?}",
                cmd::<Vec<(String, f64)>>(conn, &[b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"]).await
            ),
            "stream" => {
                let entries: Vec<(String, Vec<(String, String)>)> =
                    cmd(conn, &[b"XRANGE", k, b"-", b"+"]).await;
                let info: Vec<(String, redis::Value)> = cmd(conn, &[b"XINFO", b"STREAM", k]).await;
                let last = info
                    .into_iter()
                    .find(|(f, _)| f == "last-generated-id")
                    .map(|(_, v)| redis::from_redis_value::<String>(v).unwrap());
                format!("{entries:?} last {last:?}")
            }
            other => panic!("unexpected type {other}"),
        };
        let ttl: i64 = cmd(conn, &[b"PTTL", k]).await;
        out.insert(key, (kind, value, ttl));
    }
    out
}

fn same(
    before: &BTreeMap<String, (String, String, i64)>,
    after: &BTreeMap<String, (String, String, i64)>,
) {
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (key, (kind, value, ttl)) in before {
        let (kind2, value2, ttl2) = &after[key];
        assert_eq!((kind, value), (kind2, value2), "{key}");
        if *ttl < 0 {
            assert_eq!(ttl, ttl2, "{key}: no TTL");
        } else {
            assert!((ttl - ttl2).abs() <= 2000, "{key}: TTL {ttl} then {ttl2}");
        }
    }
}

#[tokio::test]
async fn every_type_round_trips_on_sqlite() {
    every_type_round_trips(Backend::RedisSqlite).await;
}

#[tokio::test]
async fn every_type_round_trips_on_postgres() {
    every_type_round_trips(Backend::RedisPostgres).await;
}

async fn every_type_round_trips(backend: Backend) {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(backend, |c| {
        c.redis.url = Some(url);
        c.backup.keep = 2;
    })
    .await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let k = |s: &str| app.key(s).into_bytes();
    let run = |args: Vec<Vec<u8>>| {
        let mut c = redis::cmd(std::str::from_utf8(&args[0]).unwrap());
        for a in &args[1..] {
            c.arg(a.as_slice());
        }
        c
    };
    let b = |s: &str| s.as_bytes().to_vec();
    let setup = vec![
        vec![b("SET"), k("cache:flow:state:f1"), vec![0, 1, 255, b'v']],
        vec![
            b("SET"),
            k("cache:flow:state:f2"),
            b("x"),
            b("PX"),
            b("60000"),
        ],
        vec![
            b("HSET"),
            k("orchestrator:flow:{f1}"),
            b("status"),
            b("running"),
            b("version"),
            b("3"),
        ],
        vec![b("PEXPIRE"), k("orchestrator:flow:{f1}"), b("120000")],
        vec![
            b("SADD"),
            k("orchestrator:flows:registry"),
            b("f1"),
            b("f2"),
            b("f3"),
        ],
        vec![
            b("RPUSH"),
            k("orchestrator:snapshots:{f1}"),
            b("s3"),
            b("s2"),
            b("s1"),
            b("s2"),
        ],
        vec![
            b("ZADD"),
            k("agent:results:metrics:planner"),
            b("1.5"),
            b("a"),
            b("2"),
            b("b"),
        ],
        vec![b("PEXPIRE"), k("agent:results:metrics:planner"), b("90000")],
        vec![
            b("XADD"),
            k("flow:events:{f1}"),
            b("1-1"),
            b("type"),
            b("A"),
        ],
        vec![
            b("XADD"),
            k("flow:events:{f1}"),
            b("2-0"),
            b("type"),
            b("B"),
            b("n"),
            b("2"),
        ],
        vec![
            b("XADD"),
            k("flow:events:{f1}"),
            b("3-0"),
            b("type"),
            b("C"),
        ],
        vec![b("XDEL"), k("flow:events:{f1}"), b("3-0")],
        vec![b("PEXPIRE"), k("flow:events:{f1}"), b("100000")],
        vec![
            b("XADD"),
            k("flow:events:{empty}"),
            b("MAXLEN"),
            b("0"),
            b("7-0"),
            b("a"),
            b("b"),
        ],
        vec![b("SET"), k("other:not-backed-up"), b("1")],
        // Coordination, not data: never backed up or restored.
        vec![
            b("SET"),
            k("orchestrator:locks:{l}"),
            b("5.secret"),
            b("PX"),
            b("60000"),
        ],
        vec![b("SET"), k("orchestrator:locks:{l}:fence"), b("5")],
    ];
    for args in setup {
        let () = run(args).query_async(&mut conn).await.unwrap();
    }
    let mut before = capture(&mut conn, &app).await;
    for skipped in [
        "other:not-backed-up",
        "orchestrator:locks:{l}",
        "orchestrator:locks:{l}:fence",
    ] {
        before.remove(&app.key(skipped));
    }

    let created = app.post("/v1/backups", json!({"backup_id": "b1"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["status"], "complete", "{}", created.body);
    assert_eq!(created.body["keys"], 8);
    let listed = app.get("/v1/backups").await;
    assert_eq!(listed.body["backups"][0]["backup_id"], "b1");

    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let restored = app.post("/v1/backups/b1/restore", json!({})).await;
    assert_eq!(restored.status, StatusCode::OK, "{}", restored.body);
    assert_eq!(restored.body["keys"], 8);
    same(&before, &capture(&mut conn, &app).await);

    // Only what matches.
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let some = app
        .post(
            "/v1/backups/b1/restore",
            json!({"patterns": ["flow:events:*"]}),
        )
        .await;
    assert_eq!(some.body["keys"], 2, "{}", some.body);
    let now = capture(&mut conn, &app).await;
    assert_eq!(now.len(), 2);
    assert!(now.keys().all(|k| k.contains("flow:events:")));

    // Bad input.
    let a = app.post("/v1/backups/nope/restore", json!({})).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.body["error"]["code"], "backup_not_found");
    let a = app
        .post("/v1/backups", json!({"patterns": ["bad pattern"]}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let a = app
        .post("/v1/backups/b1/restore", json!({"patterns": ["x[y]"]}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let a = app.post("/v1/backups", json!({"backup_id": "b1"})).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);

    // The CLI: create (only the agent results), list, restore.
    let (ok, out, err) = cli(
        &app,
        &["backup", "create", "--pattern", "agent:results:*", "--json"],
    )
    .await;
    assert!(ok, "{out}{err}");
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (made["status"].as_str(), made["keys"].as_u64()),
        (Some("complete"), Some(0))
    );
    let (ok, out, _) = cli(&app, &["backup", "list"]).await;
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("b1") && out.contains("complete"), "{out}");
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let (ok, out, _) = cli(&app, &["backup", "restore", "b1"]).await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "restored 8 keys from b1");
    same(&before, &capture(&mut conn, &app).await);
    // keep = 2, counted per set of patterns: a third full backup leaves the newest two full
    // ones, and partial backups (the CLI's above, then two more) never push them out.
    let ids = |listed: &crate::helpers::Answer| {
        let mut ids: Vec<String> = listed.body["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["backup_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort_unstable();
        ids
    };
    for id in ["b3", "b4"] {
        let full = app.post("/v1/backups", json!({"backup_id": id})).await;
        assert_eq!(full.status, StatusCode::CREATED, "{}", full.body);
    }
    let now = ids(&app.get("/v1/backups").await);
    assert_eq!(now.len(), 3, "b3, b4 and the CLI's partial one: {now:?}");
    assert!(
        now.contains(&"b3".into()) && now.contains(&"b4".into()),
        "the oldest full one went: {now:?}"
    );
    for id in ["p1", "p2"] {
        let partial = app
            .post(
                "/v1/backups",
                json!({"backup_id": id, "patterns": ["agent:results:*"]}),
            )
            .await;
        assert_eq!(partial.status, StatusCode::CREATED, "{}", partial.body);
    }
    let now = ids(&app.get("/v1/backups").await);
    assert_eq!(now, ["b3", "b4", "p1", "p2"]);
}

#[tokio::test]
async fn embedded_has_nothing_to_back_up() {
    let app = spawn_app(Backend::Embedded).await;
    let a = app.post("/v1/backups", json!({})).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "unsupported");
}
