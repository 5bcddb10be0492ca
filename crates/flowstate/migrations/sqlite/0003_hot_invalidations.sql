-- Redis keys a write could not reach (Redis down or hung), to delete before Redis serves them
-- again. Kept here as well as in the process that failed, so that neither a crash of that
-- process nor another instance recovering first can let a stale value be read.
CREATE TABLE hot_invalidations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    cache_key   TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
