-- LangGraph checkpoints, stored natively: one row per checkpoint of a thread's namespace, its
-- parent, the serializer's opaque (type, bytes) and its JSON metadata (queried by top-level
-- equality); and the pending writes of each checkpoint, keyed by (task_id, idx). Text keys
-- collate "C" (bytewise, like Python's string order): the newest checkpoint is the greatest id,
-- and writes replay in (task_path, task_id, idx) order.
CREATE TABLE checkpoints (
    thread_id            TEXT COLLATE "C"   NOT NULL,
    checkpoint_ns        TEXT COLLATE "C"   NOT NULL,
    checkpoint_id        TEXT COLLATE "C"   NOT NULL,
    parent_checkpoint_id TEXT,
    type                 TEXT   NOT NULL,
    checkpoint           BYTEA  NOT NULL,
    metadata             TEXT   NOT NULL,
    run_id               TEXT,
    created_at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
-- delete_for_runs: the run_id of the metadata, kept in a column of its own.
CREATE INDEX checkpoints_run ON checkpoints (run_id) WHERE run_id IS NOT NULL;

CREATE TABLE checkpoint_writes (
    thread_id     TEXT COLLATE "C"    NOT NULL,
    checkpoint_ns TEXT COLLATE "C"    NOT NULL,
    checkpoint_id TEXT COLLATE "C"    NOT NULL,
    task_id       TEXT COLLATE "C"    NOT NULL,
    idx           BIGINT  NOT NULL,
    task_path     TEXT COLLATE "C"    NOT NULL,
    channel       TEXT    NOT NULL,
    type          TEXT    NOT NULL,
    value         BYTEA   NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
