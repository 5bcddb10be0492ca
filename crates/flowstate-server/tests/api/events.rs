//! Live events over SSE, with a real HTTP SSE client: exact resume after a disconnect, a
//! reconnect racing new events, delivery across instances, the connection registry, resets
//! (trimmed history, Redis restarted empty) and the outbox while Redis is away.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, RedisServer, TcpProxy, TestApp, all_backends, spawn_app, spawn_app_from,
    spawn_app_with,
};

/// How long a test waits for a frame that should come.
const WAIT: Duration = Duration::from_secs(10);

/// One SSE frame (comments are skipped).
#[derive(Debug, Clone)]
struct Frame {
    id: Option<String>,
    event: String,
    data: Value,
}

/// A minimal SSE client over reqwest: enough to check ids, types and order.
struct Sse {
    resp: reqwest::Response,
    buf: String,
    connection_id: String,
}

impl Sse {
    async fn open(app: &TestApp, flow: &str, last_event_id: Option<&str>) -> Sse {
        let mut req = app.http.get(app.url(&format!("/v1/flows/{flow}/events")));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let connection_id = resp.headers()["x-flowstate-connection"]
            .to_str()
            .unwrap()
            .to_string();
        Sse {
            resp,
            buf: String::new(),
            connection_id,
        }
    }

    /// The next frame, or `None` if none comes within `wait` (or the stream ended).
    async fn next_within(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::from("message"), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let Some(data) = data {
                    return Some(Frame { id, event, data });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                _ => return None,
            }
        }
    }

    async fn next(&mut self) -> Frame {
        self.next_within(WAIT)
            .await
            .expect("a frame within the wait")
    }

    /// The next `n` frames.
    async fn take(&mut self, n: usize) -> Vec<Frame> {
        let mut frames = Vec::with_capacity(n);
        for _ in 0..n {
            frames.push(self.next().await);
        }
        frames
    }
}

