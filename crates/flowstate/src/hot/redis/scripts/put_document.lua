-- Caches a document (see hot/codec.rs for the envelope) unless the cache holds a newer or equal
-- version. A fresh write also adds the document to its flow's index set and, for a phase,
-- invalidates the flow's cached state.
--
-- Invalidation leaves a marker (codec 'x') instead of deleting the key: readers treat it as a
-- miss, and it records the invalidated version minus one, so a slow repopulation carrying an
-- older version still cannot land while one carrying that version (the ledger's current) can.
--
-- A document of a flow whose incarnation has ended (see flow_order.lua) is refused: the flow
-- was deleted, or deleted and registered again, after the document was written.
-- KEYS[1] document, KEYS[2] index set (or KEYS[1] when none), KEYS[3] key to invalidate (or
-- KEYS[1]), KEYS[4] the flow hash
-- ARGV: version, value, ttl, index member ('' = no index), index ttl, invalidate ('1' or '0'),
--       marker ttl, flow incarnation
if ended(cached_order(KEYS[4]), tonumber(ARGV[8])) then
  return 0
end
local stored = redis.call('GET', KEYS[1])
if stored and tonumber(string.sub(stored, 2, 21)) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('SADD', KEYS[2], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
if ARGV[6] == '1' then
  local current = redis.call('GET', KEYS[3])
  if current and string.sub(current, 1, 1) ~= 'x' then
    local v = tonumber(string.sub(current, 2, 21)) - 1
    redis.call('SET', KEYS[3], 'x' .. string.format('%020d', v), 'EX', ARGV[7])
  end
end
return 1
