-- What a subscriber resuming after an event id missed: the stream's epoch, top (last id handed
-- out) and first kept id, whether the resume must be a reset, and the entries to send: those
-- after the id, or on a reset every entry kept. The resume is exact when the id lies within the
-- kept history (first <= id <= top); an older id may have been trimmed past, or belong to an
-- earlier epoch (the stream started afresh since), and a later one cannot be from this epoch.
-- Without an id (ARGV[1] empty) only the epoch and top are returned.
-- A missing stream's epoch is named here (`live` 0), so the first event keeps it.
-- KEYS[1] stream, KEYS[2] meta hash (same hash tag)
-- ARGV: after, epoch candidate, ttl
local stream, meta, after = KEYS[1], KEYS[2], ARGV[1]
if redis.call('EXISTS', stream) == 0 then
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch or redis.call('HGET', meta, 'live') == '1' then
    epoch = ARGV[2]
    redis.call('HSET', meta, 'epoch', epoch, 'live', '0')
    redis.call('EXPIRE', meta, ARGV[3])
  end
  return {epoch, '', '', after ~= '' and 1 or 0, {}}
end
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', meta, 'epoch', epoch, 'live', '1')
  redis.call('EXPIRE', meta, ARGV[3])
end
local info = redis.call('XINFO', 'STREAM', stream)
local top, first = '', ''
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then
    top = info[i + 1]
  elseif info[i] == 'recorded-first-entry-id' then
    first = info[i + 1]
  end
end
if after == '' then
  return {epoch, top, first, 0, {}}
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
if less(after, first) or less(top, after) then
  return {epoch, top, first, 1, redis.call('XRANGE', stream, '-', '+')}
end
return {epoch, top, first, 0, redis.call('XRANGE', stream, '(' .. after, '+')}
