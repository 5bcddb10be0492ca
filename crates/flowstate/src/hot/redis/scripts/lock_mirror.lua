-- Hands a lease the ledger granted back to Redis as locks return to it: the lock under the
-- lease's owner token for (at least) its remaining time, and its fencing token as the name's
-- last unless a later one is there. Answers the grantor (run_id/nonce, the nonce written if
-- missing), so the caller knows which grantor holds the copies.
-- KEYS[1] lock, KEYS[2] the name's last fencing token (same hash tag), KEYS[3] grantor
-- ARGV: token, ttl ms, fence, nonce
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[3]) > last then
  redis.call('SET', KEYS[2], ARGV[3])
end
return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') .. '/' ..
  (redis.call('SET', KEYS[3], ARGV[4], 'NX', 'GET') or ARGV[4])
