-- Named JSON documents attached to a flow: its state, its phase states, its agents' results.
CREATE TABLE flow_documents (
    flow_id  TEXT    NOT NULL REFERENCES flows (flow_id) ON DELETE CASCADE,
    kind     TEXT    NOT NULL, -- state | phase | agent
    name     TEXT    NOT NULL, -- '' for the state, else the phase or agent name
    body     TEXT    NOT NULL,
    saved_at TEXT    NOT NULL,
    -- Grows with every write; the hot tier refuses to replace a newer version with an older one.
    version  INTEGER NOT NULL,
    PRIMARY KEY (flow_id, kind, name)
) WITHOUT ROWID;

-- Snapshots of a flow's state; the newest 10 per flow are kept.
CREATE TABLE flow_snapshots (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    flow_id            TEXT NOT NULL REFERENCES flows (flow_id) ON DELETE CASCADE,
    snapshot_id        TEXT NOT NULL,
    parent_snapshot_id TEXT,
    state              TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    UNIQUE (flow_id, snapshot_id)
);

-- The snapshot a flow's current state descends from (set by taking or restoring one).
ALTER TABLE flows ADD COLUMN head_snapshot_id TEXT;

-- One row per (service, operation, reason, source) and window instead of one per call.
ALTER TABLE redis_fallback_log ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
