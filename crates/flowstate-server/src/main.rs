//! The `flowstate` command: `serve`, `migrate`, `health`, `flows`, `bench`, `bench-fanout`.

use clap::{Parser, Subcommand};
use flowstate::{Config, Flowstate};
use flowstate_server::{Application, bench, client};
use tracing_subscriber::EnvFilter;

/// Requests allocate and free small JSON maps on every worker thread; glibc's allocator made
/// those threads queue on its arena locks (measured), mimalloc keeps per-thread heaps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// flowstate: state, cache and event layer for multi-agent AI flows.
///
/// Configuration comes from FLOWSTATE_CONFIG (a TOML file) and the environment
/// (REDIS_URL, DATABASE_URL, FLOWSTATE_LISTEN, ...); see README.md.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (embedded SQLite + memory unless REDIS_URL / DATABASE_URL are set).
    Serve {
        /// Address to listen on (overrides FLOWSTATE_LISTEN).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Serve without API tokens on a non-loopback address (logs a loud warning).
        #[arg(long)]
        insecure_open: bool,
    },
    /// Apply ledger migrations and exit.
    Migrate,
    /// Print a running server's health and active alerts; exits non-zero unless healthy.
    Health(client::HealthArgs),
    /// Back up a running server's Redis data into its ledger, list backups, restore one.
    Backup {
        #[command(flatten)]
        target: client::Target,
        #[command(subcommand)]
        command: client::BackupCommand,
    },
    /// Inspect a running server's flows.
    Flows {
        #[command(flatten)]
        target: client::Target,
        #[command(subcommand)]
        command: client::FlowsCommand,
    },
    /// Load-test a running server.
    Bench(bench::BenchArgs),
    /// Fan one flow's events out to many SSE subscribers of a running server: delivery delay
    /// and server memory per connection.
    BenchFanout(bench::fanout::FanoutArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let mut config = None;
    let mut runtime = match &cli.command {
        // The load generator shares the machine with the server it measures: one thread
        // drives hundreds of connections and leaves the other cores to the server.
        Command::Bench(args) if !args.in_process => tokio::runtime::Builder::new_current_thread(),
        Command::Health(_)
        | Command::Flows { .. }
        | Command::Backup { .. }
        | Command::BenchFanout(_) => tokio::runtime::Builder::new_current_thread(),
        Command::Serve { .. } | Command::Migrate | Command::Bench(_) => {
            let loaded = Config::load()?;
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if loaded.worker_threads > 0 {
                builder.worker_threads(loaded.worker_threads);
            }
            config = Some(loaded);
            builder
        }
    };
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(run(cli, config))
}

/// Runs `cli`; `config` is loaded already for the commands that need it.
async fn run(cli: Cli, config: Option<Config>) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            listen,
            insecure_open,
        } => {
            let mut config = config.map_or_else(Config::load, Ok)?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            config.security.insecure_open |= insecure_open;
            let hot = if config.redis.is_enabled() {
                "redis"
            } else {
                "memory"
            };
            let app = Application::build(config).await?;
            tracing::info!(addr = %app.local_addr()?, hot_tier = hot, "flowstate listening");
            app.run(shutdown_signal()).await?;
        }
        Command::Migrate => {
            Flowstate::open(config.map_or_else(Config::load, Ok)?).await?;
            println!("migrations applied");
        }
        Command::Health(args) => client::health(&args).await?,
        Command::Flows { target, command } => client::flows(&target, &command).await?,
        Command::Backup { target, command } => client::backup(&target, &command).await?,
        Command::Bench(args) => {
            bench::run(&args).await?;
        }
        Command::BenchFanout(args) => bench::fanout::run(&args).await?,
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
