//! SQL both ledgers share for locks.

use crate::model::locks::LockAuthority;

/// The authority row with the ledger's clock.
pub(in crate::ledger) fn authority(
    generation: i64,
    run_id: Option<String>,
    grant_from_ms: i64,
    now_ms: i64,
) -> LockAuthority {
    LockAuthority {
        generation: u64::try_from(generation).unwrap_or_default(),
        run_id,
        grant_from_ms,
        now_ms,
    }
}

/// The new grant_from of a move: now, or after the quarantine when someone granted before.
pub(in crate::ledger) fn grant_from(generation: i64, now_ms: i64, quarantine_ms: u64) -> i64 {
    if generation == 0 {
        now_ms
    } else {
        now_ms.saturating_add(i64::try_from(quarantine_ms).unwrap_or(i64::MAX))
    }
}
