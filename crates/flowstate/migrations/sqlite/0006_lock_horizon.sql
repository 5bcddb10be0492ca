-- Locks fall back to the ledger's leases while Redis is unreachable and return to Redis after.
-- mode: who grants ('redis', 'ledger', or 'draining' while live leases are handed back to
-- Redis); run_id now names the last Redis process in the other modes. horizon_ms: in 'redis'
-- mode every lock Redis granted lapses by then (each instance extends it ahead of need), so
-- the ledger takes over from then on; in 'draining' mode, when the hand-over may be abandoned.
ALTER TABLE lock_authority ADD COLUMN mode TEXT NOT NULL DEFAULT 'ledger';
ALTER TABLE lock_authority ADD COLUMN horizon_ms BIGINT NOT NULL DEFAULT 0;
-- A Redis authority from before this migration granted without a horizon: assume the default
-- locks.max_ttl_ms (5 minutes) from now.
UPDATE lock_authority
SET mode = 'redis',
    horizon_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000 + 300000
WHERE run_id IS NOT NULL;
