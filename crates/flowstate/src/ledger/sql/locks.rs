//! SQL both ledgers share for locks: the authority row's columns and how it is read.

use crate::model::locks::{LockAuthority, LockMode};

/// The authority row's columns, in the order [`authority`] takes them.
pub(in crate::ledger) const AUTHORITY_COLUMNS: &str =
    "generation, mode, run_id, grant_from_ms, horizon_ms";

/// The authority row's stored form.
pub(in crate::ledger) type AuthorityRow = (i64, String, Option<String>, i64, i64);

/// The authority row with the ledger's clock.
pub(in crate::ledger) fn authority(row: AuthorityRow, now_ms: i64) -> LockAuthority {
    let (generation, mode, grantor, grant_from_ms, horizon_ms) = row;
    LockAuthority {
        generation: u64::try_from(generation).unwrap_or_default(),
        mode: LockMode::parse(&mode),
        grantor,
        grant_from_ms,
        horizon_ms,
        now_ms,
    }
}

/// Whether the ledger grants, refreshes and releases leases under `auth` at its `now_ms`.
pub(in crate::ledger) fn leases_serve(auth: &LockAuthority) -> bool {
    auth.generation > 0 && auth.mode == LockMode::Ledger && auth.now_ms >= auth.grant_from_ms
}

/// The UPDATE that writes a changed authority (binds: generation, mode, run_id,
/// grant_from_ms, horizon_ms).
pub(in crate::ledger) const WRITE_AUTHORITY: &str = "UPDATE lock_authority SET generation = $1, \
     mode = $2, run_id = $3, grant_from_ms = $4, horizon_ms = $5 WHERE id = 1";