async fn post_event(app: &TestApp, flow: &str, n: u64) -> String {
    let a = app
        .post(
            &format!("/v1/flows/{flow}/events"),
            json!({"event_type": "TICK", "payload": {"n": n}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    a.body["id"].as_str().unwrap().to_string()
}

fn ns(frames: &[Frame]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| f.data["payload"]["n"].as_u64().unwrap())
        .collect()
}

/// Ids as the stream orders them.
fn key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap();
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// Every write publishes its event, in order, with the frame's `id:` and `event:` matching
/// the JSON; `Last-Event-ID: 0` (before everything) answers with a reset and the whole
/// history; the stream ends after the flow's deletion.
async fn writes_publish_events(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "f", "flow_type": "t"}))
        .await;
    let mut live = Sse::open(&app, "f", None).await;
    app.post(
        "/v1/flows/f/transitions",
        json!({"from": "initializing", "to": "running", "metadata": {"by": "test"}}),
    )
    .await;
    let put = app
        .send(
            app.http
                .put(app.url("/v1/flows/f/state"))
                .json(&json!({"state": {"a": 1}})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let snap = app
        .post(
            "/v1/flows/f/snapshots",
            json!({"snapshot_id": "s1", "state": {"a": 1}}),
        )
        .await;
    assert_eq!(snap.status, StatusCode::CREATED, "{}", snap.body);
    assert_eq!(
        app.post("/v1/flows/f/snapshots/s1/restore", json!({}))
            .await
            .status,
        StatusCode::OK
    );
    let fork = app
        .post("/v1/flows/f/snapshots/s1/fork", json!({"flow_id": "child"}))
        .await;
    assert_eq!(fork.status, StatusCode::CREATED, "{}", fork.body);
    post_event(&app, "f", 1).await;

    let frames = live.take(4).await;
    let types: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(
        types,
        ["STATE_TRANSITION", "STATE_RESTORED", "FLOW_FORKED", "TICK"]
    );
    let t = &frames[0].data;
    assert_eq!(t["payload"]["from"], "initializing");
    assert_eq!(t["payload"]["to"], "running");
    assert_eq!(t["payload"]["metadata"]["by"], "test");
    assert_eq!(frames[1].data["payload"]["snapshot_id"], "s1");
    assert_eq!(frames[2].data["payload"]["child_flow_id"], "child");
    for f in &frames {
        assert_eq!(f.id.as_deref(), f.data["id"].as_str());
        assert_eq!(f.event, f.data["event_type"]);
        assert_eq!(f.data["flow_id"], "f");
    }
    assert!(key(frames[0].id.as_deref().unwrap()) < key(frames[3].id.as_deref().unwrap()));

    // The child's history starts with its registration.
    let mut child = Sse::open(&app, "child", Some("0")).await;
    assert_eq!(child.next().await.event, "reset");
    let registered = child.next().await;
    assert_eq!(registered.event, "FLOW_REGISTERED");
    assert_eq!(registered.data["payload"]["parent_flow_id"], "f");

    // The whole history: a reset (nothing is kept from before it), then every event.
    let mut all = Sse::open(&app, "f", Some("0-0")).await;
    let reset = all.next().await;
    assert_eq!(reset.event, "reset");
    assert!(reset.id.is_none());
    assert!(!reset.data["epoch"].as_str().unwrap().is_empty());
    let history = all.take(5).await;
    assert_eq!(history[0].event, "FLOW_REGISTERED");
    assert_eq!(
        history[1..]
            .iter()
            .map(|f| f.id.clone())
            .collect::<Vec<_>>(),
        frames.iter().map(|f| f.id.clone()).collect::<Vec<_>>()
    );

    assert_eq!(
        app.delete("/v1/flows/f?recursive=true").await.status,
        StatusCode::NO_CONTENT
    );
    let deleted = live.next().await;
    assert_eq!(deleted.event, "FLOW_DELETED");
    assert_eq!(deleted.data["payload"]["recursive"], true);
    let child_deleted = child.next().await;
    assert_eq!(child_deleted.event, "FLOW_DELETED");
    assert_eq!(child_deleted.data["payload"]["requested_for"], "f");
    assert!(
        live.next_within(Duration::from_secs(2)).await.is_none(),
        "the stream ends"
    );
    assert_eq!(
        app.get("/v1/flows/f/events").await.status,
        StatusCode::NOT_FOUND
    );
}
all_backends!(writes_publish_events);

/// A client that disconnects and reconnects with its last id gets exactly what was posted
/// meanwhile, then live events: no duplicate, no gap.
async fn resume_after_disconnect(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register(json!({"flow_id": "r", "flow_type": "t"}))
        .await;
    let mut sse = Sse::open(&app, "r", None).await;
    for n in 0..3 {
        post_event(&app, "r", n).await;
    }
    let seen = sse.take(3).await;
    assert_eq!(ns(&seen), [0, 1, 2]);
    let last = seen[2].id.clone().unwrap();
    drop(sse);
    for n in 3..8 {
        post_event(&app, "r", n).await;
    }
    let mut sse = Sse::open(&app, "r", Some(&last)).await;
    let missed = sse.take(5).await;
    assert_eq!(ns(&missed), [3, 4, 5, 6, 7]);
    post_event(&app, "r", 8).await;
    assert_eq!(ns(&[sse.next().await]), [8]);
    assert!(
        sse.next_within(Duration::from_millis(300)).await.is_none(),
        "nothing twice"
    );

    // The query parameter works as the header does.
    let resp = app
        .http
        .get(app.url(&format!("/v1/flows/r/events?last_event_id={last}")))
        .send()
        .await
        .unwrap();
    let mut q = Sse {
        resp,
        buf: String::new(),
        connection_id: String::new(),
    };
    assert_eq!(ns(&q.take(6).await), [3, 4, 5, 6, 7, 8]);
}
all_backends!(resume_after_disconnect);

/// Events keep coming while a client reconnects over and over: across all its connections it
/// sees every event exactly once, in order.
async fn reconnect_racing_new_events(backend: Backend) {
    const EVENTS: u64 = 300;
    let app = std::sync::Arc::new(spawn_app(backend).await);
    app.register(json!({"flow_id": "race", "flow_type": "t"}))
        .await;
    let mut sse = Sse::open(&app, "race", None).await;
    let poster = {
        let app = app.clone();
        tokio::spawn(async move {
            for n in 0..EVENTS {
                post_event(&app, "race", n).await;
                if n % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    let mut got: Vec<u64> = Vec::new();
    let mut last: Option<String> = None;
    let mut reconnects = 0;
    while (got.len() as u64) < EVENTS {
        // A few frames per connection, then a reconnect from the last id.
        for _ in 0..(3 + reconnects % 5) {
            let Some(frame) = sse.next_within(WAIT).await else {
                panic!("stalled after {} events", got.len());
            };
            got.push(frame.data["payload"]["n"].as_u64().unwrap());
            last = frame.id.clone();
            if got.len() as u64 == EVENTS {
                break;
            }
        }
        drop(sse);
        reconnects += 1;
        sse = Sse::open(&app, "race", last.as_deref()).await;
    }
    poster.await.unwrap();
    assert_eq!(
        got,
        (0..EVENTS).collect::<Vec<_>>(),
        "after {reconnects} reconnects"
    );
    assert!(
        sse.next_within(Duration::from_millis(300)).await.is_none(),
        "nothing twice"
    );
}
all_backends!(reconnect_racing_new_events);

/// Two instances on one Redis (and one ledger) deliver each other's events.
async fn two_instances_deliver_each_others_events(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = spawn_app_from(a.config.clone(), tempfile::tempdir().unwrap()).await;
    a.register(json!({"flow_id": "x", "flow_type": "t"})).await;
    let mut on_a = Sse::open(&a, "x", None).await;
    let mut on_b = Sse::open(&b, "x", None).await;
    post_event(&a, "x", 1).await;
    post_event(&b, "x", 2).await;
    b.post(
        "/v1/flows/x/transitions",
        json!({"from": "initializing", "to": "running"}),
    )
    .await;
    for sse in [&mut on_a, &mut on_b] {
        let frames = sse.take(3).await;
        assert_eq!(
            frames.iter().map(|f| f.event.as_str()).collect::<Vec<_>>(),
            ["TICK", "TICK", "STATE_TRANSITION"]
        );
        assert_eq!(ns(&frames[..2]), [1, 2]);
    }
    // Both connections are listed, whichever instance is asked.
    let listed = b.get("/v1/flows/x/connections").await.body;
    let mut ids: Vec<&str> = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["connection_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![on_a.connection_id.as_str(), on_b.connection_id.as_str()];
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn two_instances_deliver_each_others_events_redis_sqlite() {
    two_instances_deliver_each_others_events(Backend::RedisSqlite).await;
}

#[tokio::test]
async fn two_instances_deliver_each_others_events_redis_postgres() {
    two_instances_deliver_each_others_events(Backend::RedisPostgres).await;
}

/// Two instances posting to one flow at once give events the same ids now and then (one
/// millisecond, two generators): every event is kept and delivered, none taken for another.
async fn concurrent_posts_from_two_instances_are_all_kept(backend: Backend) {
    let a = Arc::new(spawn_app(backend).await);
    let b = Arc::new(spawn_app_from(a.config.clone(), tempfile::tempdir().unwrap()).await);
    a.register(json!({"flow_id": "c2", "flow_type": "t"})).await;
    let mut sse = Sse::open(&a, "c2", None).await;
    let mut posters = Vec::new();
    for (k, app) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        posters.push(tokio::spawn(async move {
            for n in 0..100u64 {
                post_event(&app, "c2", k as u64 * 1000 + n).await;
            }
        }));
    }
    for p in posters {
        p.await.unwrap();
    }
    let mut got: Vec<u64> = ns(&sse.take(400).await);
    got.sort_unstable();
    let want: Vec<u64> = (0..4u64)
        .flat_map(|k| (0..100).map(move |n| k * 1000 + n))
        .collect();
    assert_eq!(got, want);
    let mut all = Sse::open(&b, "c2", Some("0")).await;
    assert_eq!(all.next().await.event, "reset");
    assert_eq!(all.next().await.event, "FLOW_REGISTERED");
    let mut kept = ns(&all.take(400).await);
    kept.sort_unstable();
    assert_eq!(kept, want, "the stream holds each once");
}

#[tokio::test]
async fn concurrent_posts_from_two_instances_are_all_kept_redis_sqlite() {
    concurrent_posts_from_two_instances_are_all_kept(Backend::RedisSqlite).await;
}

/// Each open connection is registered, refreshed by the heartbeat and removed at close.
async fn connection_registry(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.events.heartbeat_s = 1;
        c.ttl.sse_connection = 4;
    })
    .await;
    app.register(json!({"flow_id": "c", "flow_type": "t"}))
        .await;
    let listed = |app: &TestApp| {
        let url = app.url("/v1/flows/c/connections");
        let http = app.http.clone();
        async move {
            let body: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            let mut ids: Vec<String> = body["connections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["connection_id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    assert!(listed(&app).await.is_empty());
    let first = Sse::open(&app, "c", None).await;
    let second = Sse::open(&app, "c", Some("0")).await;
    let mut want = vec![first.connection_id.clone(), second.connection_id.clone()];
    want.sort();
    assert_eq!(listed(&app).await, want);
    let body = app.get("/v1/flows/c/connections").await.body;
    let resumed: Vec<&Value> = body["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["resumed_from"])
        .collect();
    assert!(resumed.contains(&&json!("0-0")), "{body}");

    // Outliving the registry TTL takes heartbeats.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(listed(&app).await, want, "refreshed by the heartbeat");
    if backend.has_redis() {
        let mut r = app.redis();
        let key = app.key(&format!("sse:connections:{}", first.connection_id));
        let ttl: i64 = r.ttl(&key).await.unwrap();
        assert!((1..=4).contains(&ttl), "{ttl}");
    }

    drop(first);
    let gone = async {
        loop {
            if listed(&app).await == [second.connection_id.clone()] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(2), gone)
        .await
        .expect("a closed connection leaves the registry at once");
    if backend.has_redis() {
        let mut r = app.redis();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(app.key("sse:connections:*"))
            .query_async(&mut r)
            .await
            .unwrap();
        assert_eq!(
            keys.len(),
            2,
            "one connection and the flow's listing: {keys:?}"
        );
    }
}
all_backends!(connection_registry);

/// A client resuming from before the kept history (trimmed past `events.maxlen`) gets a
/// reset carrying the epoch, then every event kept; the epoch is the stream's, unchanged by
/// trimming.
async fn reset_after_trim(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.events.maxlen = 10).await;
    app.register(json!({"flow_id": "t", "flow_type": "t"}))
        .await;
    let first = post_event(&app, "t", 0).await;
    // Redis trims whole stream nodes (100 entries): go well past one.
    for n in 1..=250 {
        post_event(&app, "t", n).await;
    }
    let mut sse = Sse::open(&app, "t", Some(&first)).await;
    let reset = sse.next().await;
    assert_eq!(reset.event, "reset");
    let epoch = reset.data["epoch"].as_str().unwrap().to_string();
    let mut kept = Vec::new();
    while let Some(frame) = sse.next_within(Duration::from_millis(500)).await {
        kept.push(frame.data["payload"]["n"].as_u64().unwrap());
    }
    assert!(kept.len() >= 10 && kept.len() < 250, "{}", kept.len());
    assert_eq!(*kept.last().unwrap(), 250);
    assert!(
        kept.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, no gap"
    );
    // The same epoch on another reset: trimming does not start a new one.
    let mut again = Sse::open(&app, "t", Some("1")).await;
    assert_eq!(again.next().await.data["epoch"], epoch.as_str());
    // A resume inside the kept history is exact.
    let inside = post_event(&app, "t", 251).await;
    post_event(&app, "t", 252).await;
    let mut exact = Sse::open(&app, "t", Some(&inside)).await;
    let next = exact.next().await;
    assert_eq!(next.event, "TICK");
    assert_eq!(next.data["payload"]["n"], 252);
}
all_backends!(reset_after_trim);

async fn app_on(redis_url: String) -> TestApp {
    spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(redis_url);
        c.redis.command_timeout_ms = 200;
        c.redis.connect_timeout_ms = 200;
        c.redis.reconnect_max_delay_ms = 200;
        c.events.heartbeat_s = 1;
    })
    .await
}

async fn wait_until_redis_serves(app: &TestApp) {
    let serving = async {
        loop {
            let h = app.get("/v1/health").await;
            if h.body["status"] == "healthy" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(15), serving)
        .await
        .expect("redis serves again");
}

/// Redis restarted empty: a client resuming from the old history gets a reset with a new
/// epoch; one connected throughout is told too (its subscription was re-established).
#[tokio::test]
async fn reset_after_redis_restarts_empty() {
    let mut redis = RedisServer::start().await;
    let app = app_on(redis.url()).await;
    app.register(json!({"flow_id": "e", "flow_type": "t"}))
        .await;
    let mut connected = Sse::open(&app, "e", None).await;
    let last = post_event(&app, "e", 1).await;
    assert_eq!(ns(&[connected.next().await]), [1]);
    let mut probe = Sse::open(&app, "e", Some("1")).await;
    let old_epoch = probe.next().await.data["epoch"].clone();
    drop(probe);

    let port = redis.port;
    redis.kill();
    let _redis = RedisServer::start_on(port).await;
    wait_until_redis_serves(&app).await;
    post_event(&app, "e", 2).await;

    let mut resumed = Sse::open(&app, "e", Some(&last)).await;
    let reset = resumed.next().await;
    assert_eq!(reset.event, "reset");
    assert_ne!(reset.data["epoch"], old_epoch, "a new epoch");
    assert_eq!(ns(&[resumed.next().await]), [2]);

    // The connection that stayed open: a reset (its history is gone) and the new event, once.
    let mut seen = Vec::new();
    while let Some(frame) = connected.next_within(Duration::from_secs(3)).await {
        seen.push(frame.event.clone());
    }
    assert_eq!(seen, ["reset", "TICK"], "{seen:?}");

    // The heartbeat registers the open connection again in the emptied Redis.
    let listed = app.get("/v1/flows/e/connections").await.body;
    let ids: Vec<&str> = listed["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["connection_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&connected.connection_id.as_str()), "{listed}");
}

/// Redis unreachable (its data kept): events posted meanwhile go to the outbox and reach the
/// posting instance's subscribers at once; when Redis is back they are replayed under the same
/// ids, so subscribers everywhere get each once, in order, and a client resuming later misses
/// nothing. The posting instance dies before Redis returns: the other replays its outbox.
#[tokio::test]
async fn outbox_replays_events_posted_while_redis_was_away() {
    let redis = RedisServer::start().await;
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    let a = app_on(format!("redis://127.0.0.1:{}/0", proxy.port)).await;
    let b = spawn_app_from(a.config.clone(), tempfile::tempdir().unwrap()).await;
    a.register(json!({"flow_id": "o", "flow_type": "t"})).await;
    let mut on_a = Sse::open(&a, "o", None).await;
    let mut on_b = Sse::open(&b, "o", None).await;
    let before = post_event(&a, "o", 0).await;
    assert_eq!(ns(&[on_a.next().await]), [0]);
    assert_eq!(ns(&[on_b.next().await]), [0]);

    proxy.cut();
    let mut outage_ids = Vec::new();
    for n in 1..=5 {
        outage_ids.push(post_event(&a, "o", n).await);
    }
    // The posting instance's subscribers get them now.
    let local = on_a.take(5).await;
    assert_eq!(ns(&local), [1, 2, 3, 4, 5]);
    assert_eq!(
        local
            .iter()
            .map(|f| f.id.clone().unwrap())
            .collect::<Vec<_>>(),
        outage_ids
    );
    drop(on_a);
    // A dies with its outbox in the ledger.
    let (_config, _tmp) = a.crash().await;

    proxy.restore();
    wait_until_redis_serves(&b).await;
    let replayed = on_b.take(5).await;
    assert_eq!(ns(&replayed), [1, 2, 3, 4, 5], "once, in order, no reset");
    assert_eq!(
        replayed
            .iter()
            .map(|f| f.id.clone().unwrap())
            .collect::<Vec<_>>(),
        outage_ids,
        "under the ids first given"
    );
    post_event(&b, "o", 6).await;
    assert_eq!(ns(&[on_b.next().await]), [6]);
    assert!(on_b.next_within(Duration::from_millis(500)).await.is_none());

    // A client resuming from before the outage misses nothing either.
    let mut late = Sse::open(&b, "o", Some(&before)).await;
    assert_eq!(ns(&late.take(6).await), [1, 2, 3, 4, 5, 6]);
}

/// Redis killed and restarted empty: events posted meanwhile reach the posting instance's
/// subscribers at once and, replayed from the outbox, the other instance's after a reset (the
/// history before the outage is gone), each once and in order; the subscriber that got them
/// locally is neither reset nor served them twice.
#[tokio::test]
async fn outbox_replay_after_redis_restarts_empty() {
    let mut redis = RedisServer::start().await;
    let a = app_on(redis.url()).await;
    let b = spawn_app_from(a.config.clone(), tempfile::tempdir().unwrap()).await;
    a.register(json!({"flow_id": "k", "flow_type": "t"})).await;
    let mut on_a = Sse::open(&a, "k", None).await;
    let mut on_b = Sse::open(&b, "k", None).await;
    post_event(&a, "k", 0).await;
    assert_eq!(ns(&[on_a.next().await]), [0]);
    assert_eq!(ns(&[on_b.next().await]), [0]);

    let port = redis.port;
    redis.kill();
    for n in 1..=5 {
        post_event(&a, "k", n).await;
    }
    assert_eq!(ns(&on_a.take(5).await), [1, 2, 3, 4, 5]);
    let _redis = RedisServer::start_on(port).await;
    wait_until_redis_serves(&a).await;

    let reset = on_b.next().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(ns(&on_b.take(5).await), [1, 2, 3, 4, 5]);
    assert!(
        on_a.next_within(Duration::from_secs(3)).await.is_none(),
        "nothing again on the instance that delivered them"
    );
    post_event(&b, "k", 6).await;
    assert_eq!(ns(&[on_a.next().await]), [6]);
    assert_eq!(ns(&[on_b.next().await]), [6]);
}

/// A client that connects without `Last-Event-ID` while Redis is away starts "now": the events
/// published after it connected (here by another instance, through its outbox) reach it once
/// Redis is back, without a reset.
#[tokio::test]
async fn fresh_subscriber_during_an_outage_misses_nothing_after_it() {
    let redis = RedisServer::start().await;
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    let a = app_on(format!("redis://127.0.0.1:{}/0", proxy.port)).await;
    let b = spawn_app_from(a.config.clone(), tempfile::tempdir().unwrap()).await;
    a.register(json!({"flow_id": "f", "flow_type": "t"})).await;
    post_event(&a, "f", 0).await;

    proxy.cut();
    let mut fresh = Sse::open(&b, "f", None).await;
    for n in 1..=3 {
        post_event(&a, "f", n).await;
    }
    proxy.restore();
    wait_until_redis_serves(&a).await;
    let frames = fresh.take(3).await;
    assert_eq!(
        frames.iter().map(|f| f.event.as_str()).collect::<Vec<_>>(),
        ["TICK", "TICK", "TICK"],
        "no reset"
    );
    assert_eq!(ns(&frames), [1, 2, 3]);
    assert!(
        fresh
            .next_within(Duration::from_millis(500))
            .await
            .is_none()
    );
}

/// Bad input gets a clear error.
async fn bad_input(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.events.max_event_bytes = 1024).await;
    app.register(json!({"flow_id": "b", "flow_type": "t"}))
        .await;
    for path in ["/v1/flows/nope/events", "/v1/flows/nope/connections"] {
        let a = app.get(path).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(a.body["error"]["code"], "flow_not_found");
    }
    let a = app
        .post("/v1/flows/nope/events", json!({"event_type": "X"}))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    for bad in ["abc", "1-", "-1", "1-2-3", "99999999999999999999999"] {
        let a = app
            .send(
                app.http
                    .get(app.url("/v1/flows/b/events"))
                    .header("Last-Event-ID", bad),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(a.body["error"]["code"], "invalid_input", "{bad}");
        let a = app
            .get(&format!("/v1/flows/b/events?last_event_id={bad}"))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let big = "x".repeat(2000);
    let a = app
        .post(
            "/v1/flows/b/events",
            json!({"event_type": "X", "payload": {"big": big}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.body["error"]["code"], "payload_too_large");
    let a = app.post("/v1/flows/b/events", json!({"payload": {}})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["error"]["code"], "invalid_body");
    let a = app
        .post("/v1/flows/b/events", json!({"event_type": "bad type!"}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["error"]["code"], "invalid_id");
    for reserved in ["FLOW_DELETED", "STATE_TRANSITION", "reset"] {
        let a = app
            .post("/v1/flows/b/events", json!({"event_type": reserved}))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{reserved}");
        assert_eq!(a.body["error"]["code"], "invalid_input");
    }
    // Nothing of it was published.
    let mut sse = Sse::open(&app, "b", Some("0")).await;
    assert_eq!(sse.next().await.event, "reset");
    assert_eq!(sse.next().await.event, "FLOW_REGISTERED");
    assert!(sse.next_within(Duration::from_millis(300)).await.is_none());
}
all_backends!(bad_input);

/// With a secret key, a forged entry (bad tag) and a broken one (no payload) written into a
/// flow's stream are skipped on resume: the events around them still arrive, nothing stalls.
#[tokio::test]
async fn forged_and_broken_entries_are_skipped_on_resume() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(Backend::RedisSqlite, |c| {
        c.redis.url = Some(url);
        c.security.secret_key = Some(flowstate::config::Secret(
            "a secret key of thirty-two bytes or more".into(),
        ));
    })
    .await;
    app.register(json!({"flow_id": "g", "flow_type": "t"}))
        .await;
    let first = post_event(&app, "g", 0).await;
    post_event(&app, "g", 1).await;
    let stream = app.key("flow:events:{g}");
    let mut r = app.redis();
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg(&["t", "TICK", "p", r#"{"n":99}"#, "s", "00"][..])
        .query_async(&mut r)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg(&["t", "TICK"][..])
        .query_async(&mut r)
        .await
        .unwrap();
    post_event(&app, "g", 2).await;
    let mut sse = Sse::open(&app, "g", Some(&first)).await;
    assert_eq!(ns(&sse.take(2).await), [1, 2]);
    assert!(
        sse.next_within(Duration::from_millis(300)).await.is_none(),
        "nothing forged"
    );
}
