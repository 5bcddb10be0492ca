-- Forgets a deleted flow: drops its keys and turns its record into a tombstone (see
-- flow_order.lua). If the id has been registered again since (a later incarnation is cached),
-- the record is the new flow's and stays; the other keys still go, since they may hold the
-- deleted flow's data, and a miss only sends readers to the ledger.
-- KEYS[1] flow hash, KEYS[2..] the flow's other keys (same hash tag)
-- ARGV: incarnation, tombstone version, tombstone ttl, tag (HMAC of key, 'tombstone' and
-- incarnation; '' without a secret key)
-- In slices: Lua's unpack is limited to a few thousand values.
for i = 2, #KEYS, 1000 do
  redis.call('DEL', unpack(KEYS, i, math.min(i + 999, #KEYS)))
end
local cached = cached_order(KEYS[1])
if cached ~= nil and cached[1] > tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'inc', ARGV[1], 'deleted', '1', 'tag', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
