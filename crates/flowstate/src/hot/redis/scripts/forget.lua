-- Drops a flow's cached record and, when given, one of its documents, whatever their versions
-- (a ledger write's outcome is unknown). A tombstone stays: it is no cached value, and it still
-- keeps late writes about the deleted flow out (see flow_order.lua).
-- KEYS[1] flow hash, KEYS[2] document (or KEYS[1] when none)
local cached = cached_order(KEYS[1])
if cached == nil or not cached[3] then
  redis.call('DEL', KEYS[1])
end
if KEYS[2] ~= KEYS[1] then
  redis.call('DEL', KEYS[2])
end
return 1
