-- Forgets a deleted flow: drops its keys and turns its record into a tombstone (see
-- flow_order.lua), unless the id has been registered again since. Then a later incarnation is
-- cached, and the keys are the new flow's.
-- KEYS[1] flow hash, KEYS[2..] the flow's other keys (same hash tag)
-- ARGV: incarnation, tombstone version, tombstone ttl
local cached = cached_order(KEYS[1])
if cached ~= nil and cached[1] > tonumber(ARGV[1]) then
  return 0
end
-- In slices: Lua's unpack is limited to a few thousand values.
for i = 2, #KEYS, 1000 do
  redis.call('DEL', unpack(KEYS, i, math.min(i + 999, #KEYS)))
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'inc', ARGV[1], 'deleted', '1')
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
