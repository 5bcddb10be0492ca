//! flowstate: the state, cache and event layer for multi-agent AI flows.
//!
//! This crate holds all of the logic; the `flowstate-server` crate only puts HTTP in front of it,
//! so Rust code can embed [`Flowstate`] directly and get exactly what the server serves.
//!
//! # Layout
//!
//! Data lives in two tiers, each behind one narrow seam with one implementation per backend:
//!
//! - [`ledger`]: the system of record ([`ledger::Ledger`]): SQLite (embedded default) or
//!   PostgreSQL. Every write lands here first, in one transaction.
//! - [`hot`]: the cache and coordination tier ([`hot::HotTier`]): in-process memory (embedded
//!   default) or Redis 7. Reads go here first and fall through to the ledger.
//!
//! The domain modules sit above the seams and never talk to a backend directly:
//!
//! - [`flows`]: the flow registry (register, get, list, children, delete).
//! - [`transitions`]: compare-and-set status transitions and their history.
//! - [`state`], [`phases`], [`agents`]: a flow's state, phase states and per-flow agent
//!   results, all [`documents`] (named JSON objects, written and read through).
//! - [`snapshots`]: snapshots with lineage, restore and fork (time travel).
//!
//! Around them: [`config`] (one typed configuration, env + TOML), [`error`] (typed errors with
//! stable codes), [`ids`] (strict id validation), [`keys`] (the Redis key layout) and [`ttl`]
//! (TTLs with multiplier and jitter). [`Flowstate`] in [`service`] wires it all together.

pub mod agents;
pub mod config;
pub mod documents;
pub mod error;
pub mod fallbacks;
pub mod flows;
pub mod hot;
pub mod ids;
pub mod keys;
pub mod ledger;
pub mod phases;
pub mod service;
pub mod snapshots;
pub mod state;
pub mod transitions;
pub mod ttl;

pub use config::Config;
pub use documents::{DocKind, Document, Owner};
pub use error::{Error, Result};
pub use fallbacks::FallbackRecord;
pub use flows::{Flow, FlowFilter, FlowPage, NewFlow};
pub use service::{Flowstate, Health, track_degraded};
pub use snapshots::{ForkRequest, Snapshot};
pub use transitions::{Transition, TransitionRequest};
