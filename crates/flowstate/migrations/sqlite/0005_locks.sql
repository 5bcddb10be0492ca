-- Who grants locks (one row): the Redis process named by run_id, or the ledger's leases when
-- it is NULL. Every change of grantor starts a new fencing generation (tokens are
-- generation * 2^32 + n, so they never go back) and, when an earlier grantor may still have
-- live grants, nothing is granted before grant_from_ms (ledger-clock ms since the epoch).
-- Generation 0: nobody has granted yet.
CREATE TABLE lock_authority (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    generation    BIGINT  NOT NULL,
    run_id        TEXT,
    grant_from_ms BIGINT  NOT NULL
);
INSERT INTO lock_authority (id, generation, run_id, grant_from_ms) VALUES (1, 0, NULL, 0);

-- Locks granted by the ledger (embedded, or a shared ledger without Redis). A row outlives its
-- release (secret '', expires_at_ms 0) so the name's fencing tokens keep growing.
CREATE TABLE lock_leases (
    name          TEXT   PRIMARY KEY,
    fence         BIGINT NOT NULL,
    secret        TEXT   NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
