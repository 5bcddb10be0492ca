//! The domain model: plain types for flows, transitions, documents, snapshots, the agent result
//! cache and the journal,
//! with the rules that need no storage (id validation, limits).
//!
//! This is the bottom layer. It imports nothing from the tiers ([`crate::ledger`],
//! [`crate::hot`]) or the service ([`crate::service`]), so that both tiers can speak the same
//! types without importing each other; `tests/layers.rs` keeps it that way.

pub mod agent_cache;
pub mod backup;
pub mod checkpoints;
pub mod documents;
pub mod events;
pub mod flows;
pub mod health;
pub mod ids;
pub mod journal;
pub mod locks;
pub mod snapshots;
pub mod transitions;

use time::OffsetDateTime;

pub use documents::{DocKind, Document, Owner};
pub use flows::{DeletedFlow, Flow, FlowFilter, FlowPage, NewFlow};
pub use journal::{AuditRecord, FallbackRecord, Invalidation};
pub use snapshots::{ForkRequest, Snapshot, TakenSnapshot};
pub use transitions::{Transition, TransitionRequest};

/// Current time truncated to microseconds, the precision both ledgers store.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
        .unwrap_or(t)
}
