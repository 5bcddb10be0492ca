//! Distributed locks over HTTP: owner tokens, fencing tokens, expiry, waiting, bad input, and
//! a shared counter guarded by the lock from two instances, also across a private
//! redis-server killed mid-run and restarted empty or with its data, flushed, or away.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, RedisServer, TestApp, all_backends, spawn_app, spawn_app_from, spawn_app_with,
    spawn_process,
};

async fn acquire(app: &TestApp, name: &str, body: Value) -> crate::helpers::Answer {
    app.post(&format!("/v1/locks/{name}"), body).await
}

async fn release(app: &TestApp, name: &str, token: &str) -> StatusCode {
    app.send(
        app.http
            .delete(app.url(&format!("/v1/locks/{name}")))
            .json(&json!({"token": token})),
    )
    .await
    .status
}

fn fence(body: &Value) -> u64 {
    body["fencing_token"].as_u64().unwrap()
}

/// Grant, refuse, refresh and release only with the owner token; fencing tokens grow.
async fn owner_tokens_and_fencing(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = acquire(&app, "l", json!({"ttl_ms": 30_000})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let token = first.body["token"].as_str().unwrap().to_string();
    assert!(first.body["expires_at"].is_string());

    let busy = acquire(&app, "l", json!({"ttl_ms": 30_000})).await;
    assert_eq!(busy.status, StatusCode::CONFLICT);
    assert_eq!(busy.body["error"]["code"], "lock_held");
    let retry: u64 = busy.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");

    // A token of the same shape that is not the holder's.
    let wrong = format!("{}.{}", fence(&first.body), "0".repeat(32));
    let refreshed = app
        .post(
            "/v1/locks/l/refresh",
            json!({"token": wrong, "ttl_ms": 1000}),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::CONFLICT);
    assert_eq!(refreshed.body["error"]["code"], "lock_not_held");
    assert_eq!(release(&app, "l", &wrong).await, StatusCode::CONFLICT);

    let refreshed = app
        .post(
            "/v1/locks/l/refresh",
            json!({"token": token, "ttl_ms": 60_000}),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert_eq!(
        fence(&refreshed.body),
        fence(&first.body),
        "a refresh keeps the fence"
    );

    assert_eq!(release(&app, "l", &token).await, StatusCode::NO_CONTENT);
    assert_eq!(
        release(&app, "l", &token).await,
        StatusCode::CONFLICT,
        "released once"
    );
    let second = acquire(&app, "l", json!({"ttl_ms": 1000})).await;
    assert_eq!(second.status, StatusCode::OK);
    assert!(fence(&second.body) > fence(&first.body));
    // Names are independent.
    assert_eq!(
        acquire(&app, "other", json!({"ttl_ms": 1000})).await.status,
        StatusCode::OK
    );
}
all_backends!(owner_tokens_and_fencing);

/// A lock lapses after its TTL: it can be granted again, and the old token does nothing.
async fn expiry(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = acquire(&app, "e", json!({"ttl_ms": 300})).await;
    assert_eq!(first.status, StatusCode::OK);
    let token = first.body["token"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refreshed = app
        .post(
            "/v1/locks/e/refresh",
            json!({"token": token, "ttl_ms": 1000}),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::CONFLICT, "expired");
    let second = acquire(&app, "e", json!({"ttl_ms": 1000})).await;
    assert_eq!(second.status, StatusCode::OK);
    assert!(fence(&second.body) > fence(&first.body));
    assert_eq!(release(&app, "e", &token).await, StatusCode::CONFLICT);
    // A refresh keeps a lock past its first TTL.
    let token = second.body["token"].as_str().unwrap().to_string();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = app
            .post(
                "/v1/locks/e/refresh",
                json!({"token": token, "ttl_ms": 1000}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(
        acquire(&app, "e", json!({"ttl_ms": 1000})).await.status,
        StatusCode::CONFLICT,
        "still held after 1.2 s thanks to the refreshes"
    );
}
all_backends!(expiry);

/// `wait_ms` succeeds as soon as the holder releases (long before its TTL), and times out
/// while it does not.
async fn waiting(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    let held = acquire(&app, "w", json!({"ttl_ms": 20_000})).await;
    let token = held.body["token"].as_str().unwrap().to_string();

    let timed_out = acquire(&app, "w", json!({"ttl_ms": 1000, "wait_ms": 400})).await;
    assert_eq!(timed_out.status, StatusCode::CONFLICT);
    assert_eq!(timed_out.body["error"]["code"], "lock_held");

    let releaser = {
        let (app, token) = (app.clone(), token.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(release(&app, "w", &token).await, StatusCode::NO_CONTENT);
        })
    };
    // The holder's TTL (20 s) is far beyond the wait (5 s): only the release can end it.
    let waited = acquire(&app, "w", json!({"ttl_ms": 1000, "wait_ms": 5000})).await;
    assert_eq!(waited.status, StatusCode::OK, "{}", waited.body);
    assert!(fence(&waited.body) > fence(&held.body));
    releaser.await.unwrap();
}
all_backends!(waiting);

/// A release on one instance wakes a waiter on the other through Redis pub/sub: with the
/// fallback poll at 20 s and the holder's TTL at 30 s, only the wake-up can grant within the
/// 10 s wait.
#[tokio::test]
async fn a_release_wakes_waiters_on_another_instance() {
    let redis = RedisServer::start().await;
    let [a, b] = two_instances_on(&redis, |c| {
        c.locks.max_ttl_ms = 30_000;
        c.locks.poll_max_ms = 20_000;
    })
    .await;
    let held = acquire(&a, "x", json!({"ttl_ms": 30_000})).await;
    assert_eq!(held.status, StatusCode::OK, "{}", held.body);
    let token = held.body["token"].as_str().unwrap().to_string();
    let waiter = {
        let b = b.clone();
        tokio::spawn(
            async move { acquire(&b, "x", json!({"ttl_ms": 1000, "wait_ms": 10_000})).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(release(&a, "x", &token).await, StatusCode::NO_CONTENT);
    let got = waiter.await.unwrap();
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
}

/// Many waiters on one lock do not hammer Redis: on each instance one waiter per lock asks
/// at a time, so 40 waiters on two instances polling every 100 ms at most make about as many
/// attempts as two would (10 per second each), not forty times as many.
#[tokio::test]
async fn many_waiters_ask_redis_as_few() {
    let redis = RedisServer::start().await;
    let [a, b] = two_instances_on(&redis, |c| {
        c.locks.max_ttl_ms = 30_000;
        c.locks.poll_max_ms = 100;
    })
    .await;
    let held = acquire(&a, "m", json!({"ttl_ms": 30_000})).await;
    assert_eq!(held.status, StatusCode::OK, "{}", held.body);
    let mut waiters = Vec::new();
    for i in 0..40 {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        waiters.push(tokio::spawn(async move {
            acquire(&app, "m", json!({"ttl_ms": 30_000, "wait_ms": 4000})).await
        }));
    }
    // Everyone is waiting now; count the lock attempts over two seconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = crate::round_trips::commandstats(&a).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = crate::round_trips::commandstats(&a).await;
    let attempts =
        after.get("evalsha").copied().unwrap_or(0) - before.get("evalsha").copied().unwrap_or(0);
    // Two askers at one attempt per 80-120 ms for 2 s: about 40; forty askers: about 800.
    assert!(
        attempts <= 80,
        "{attempts} lock attempts in 2 s from 40 waiters"
    );
    for w in waiters {
        assert_eq!(w.await.unwrap().status, StatusCode::CONFLICT);
    }
}

/// Bad input gets a clear error.
async fn bad_input(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.locks.max_ttl_ms = 60_000).await;
    let cases = [
        ("bad name!", json!({"ttl_ms": 1000}), "invalid_id"),
        ("n", json!({"ttl_ms": 0}), "invalid_input"),
        ("n", json!({"ttl_ms": -5}), "invalid_body"),
        ("n", json!({"ttl_ms": 60_001}), "invalid_input"),
        (
            "n",
            json!({"ttl_ms": 1000, "wait_ms": 3_600_000}),
            "invalid_input",
        ),
        ("n", json!({}), "invalid_body"),
        ("n", json!({"ttl_ms": "1000"}), "invalid_body"),
    ];
    for (name, body, code) in cases {
        let a = app
            .post(
                &format!("/v1/locks/{}", name.replace(' ', "%20")),
                body.clone(),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{name} {body}");
        assert_eq!(a.body["error"]["code"], code, "{name} {body}");
    }
    let a = app
        .post("/v1/locks/n/refresh", json!({"ttl_ms": 1000}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "missing token");
    let a = app
        .post(
            "/v1/locks/n/refresh",
            json!({"token": "nope", "ttl_ms": 1000}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["error"]["code"], "invalid_input");
    let a = app
        .send(app.http.delete(app.url("/v1/locks/n")).json(&json!({})))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "missing token");
    // Nothing was granted meanwhile.
    assert_eq!(
        acquire(&app, "n", json!({"ttl_ms": 1000})).await.status,
        StatusCode::OK
    );
}
all_backends!(bad_input);

/// What the lock guards: a counter updated by read, pause, write (a lost update if two
/// holders overlap) and the highest fencing token it has accepted.
#[derive(Default)]
struct Guarded {
    counter: AtomicU64,
    highest_fence: std::sync::Mutex<u64>,
    /// Set by a test: the next holder stays 700 ms between its read and its write.
    slow: std::sync::atomic::AtomicBool,
    /// Told when that holder has read.
    in_slow: tokio::sync::Notify,
}

/// One worker: `cycles` times acquire, update the counter, release; retries 503 and 409.
async fn worker(app: Arc<TestApp>, guarded: Arc<Guarded>, cycles: u64) {
    let mut done = 0;
    while done < cycles {
        let a = acquire(&app, "counter", json!({"ttl_ms": 2000, "wait_ms": 5000})).await;
        match a.status {
            StatusCode::OK => {}
            StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            other => panic!("acquire: {other} {}", a.body),
        }
        let f = fence(&a.body);
        {
            let mut highest = guarded.highest_fence.lock().unwrap();
            assert!(f > *highest, "fencing token {f} after {}", *highest);
            *highest = f;
        }
        let seen = guarded.counter.load(Ordering::SeqCst);
        if guarded.slow.swap(false, Ordering::SeqCst) {
            guarded.in_slow.notify_one();
            tokio::time::sleep(Duration::from_millis(700)).await;
        } else {
            tokio::task::yield_now().await;
        }
        guarded.counter.store(seen + 1, Ordering::SeqCst);
        done += 1;
        // A release that fails (Redis down) leaves the lock to lapse: still exclusive.
        release(&app, "counter", a.body["token"].as_str().unwrap()).await;
    }
}

async fn run_workers(
    apps: &[Arc<TestApp>],
    guarded: &Arc<Guarded>,
    per_worker: u64,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    for i in 0..20 {
        let app = apps[i % apps.len()].clone();
        handles.push(tokio::spawn(worker(app, guarded.clone(), per_worker)));
    }
    handles
}

/// Two instances, 20 workers, 2,000 cycles: never two holders (the counter is exact) and the
/// fencing tokens the counter sees strictly increase.
async fn shared_counter(backend: Backend) {
    let a = spawn_app_with(backend, |c| c.locks.poll_max_ms = 20).await;
    shared_counter_from(a).await;
}
all_backends!(shared_counter);

/// The ledger's leases on PostgreSQL (an in-process hot tier over a shared PostgreSQL): the
/// same guarantees, and a wrong token refreshes nothing.
#[tokio::test]
async fn shared_counter_on_postgres_leases() {
    let a = spawn_app_with(Backend::RedisPostgres, |c| {
        c.redis.enabled = Some(false);
        c.locks.poll_max_ms = 20;
    })
    .await;
    let held = acquire(&a, "pg", json!({"ttl_ms": 30_000})).await;
    assert_eq!(held.status, StatusCode::OK, "{}", held.body);
    let token = held.body["token"].as_str().unwrap().to_string();
    assert_eq!(
        acquire(&a, "pg", json!({"ttl_ms": 1000})).await.status,
        StatusCode::CONFLICT
    );
    let wrong = format!("{}.{}", fence(&held.body), "0".repeat(32));
    let r = a
        .post(
            "/v1/locks/pg/refresh",
            json!({"token": wrong, "ttl_ms": 1000}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = a
        .post(
            "/v1/locks/pg/refresh",
            json!({"token": token, "ttl_ms": 1000}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(release(&a, "pg", &token).await, StatusCode::NO_CONTENT);
    shared_counter_from(a).await;
}

/// Two `flowstate serve` processes on one SQLite file, without Redis: the ledger's leases
/// exclude across processes (SQLite's file locks, not only connections within one process),
/// 20 workers, 1,000 cycles.
#[tokio::test]
async fn shared_counter_across_two_processes_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let env = [("FLOWSTATE_LOCKS__POLL_MAX_MS", "20")];
    // One after the other: the first creates the schema.
    let (_first, a) = spawn_process(&url, &env).await;
    let (_second, b) = spawn_process(&url, &env).await;
    let apps = [Arc::new(a), Arc::new(b)];
    let guarded = Arc::new(Guarded::default());
    for h in run_workers(&apps, &guarded, 50).await {
        h.await.unwrap();
    }
    assert_eq!(guarded.counter.load(Ordering::SeqCst), 1000);
}

/// Two instances on `a`'s configuration, 20 workers, 2,000 cycles.
async fn shared_counter_from(a: TestApp) {
    let b = spawn_app_from(a.config.clone(), tempfile::tempdir().unwrap()).await;
    let apps = [Arc::new(a), Arc::new(b)];
    let guarded = Arc::new(Guarded::default());
    for h in run_workers(&apps, &guarded, 100).await {
        h.await.unwrap();
    }
    assert_eq!(guarded.counter.load(Ordering::SeqCst), 2000);
}

/// Two instances on a private redis-server and one SQLite ledger, with short Redis timeouts
/// and lock times (and `tweak`).
async fn two_instances_on(
    redis: &RedisServer,
    tweak: impl FnOnce(&mut flowstate::Config),
) -> [Arc<TestApp>; 2] {
    let url = redis.url();
    let a = spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(url);
        c.redis.command_timeout_ms = 200;
        c.redis.connect_timeout_ms = 200;
        c.redis.reconnect_max_delay_ms = 200;
        c.locks.max_ttl_ms = 2000;
        c.locks.poll_max_ms = 20;
        tweak(c);
    })
    .await;
    let b = spawn_app_from(a.config.clone(), tempfile::tempdir().unwrap()).await;
    [Arc::new(a), Arc::new(b)]
}

/// Once the counter reaches `count`, makes the next holder pause inside its critical section
/// and returns when it is there.
async fn hold_mid_update_after(guarded: &Guarded, count: u64) {
    while guarded.counter.load(Ordering::SeqCst) < count {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    guarded.slow.store(true, Ordering::SeqCst);
    guarded.in_slow.notified().await;
}

/// Two instances on a private redis-server (see [`two_instances_on`]), 20 workers, 1,200
/// cycles; once a holder is inside its critical section, `disrupt` does something to Redis
/// and answers the server to keep. The counter stays exact, fencing tokens only grow (each
/// worker checks), and the grants after it are of a new generation.
async fn shared_counter_across<F, Fut>(redis: RedisServer, disrupt: F)
where
    F: FnOnce(RedisServer) -> Fut,
    Fut: std::future::Future<Output = RedisServer>,
{
    let apps = two_instances_on(&redis, |_| {}).await;
    let guarded = Arc::new(Guarded::default());
    let handles = run_workers(&apps, &guarded, 60).await;
    hold_mid_update_after(&guarded, 300).await;
    let before = *guarded.highest_fence.lock().unwrap();
    let _redis = disrupt(redis).await;
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(guarded.counter.load(Ordering::SeqCst), 1200);
    let after = *guarded.highest_fence.lock().unwrap();
    assert!(
        after >> 32 > before >> 32,
        "a new generation after Redis lost its locks: {before} -> {after}"
    );
}

/// A private redis-server killed mid-run and restarted empty while a holder is inside its
/// critical section: locks answer 503 while it is down, and after it comes back nothing is
/// granted until every lock the lost Redis granted has lapsed (else the holder's write would
/// undo its successors').
#[tokio::test]
async fn shared_counter_across_redis_restarted_empty() {
    shared_counter_across(RedisServer::start().await, |mut redis| async move {
        let port = redis.port;
        redis.kill();
        RedisServer::start_on(port).await
    })
    .await;
}

/// Killed mid-run and restarted with everything it held (an append-only file synced on every
/// write): the restored lock keys belong to a Redis process that is gone, so the new one
/// grants nothing before the horizon.
#[tokio::test]
async fn shared_counter_across_redis_restarted_with_its_data() {
    let data = tempfile::tempdir().unwrap();
    let port = crate::helpers::free_port();
    let redis = RedisServer::start_persistent_on(port, data.path()).await;
    shared_counter_across(redis, |mut redis| async move {
        redis.kill();
        RedisServer::start_persistent_on(port, data.path()).await
    })
    .await;
}

/// Flushed (FLUSHALL, same process, same `run_id`): the lost grantor key makes it another
/// grantor, so nothing is granted before the horizon and fencing tokens do not restart.
#[tokio::test]
async fn shared_counter_across_redis_flushed() {
    shared_counter_across(RedisServer::start().await, |redis| async move {
        let mut conn = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
        redis
    })
    .await;
}

/// Redis goes away for a while: after `locks.fallback_after_ms` locks move to the ledger's
/// leases, which grant once every lock Redis granted has lapsed (its horizon), and the counter
/// keeps advancing while Redis is down; Redis comes back empty while a lease holder is inside
/// its critical section and locks return to it (the live leases copied over): exact counter, fencing tokens only growing, across both
/// switches. Both instances share the SQLite ledger, as instances of one deployment would.
#[tokio::test]
async fn shared_counter_across_a_redis_outage() {
    let mut redis = RedisServer::start().await;
    let apps = two_instances_on(&redis, |c| {
        c.locks.horizon_step_ms = 500;
        c.locks.fallback_after_ms = 300;
    })
    .await;
    let guarded = Arc::new(Guarded::default());
    let handles = run_workers(&apps, &guarded, 60).await;
    // Away while a holder is inside its critical section.
    hold_mid_update_after(&guarded, 300).await;
    let port = redis.port;
    redis.kill();
    let at_kill = guarded.counter.load(Ordering::SeqCst);
    let fence_at_kill = *guarded.highest_fence.lock().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while guarded.counter.load(Ordering::SeqCst) < at_kill + 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress on the ledger's leases while Redis is down: {} after {at_kill}",
            guarded.counter.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fence_on_ledger = *guarded.highest_fence.lock().unwrap();
    assert!(
        fence_on_ledger >> 32 > fence_at_kill >> 32,
        "the ledger grants in a later generation: {fence_at_kill} -> {fence_on_ledger}"
    );
    // Back while a lease holder is inside its critical section: its lease must be copied.
    hold_mid_update_after(&guarded, 0).await;
    let redis = RedisServer::start_on(port).await;
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(guarded.counter.load(Ordering::SeqCst), 1200);
    // Locks are back on Redis: a grant lives there.
    let app = &apps[0];
    let grant = acquire(app, "after", json!({"ttl_ms": 2000, "wait_ms": 5000})).await;
    assert_eq!(grant.status, StatusCode::OK, "{}", grant.body);
    assert!(fence(&grant.body) >> 32 > fence_on_ledger >> 32);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let held: Option<String> = redis::cmd("GET")
        .arg(app.key("orchestrator:locks:{after}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(held.as_deref(), grant.body["token"].as_str());
}
