-- Extends a lock held under this token (compare-and-extend), on the authority's grantor only
-- (see lock_acquire.lua; a missing grantor key is written with the fresh nonce given).
-- KEYS[1] lock, KEYS[2] grantor; ARGV: grantor, token, ttl ms, nonce
-- 1 extended | 0 not held (wrong token, expired, released) | {-1, grantor} another grantor
local grantor = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') .. '/' ..
  (redis.call('SET', KEYS[2], ARGV[4], 'NX', 'GET') or ARGV[4])
if grantor ~= ARGV[1] then
  return {-1, grantor}
end
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
