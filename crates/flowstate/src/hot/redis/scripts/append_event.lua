-- Appends one event to a flow's stream and publishes it to the flow's live subscribers on every
-- instance. The event keeps the id it was given, so that one published while Redis was down
-- (delivered locally, kept in the ledger outbox) is the same event when replayed: a replay of
-- an id the stream holds already is skipped, and an id at or below the stream's top (another
-- instance appended meanwhile, or a clock behind Redis's) takes the stream's next id instead.
-- The stream's epoch (KEYS[2], field `epoch`) is new whenever the stream starts afresh (it
-- expired, Redis restarted empty), unless a subscriber that found it missing named it first
-- (field `live` 0).
-- With ARGV[8] = '1' (a custom event) the flow's cached record (KEYS[3]) must be alive: the
-- script answers '~missing' (not cached: ask the ledger) or '~deleted' and appends nothing;
-- and when ARGV[10] is an incarnation, of that registration: '~other' otherwise.
-- KEYS[1] stream, KEYS[2] meta hash, KEYS[3] flow hash (same hash tag)
-- ARGV: id, event_type, payload, maxlen, ttl, epoch candidate, channel, check flow, tag (the
-- HMAC of type and payload, '' without a secret key: stored as field `s`, published before
-- the payload), incarnation ('' for any)
local stream, meta, id = KEYS[1], KEYS[2], ARGV[1]
if ARGV[8] == '1' then
  local flow = redis.call('HMGET', KEYS[3], 'data', 'deleted', 'inc')
  if flow[2] then
    return '~deleted'
  elseif not flow[1] then
    return '~missing'
  elseif ARGV[10] ~= '' and flow[3] ~= ARGV[10] then
    return '~other'
  end
end
local fresh = redis.call('EXISTS', stream) == 0
-- Whether the entry at `at` is this event (its type and payload): ids alone can collide, since
-- two instances may give two events the same id.
local function holds(at)
  local found = redis.call('XRANGE', stream, at, at)
  return #found > 0 and found[1][2][2] == ARGV[2] and found[1][2][4] == ARGV[3]
end
if not fresh then
  if holds(id) then
    return id
  end
  -- Stored before under another id (below): the same event, not a new one.
  local moved = redis.call('HGET', meta, 'r:' .. id)
  if moved and holds(moved) then
    return moved
  end
end
local added = redis.pcall('XADD', stream, 'MAXLEN', '~', ARGV[4], id, 't', ARGV[2], 'p', ARGV[3],
  's', ARGV[9])
if type(added) == 'table' and added.err then
  added = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[4], '*', 't', ARGV[2], 'p', ARGV[3],
    's', ARGV[9])
  redis.call('HSET', meta, 'r:' .. id, added)
end
if fresh then
  if redis.call('HGET', meta, 'live') ~= '0' then
    redis.call('HSET', meta, 'epoch', ARGV[6])
  end
  redis.call('HSET', meta, 'live', '1')
elseif redis.call('HEXISTS', meta, 'epoch') == 0 then
  redis.call('HSET', meta, 'epoch', ARGV[6], 'live', '1')
end
redis.call('EXPIRE', stream, ARGV[5])
redis.call('EXPIRE', meta, ARGV[5])
redis.call('PUBLISH', ARGV[7], added .. '\n' .. ARGV[2] .. '\n' .. ARGV[9] .. '\n' .. ARGV[3])
return added
