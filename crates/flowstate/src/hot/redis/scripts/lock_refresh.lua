-- Extends a lock held under this token (compare-and-extend), on the authority's Redis only.
-- KEYS[1] lock; ARGV: run_id, token, ttl ms
-- 1 extended | 0 not held (wrong token, expired, released) | {-1, run_id} another process
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
if run ~= ARGV[1] then
  return {-1, run}
end
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
