//! `spawn_app()`: a real flowstate server per test, isolated from every other test.
//!
//! - ledger: a fresh SQLite file in a temp dir, or a fresh PostgreSQL schema
//!   (`TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`);
//! - hot tier: memory, or the shared Redis (`TEST_REDIS_URL`, default
//!   `redis://127.0.0.1:6379/0`) under a key prefix of its own, or a private `redis-server`
//!   started for the test (for tests that count commands or kill Redis).
//!
//! Logs are silent unless `TEST_LOG` is set.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::Duration;

use flowstate::Config;
use flowstate_server::Application;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

/// Which tiers a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite + in-process memory: the zero-setup default.
    Embedded,
    /// SQLite + Redis.
    RedisSqlite,
    /// PostgreSQL + Redis: production.
    RedisPostgres,
}

impl Backend {
    pub fn has_redis(self) -> bool {
        self != Backend::Embedded
    }
}

/// Runs a test body once per backend: `all_backends!(name)` expects `async fn name(Backend)`.
macro_rules! all_backends {
    ($name:ident) => {
        mod $name {
            use crate::helpers::Backend;
            #[tokio::test]
            async fn embedded() {
                super::$name(Backend::Embedded).await
            }
            #[tokio::test]
            async fn redis_sqlite() {
                super::$name(Backend::RedisSqlite).await
            }
            #[tokio::test]
            async fn redis_postgres() {
                super::$name(Backend::RedisPostgres).await
            }
        }
    };
}
pub(crate) use all_backends;

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter("info").init();
    }
});

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

pub fn postgres_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A running server and what a test needs to poke at it.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub config: Config,
    /// A connection to the Redis the server uses (when it uses one).
    pub redis: Option<redis::aio::MultiplexedConnection>,
    _tmp: tempfile::TempDir,
    _shutdown: oneshot::Sender<()>,
}

/// A server on `backend` with default settings.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// A server on `backend` after `tweak` adjusted its configuration.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    LazyLock::force(&TRACING);
    let tmp = tempfile::tempdir().expect("temp dir");
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..Config::default()
    };
    config.database.url = format!("sqlite://{}", tmp.path().join("flowstate.db").display());
    config.database.max_connections = 4;
    // The health monitor's checks would add commands and keys to what tests count; the tests
    // of the monitor turn it on.
    config.health.interval_s = 0;
    if backend.has_redis() {
        config.redis.url = Some(redis_url());
        config.key_prefix = format!("test:{unique}:");
    }
    if backend == Backend::RedisPostgres {
        config.database.url = postgres_schema(&format!("t_{unique}")).await;
    }
    tweak(&mut config);
    spawn_app_from(config, tmp).await
}

/// A server on `config`, as a new process would start on the same database and Redis.
pub async fn spawn_app_from(config: Config, tmp: tempfile::TempDir) -> TestApp {
    let app = Application::build(config.clone())
        .await
        .expect("server starts");
    let addr = app.local_addr().expect("bound");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    // The test's own connection, for looking at keys (plain `redis://` only; none when the
    // server's credentials are not in the URL, or do not work).
    let redis = match (config.redis.is_enabled(), &config.redis.url) {
        (true, Some(url)) if url.starts_with("redis://") && config.redis.password.is_none() => {
            redis::Client::open(url.as_str())
                .expect("redis url")
                .get_multiplexed_async_connection()
                .await
                .ok()
        }
        _ => None,
    };
    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        config,
        redis,
        _tmp: tmp,
        _shutdown: tx,
    }
}

/// A `flowstate serve` process of its own (the built binary), killed when dropped.
pub struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the `flowstate` binary as a process of its own on `database_url`, without Redis
/// and with `env` added, and returns it with a [`TestApp`] that talks to it over HTTP.
pub async fn spawn_process(database_url: &str, env: &[(&str, &str)]) -> (ServerProcess, TestApp) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("FLOWSTATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the flowstate binary runs");
    let process = ServerProcess(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            let mut config = Config::default();
            config.database.url = database_url.to_string();
            let app = TestApp {
                base,
                http,
                config,
                redis: None,
                _tmp: tempfile::tempdir().expect("temp dir"),
                _shutdown: oneshot::channel().0,
            };
            return (process, app);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("flowstate serve on port {port} did not become ready");
}

