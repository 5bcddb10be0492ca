-- Appends a transition to the flow's stream, then caches the updated flow record unless a
-- newer (or equal) version is cached already: a late writer never rolls the record back.
-- KEYS[1] flow hash, KEYS[2] transitions stream (same hash tag)
-- The entry's id carries its time (milliseconds), so no timestamp field is stored: it would
-- cost a quarter of the stream's memory.
-- ARGV: version, flow_ttl, data, status, last_updated, stream_ttl, maxlen,
--       from, to, metadata
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*',
  'seq', ARGV[1], 'from_state', ARGV[8], 'to_state', ARGV[9], 'metadata', ARGV[10])
redis.call('EXPIRE', KEYS[2], ARGV[6])
local stored = redis.call('HGET', KEYS[1], 'version')
if stored and tonumber(stored) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'data', ARGV[3], 'status', ARGV[4], 'last_updated', ARGV[5], 'version', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
