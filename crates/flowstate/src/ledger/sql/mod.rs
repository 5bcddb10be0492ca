//! SQL and row types both SQL ledgers share, one file per capability. Statements here are
//! `&'static str` (sqlx only runs SQL it can see is not built from input) and use `$n`
//! placeholders, which SQLite accepts too.

pub(super) mod backups;
pub(super) mod checkpoints;
pub(super) mod documents;
pub(super) mod events;
pub(super) mod flows;
pub(super) mod journal;
pub(super) mod locks;
pub(super) mod snapshots;
