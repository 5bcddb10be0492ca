-- Caches a snapshot unless its flow's incarnation has ended (see flow_order.lua). A fresh one
-- also goes on the flow's snapshot list (newest first, trimmed), and the snapshots it pushed
-- out of the ledger are dropped.
-- KEYS[1] flow hash, KEYS[2] snapshot, KEYS[3] snapshot list (KEYS[2] for a fill),
-- KEYS[4..] evicted snapshots
-- ARGV: incarnation, value, ttl, snapshot id ('' for a fill), list length kept
if ended(cached_order(KEYS[1]), tonumber(ARGV[1])) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('LPUSH', KEYS[3], ARGV[4])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  for i = 4, #KEYS, 1000 do
    redis.call('DEL', unpack(KEYS, i, math.min(i + 999, #KEYS)))
  end
end
return 1
