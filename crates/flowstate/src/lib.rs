//! flowstate: the state, cache and event layer for multi-agent AI flows.
//!
//! This crate holds all of the logic; the `flowstate-server` crate only puts HTTP in front of it,
//! so Rust code can embed [`Flowstate`] directly and get exactly what the server serves.
//!
//! # Layout
//!
//! Four layers, each importing only the ones below it (`tests/layers.rs` checks this):
//!
//! 1. [`model`]: plain domain types (flows, transitions, documents, snapshots, the journal) and
//!    id rules. Beside it, [`error`] (typed errors with stable codes) and [`config`] (one typed
//!    configuration: defaults, TOML, env).
//!    [`security`] sits beside the model: tokens and roles, value signing and envelopes, keys
//!    and bytes only.
//! 2. The two tiers, each one narrow trait per capability with one folder per backend and one
//!    file per capability in it; neither tier imports the other:
//!    - [`ledger`]: the system of record ([`ledger::Ledger`]): SQLite (embedded default) or
//!      PostgreSQL. Every write lands here first, in one transaction.
//!    - [`hot`]: the cache and coordination tier ([`hot::HotTier`]): in-process memory
//!      (embedded default) or Redis 7, with its key layout ([`hot::keys`]) and TTLs
//!      ([`hot::ttl`]). Reads go here first and fall through to the ledger.
//! 3. [`service`]: [`Flowstate`], the two tiers wired together with the degraded-mode rules,
//!    one file per capability (flows, transitions, documents, snapshots, health, fallbacks,
//!    invalidations).
//! 4. HTTP, in the `flowstate-server` crate.

pub mod config;
pub mod error;
pub mod hot;
pub mod ledger;
pub mod model;
pub mod security;
pub mod service;

pub use config::Config;
pub use error::{Error, Result};
pub use model::{
    DocKind, Document, FallbackRecord, Flow, FlowFilter, FlowPage, ForkRequest, NewFlow, Owner,
    Snapshot, Transition, TransitionRequest,
};
pub use service::{Delivery, Flowstate, Health, LiveEvent, Subscription, track_degraded};
