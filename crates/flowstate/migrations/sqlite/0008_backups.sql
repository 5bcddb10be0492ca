-- Backups of Redis data: one row per backup (its patterns, progress, outcome) and one per key
-- backed up, in the order read: the key (without key_prefix) and its dump (type, value,
-- remaining time to live; streams with every entry id) as zstd-compressed JSON.
CREATE TABLE backups (
    backup_id   TEXT   PRIMARY KEY,
    patterns    TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    keys        BIGINT NOT NULL DEFAULT 0,
    bytes       BIGINT NOT NULL DEFAULT 0,
    error       TEXT,
    created_at  TEXT   NOT NULL,
    finished_at TEXT
);

CREATE TABLE backup_entries (
    backup_id TEXT   NOT NULL REFERENCES backups (backup_id) ON DELETE CASCADE,
    seq       BIGINT NOT NULL,
    key       BLOB   NOT NULL,
    dump      BLOB   NOT NULL,
    PRIMARY KEY (backup_id, seq)
);