/// Creates a schema of its own for one test and returns a URL whose connections use it.
pub async fn postgres_schema(schema: &str) -> String {
    let admin = postgres_url();
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("test connects to postgres");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .expect("create schema");
    pool.close().await;
    let sep = if admin.contains('?') { '&' } else { '?' };
    format!("{admin}{sep}options=-c%20search_path%3D{schema}")
}

/// An HTTP answer: status and JSON body (`Value::Null` when empty).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl TestApp {
    /// Stops the server the way a crash would as far as its memory goes (nothing it holds
    /// survives), keeping its configuration and files for [`spawn_app_from`].
    pub async fn crash(self) -> (Config, tempfile::TempDir) {
        let TestApp {
            config,
            _tmp,
            _shutdown,
            ..
        } = self;
        drop(_shutdown);
        // Let the server task end and drop the service with everything it holds.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        (config, _tmp)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("non-JSON body: {}", String::from_utf8_lossy(&bytes)))
        };
        Answer {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.http.delete(self.url(path))).await
    }

    /// Registers a flow and asserts it worked.
    pub async fn register(&self, body: Value) -> Value {
        let a = self.post("/v1/flows", body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        a.body
    }

    /// The server's count of Redis round trips so far (includes the health check's own PING).
    pub async fn round_trips(&self) -> u64 {
        let h = self.get("/v1/health").await;
        h.body["redis"]["stats"]["round_trips"]
            .as_u64()
            .expect("round trip counter")
    }

    /// The Redis connection; panics on the embedded backend.
    pub fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.redis.clone().expect("test runs on redis")
    }

    /// A key as the server names it (with this test's prefix).
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.config.key_prefix)
    }
}

/// A `redis-server` of the test's own on a free port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn_redis(args: &[&str]) -> Child {
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test.sh installs it)")
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        Self::start_on(free_port()).await
    }

    /// A redis-server that speaks only TLS, with this certificate and key (PEM files).
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> RedisServer {
        let port = free_port();
        let child = spawn_redis(&[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &cert.display().to_string(),
            "--tls-key-file",
            &key.display().to_string(),
            "--tls-auth-clients",
            "no",
        ]);
        let server = RedisServer { port, child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private TLS redis-server on port {port} did not come up");
    }

    /// A fresh (empty) redis-server on `port`, e.g. after [`RedisServer::kill`].
    pub async fn start_on(port: u16) -> RedisServer {
        let child = spawn_redis(&["--port", &port.to_string()]);
        Self::ready(RedisServer { port, child }).await
    }

    /// Returns `server` once it answers PING.
    async fn ready(server: RedisServer) -> RedisServer {
        let port = server.port;
        let client = redis::Client::open(server.url()).expect("url");
        for _ in 0..100 {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis-server on port {port} did not come up");
    }

    /// A redis-server on `port` that keeps its data in `dir` (an append-only file synced on
    /// every write), so a kill and a start on the same `dir` bring back everything it held.
    pub async fn start_persistent_on(port: u16, dir: &std::path::Path) -> RedisServer {
        let dir = dir.display().to_string();
        let child = spawn_redis(&[
            "--port",
            &port.to_string(),
            "--dir",
            &dir,
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]);
        Self::ready(RedisServer { port, child }).await
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// SIGKILL: Redis is gone, with everything it held.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// SIGSTOP: Redis hangs (connections stay open, nothing answers).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: Redis answers again, with its data as before the pause.
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP forwarder the test can cut, to take a dependency "down" without touching the real
/// server (which other tests share).
pub struct TcpProxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::broadcast::Sender<()>,
}

impl TcpProxy {
    pub async fn start(target: std::net::SocketAddr) -> TcpProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::broadcast::channel::<()>(1);
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the dependency is down
                }
                let mut stop = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = stop.recv() => {}
                    }
                });
            }
        });
        TcpProxy { port, up, cut }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        let _ = self.cut.send(());
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
