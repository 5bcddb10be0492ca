-- LangGraph checkpoints, stored natively: one row per checkpoint of a thread's namespace, its
-- parent, the serializer's opaque (type, bytes) and its JSON metadata (queried by top-level
-- equality); and the pending writes of each checkpoint, keyed by (task_id, idx).
CREATE TABLE checkpoints (
    thread_id            TEXT   NOT NULL,
    checkpoint_ns        TEXT   NOT NULL,
    checkpoint_id        TEXT   NOT NULL,
    parent_checkpoint_id TEXT,
    type                 TEXT   NOT NULL,
    checkpoint           BLOB   NOT NULL,
    metadata             TEXT   NOT NULL,
    run_id               TEXT,
    created_at           TEXT   NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
-- delete_for_runs: the run_id of the metadata, kept in a column of its own.
CREATE INDEX checkpoints_run ON checkpoints (run_id) WHERE run_id IS NOT NULL;

CREATE TABLE checkpoint_writes (
    thread_id     TEXT    NOT NULL,
    checkpoint_ns TEXT    NOT NULL,
    checkpoint_id TEXT    NOT NULL,
    task_id       TEXT    NOT NULL,
    idx           INTEGER NOT NULL,
    task_path     TEXT    NOT NULL,
    channel       TEXT    NOT NULL,
    type          TEXT    NOT NULL,
    value         BLOB    NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
