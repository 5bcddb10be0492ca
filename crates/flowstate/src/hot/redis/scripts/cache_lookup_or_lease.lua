-- A cache lookup that takes a lease on a miss, in one round trip.
-- KEYS[1] the result (agent:results:<agent>:<hash>), KEYS[2] its lease (same slot: its hash
-- tag is the result key). ARGV: ttl seconds (a hit slides it), lease token, lease ms.
-- Returns {1, value} on a hit, {2, nil} when this caller now holds the lease, {3, nil} when
-- another does.
local v = redis.call('GETEX', KEYS[1], 'EX', ARGV[1])
if v then
  return {1, v}
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return {2, false}
end
return {3, false}
