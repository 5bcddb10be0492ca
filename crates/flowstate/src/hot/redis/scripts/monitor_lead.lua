-- Takes or keeps the health monitor's leadership: extended when this instance holds it,
-- taken when nobody does.
-- KEYS[1] metrics:redis:leader; ARGV: instance id, ttl ms
-- 1 leads | 0 another instance does
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
