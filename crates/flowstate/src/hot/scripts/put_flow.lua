-- Caches a flow record unless the cache holds a newer or equal version already. A tombstone
-- (a recently deleted flow) is replaced only by a registration (force = 1): a slow
-- repopulation cannot revive a deleted flow, and a slow registration cannot roll back a newer
-- record of the same flow.
-- KEYS[1] flow hash
-- ARGV: version, force, ttl, data, status, last_updated
local fields = redis.call('HMGET', KEYS[1], 'version', 'deleted')
local stored, deleted = fields[1], fields[2]
if stored then
  local replace_tombstone = deleted and ARGV[2] == '1'
  if not replace_tombstone and tonumber(stored) >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'data', ARGV[4], 'status', ARGV[5], 'last_updated', ARGV[6], 'version', ARGV[1])
redis.call('HDEL', KEYS[1], 'deleted')
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
