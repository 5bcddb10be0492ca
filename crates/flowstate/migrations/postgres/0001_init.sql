-- Flows, their transition history, and the reference's audit and fallback tables (§3.3).
CREATE TABLE flows (
    -- Registration order: the stable paging cursor (flow ids need not be sortable).
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow_id        TEXT        NOT NULL UNIQUE,
    flow_type      TEXT        NOT NULL,
    parent_flow_id TEXT        REFERENCES flows (flow_id),
    status         TEXT        NOT NULL,
    metadata       JSONB       NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    version        BIGINT      NOT NULL
);
CREATE INDEX idx_flows_parent ON flows (parent_flow_id, seq);
CREATE INDEX idx_flows_status ON flows (status, seq);
CREATE INDEX idx_flows_type ON flows (flow_type, seq);

CREATE TABLE flow_transitions (
    flow_id     TEXT        NOT NULL REFERENCES flows (flow_id) ON DELETE CASCADE,
    seq         BIGINT      NOT NULL,
    from_status TEXT        NOT NULL,
    to_status   TEXT        NOT NULL,
    metadata    JSONB       NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (flow_id, seq)
);

CREATE TABLE redis_cache_audit (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow_id    TEXT             NOT NULL,
    cache_key  TEXT             NOT NULL,
    operation  TEXT             NOT NULL,
    hit_miss   TEXT,
    timestamp  TIMESTAMPTZ      NOT NULL,
    latency_ms DOUBLE PRECISION,
    error      TEXT
);
CREATE INDEX idx_redis_cache_audit_flow_id ON redis_cache_audit (flow_id);
CREATE INDEX idx_redis_cache_audit_timestamp ON redis_cache_audit (timestamp);

CREATE TABLE redis_fallback_log (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service         TEXT        NOT NULL,
    operation       TEXT        NOT NULL,
    reason          TEXT        NOT NULL,
    fallback_source TEXT,
    timestamp       TIMESTAMPTZ NOT NULL,
    context         JSONB
);
CREATE INDEX idx_redis_fallback_timestamp ON redis_fallback_log (timestamp);
