-- Caches a flow record unless the cache holds it or a later write (see flow_order.lua): a slow
-- repopulation cannot revive a deleted flow or roll a record back, a late registration cannot
-- replace a newer record, and a late write about a deleted flow cannot replace the flow
-- registered after it under the same id.
-- KEYS[1] flow hash
-- ARGV: incarnation, version, ttl, data, status, last_updated, tag (HMAC of key, incarnation
-- and data; '' without a secret key)
if superseded(cached_order(KEYS[1]), tonumber(ARGV[1]), tonumber(ARGV[2])) then
  return 0
end
redis.call('HSET', KEYS[1], 'data', ARGV[4], 'status', ARGV[5], 'last_updated', ARGV[6],
  'version', ARGV[2], 'inc', ARGV[1], 'tag', ARGV[7])
redis.call('HDEL', KEYS[1], 'deleted')
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
