-- Caches a flow record unless the cache holds a newer or equal version already.
-- A registration (force = 1) replaces whatever is there, a tombstone included.
-- KEYS[1] flow hash
-- ARGV: version, force, ttl, data, status, last_updated
local stored = redis.call('HGET', KEYS[1], 'version')
if ARGV[2] ~= '1' and stored and tonumber(stored) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'data', ARGV[4], 'status', ARGV[5], 'last_updated', ARGV[6], 'version', ARGV[1])
redis.call('HDEL', KEYS[1], 'deleted')
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
