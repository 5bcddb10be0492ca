-- Releases a lock held under this token (compare-and-delete) and wakes its waiters on every
-- instance (the channel is the lock's key).
-- KEYS[1] lock; ARGV: token
-- 1 released | 0 not held
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[1], '')
return 1
