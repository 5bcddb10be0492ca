-- Gives up a lease without storing a result (compare-and-delete), so a waiter can take it.
-- KEYS[1] the lease. ARGV: lease token.
-- Returns 1 when released, 0 when the lease is no longer the caller's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
