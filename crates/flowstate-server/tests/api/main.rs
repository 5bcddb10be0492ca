//! API tests: each starts the real server on a free port and talks HTTP to it, against real
//! SQLite, PostgreSQL and Redis. One test binary, so it links once.

// A failed unwrap is a failed test, which is what a test wants.
#![allow(clippy::unwrap_used)]

mod helpers;

mod agent_cache;
mod audit;
mod backups;
mod bad_input;
mod batches;
mod checkpoints;
mod cli;
mod degraded;
mod documents;
mod events;
mod flows;
mod health_monitor;
mod hot_guards;
mod ledger_down;
mod locks;
mod memory;
mod metrics;
mod openapi;
mod redis_layout;
mod round_trips;
mod security;
mod snapshots;
mod tls;
mod transitions;
