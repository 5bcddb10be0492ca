-- Appends a transition to the flow's stream, then caches the updated flow record unless the
-- cache holds it or a later write: a late writer never rolls the record back. A transition of a
-- flow whose incarnation has ended (deleted, or registered again) writes nothing.
-- KEYS[1] flow hash, KEYS[2] transitions stream (same hash tag)
-- The entry's id carries its time (milliseconds), so no timestamp field is stored: it would
-- cost a quarter of the stream's memory.
-- ARGV: version, flow_ttl, data, status, last_updated, stream_ttl, maxlen,
--       from, to, metadata, incarnation, tag (of the record: see put_flow.lua)
local inc, version = tonumber(ARGV[11]), tonumber(ARGV[1])
local cached = cached_order(KEYS[1])
if ended(cached, inc) then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*',
  'seq', ARGV[1], 'from_state', ARGV[8], 'to_state', ARGV[9], 'metadata', ARGV[10])
redis.call('EXPIRE', KEYS[2], ARGV[6])
if superseded(cached, inc, version) then
  return 0
end
redis.call('HSET', KEYS[1], 'data', ARGV[3], 'status', ARGV[4], 'last_updated', ARGV[5],
  'version', ARGV[1], 'inc', ARGV[11], 'tag', ARGV[12])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
