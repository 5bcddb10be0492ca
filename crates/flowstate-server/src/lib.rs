//! flowstate over HTTP: the axum application around [`flowstate::Flowstate`].
//!
//! # Layout
//!
//! - [`http`]: the router; one module per resource (`flows`, `transitions`, `documents`,
//!   `snapshots`, `health`), each handler only parses, calls the library and maps errors
//!   (`http::error`, the one place where library errors become statuses), and the OpenAPI
//!   document built from the handlers ([`http::openapi`], served at `/openapi.json`).
//! - [`bench`](mod@bench): the load generator behind `flowstate bench`.
//! - [`client`]: `flowstate health` and `flowstate flows ls | show | tree`.
//!
//! The caller binds the listener and supplies the shutdown future ([`Application::build`] then
//! [`Application::run`]), so tests bind port 0 and run many servers in one process.

pub mod bench;
pub mod client;
pub mod http;

use std::future::Future;
use std::net::SocketAddr;

use flowstate::{Config, Flowstate};
use tokio::net::TcpListener;

/// A bound, ready-to-serve flowstate server.
pub struct Application {
    listener: TcpListener,
    service: Flowstate,
}

impl Application {
    /// Opens both tiers (running ledger migrations) and binds `config.listen`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // What the server will accept, not what was written: blank entries do not count.
        let open = flowstate::security::TokenSet::parse(
            config.security.api_tokens.0.iter().map(String::as_str),
        )
        .map_or(true, |tokens| tokens.is_empty());
        if open && !config.listen.ip().is_loopback() {
            if !config.security.insecure_open {
                anyhow::bail!(
                    "refusing to listen on {} without API tokens: anyone who can reach it could read and delete every flow. Set FLOWSTATE_API_TOKENS (docs/security.md), listen on 127.0.0.1, or pass --insecure-open",
                    config.listen
                );
            }
            tracing::warn!(
                addr = %config.listen,
                "INSECURE: serving WITHOUT AUTHENTICATION on a non-loopback address (--insecure-open): anyone who can reach this port can read, change and delete every flow"
            );
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let service = Flowstate::open(config).await?;
        Ok(Application { listener, service })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The service behind the server.
    pub fn service(&self) -> &Flowstate {
        &self.service
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = http::router(self.service);
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}
