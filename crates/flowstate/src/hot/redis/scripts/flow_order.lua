-- Shared head of the scripts that write a flow's keys (prepended to each of them).
--
-- A flow's cached writes are ordered by (incarnation, version). The incarnation is the ledger's
-- registration number of the flow, which only grows: a flow deleted and registered again under
-- the same id outranks everything about its earlier life. A tombstone carries the incarnation
-- it ended and a version above any real one.

-- The cached order of the flow hash `key`: {incarnation, version, deleted}, or nil.
local function cached_order(key)
  local f = redis.call('HMGET', key, 'inc', 'version', 'deleted')
  if not f[2] then
    return nil
  end
  return {tonumber(f[1] or '0'), tonumber(f[2]), f[3] ~= false}
end

-- Whether `cached` holds (inc, version) or a later write.
local function superseded(cached, inc, version)
  return cached ~= nil and (cached[1] > inc or (cached[1] == inc and cached[2] >= version))
end

-- Whether the flow's incarnation `inc` has ended: deleted, or registered again since.
local function ended(cached, inc)
  return cached ~= nil and (cached[1] > inc or (cached[3] and cached[1] >= inc))
end
