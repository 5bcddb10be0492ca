-- Grants a lock unless it is held, on the grantor the lock authority names only: Redis's
-- run_id and the nonce in the grantor key. A Redis that restarted, empty or from an old
-- snapshot, a promoted replica that lags, or one that lost its keys without restarting
-- (FLUSHALL, an evicted key) is another grantor, and granting there could hand out a lock
-- someone still holds or a fencing token already given. A missing grantor key is written
-- with this attempt's secret as the new nonce, so the answer names the grantor that will be.
-- The fencing token is the later of the name's last one + 1 and the first of the
-- authority's generation (generation * 2^32 + 1).
-- The last fencing token is kept without expiry: were it to lapse, the name's next token would
-- start again at the generation's first.
-- KEYS[1] lock, KEYS[2] the name's last fencing token (same hash tag), KEYS[3] grantor
-- ARGV: grantor, generation, secret, ttl ms
-- {1, fence} granted | {0, pttl} held | {-1, grantor} another grantor | {-2} a later
-- generation granted this name (the caller's view of the authority is stale)
local grantor = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') .. '/' ..
  (redis.call('SET', KEYS[3], ARGV[3], 'NX', 'GET') or ARGV[3])
if grantor ~= ARGV[1] then
  return {-1, grantor}
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl ~= -2 then
  return {0, pttl}
end
local span = 4294967296
local floor = tonumber(ARGV[2]) * span
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if last >= floor + span then
  return {-2}
end
local fence = math.max(last + 1, floor + 1)
local f = string.format('%.0f', fence)
redis.call('SET', KEYS[1], f .. '.' .. ARGV[3], 'PX', ARGV[4])
redis.call('SET', KEYS[2], f)
return {1, f}
