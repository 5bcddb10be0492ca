-- Stores a result only while the caller's lease holds, and releases the lease.
-- KEYS[1] the result, KEYS[2] its lease. ARGV: value, ttl seconds, lease token.
-- Returns 1 when stored, 0 when the lease is no longer the caller's (nothing stored).
if redis.call('GET', KEYS[2]) ~= ARGV[3] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
