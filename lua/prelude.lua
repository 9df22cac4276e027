-- Shared by every room script: it is prepended to each of them when they are
-- loaded (see lua.go), so the scripts below may call these functions.

-- num formats an integer without Lua's %.14g rounding (epochs have 16 digits).
local function num(n)
  return string.format('%d', n)
end

-- next_epoch hands out an epoch strictly above every earlier epoch of the room,
-- also after Redis lost its data: the counter is seeded from the server clock
-- in microseconds, so an empty Redis still starts above every epoch it handed
-- out before, as long as its clock has not gone back. The counter key expires
-- after epoch_ttl_ms of no claims; the clock seed covers that case too.
local function next_epoch(epoch_key, epoch_ttl_ms)
  local t = redis.call('TIME')
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local e = tonumber(redis.call('GET', epoch_key) or '0') + 1
  if now_us > e then
    e = now_us
  end
  redis.call('SET', epoch_key, num(e), 'PX', epoch_ttl_ms)
  return e
end

-- publish sends an ownership-change hint. Room and node names are validated
-- by the Go side to [A-Za-z0-9._-], so they need no JSON escaping.
local function publish(channel, kind, room, node, epoch)
  if channel == '' then
    return
  end
  redis.call('PUBLISH', channel,
    '{"kind":"' .. kind .. '","room":"' .. room .. '","node":"' .. node .. '","epoch":' .. num(epoch) .. '}')
end

-- owner builds an owner value "node:session:epoch": the room belongs to that
-- session of the node's heartbeat key, at that epoch, for as long as the key
-- lives with that session (sessions are never reused).
local function owner(node, session, epoch)
  return node .. ':' .. session .. ':' .. epoch
end

-- survivor returns the value of a key that has no TTL and lives as long as
-- its Redis keeps its data, and how long the recovery window that started
-- when it was found gone has left in ms (0: none). A missing key means the
-- data it stood for was lost: it gets a new value from the server clock,
-- and a recovery window of window_ms starts (rec_key, PX).
local function survivor(key, rec_key, window_ms)
  local v = redis.call('GET', key)
  if v then
    local left = redis.call('PTTL', rec_key)
    if left < 0 then
      left = 0
    end
    return v, left
  end
  local t = redis.call('TIME')
  v = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', key, v)
  redis.call('SET', rec_key, v, 'PX', window_ms)
  return v, tonumber(window_ms)
end

-- generation returns the registry's generation and how long its recovery
-- window has left in ms (0: none). The generation key has no TTL, so its
-- absence means Redis (the shard of the fleet's keys) lost the registry (a
-- restart without persistence, FLUSHALL, a failover to a replica that
-- lagged) or never held one. Then a new generation starts with a recovery
-- window of window_ms: owners that still serve rooms re-claim them
-- (reclaim.lua), and nobody else may take a room whose owner's session
-- looks ended until every owner has had the chance to notice the loss and
-- either re-claim or stop serving (it stops at 0.9 x its heartbeat TTL
-- without a heartbeat, and a heartbeat that finds a new generation does not
-- extend rooms it has not re-claimed).
local function generation(gen_key, rec_key, window_ms)
  return survivor(gen_key, rec_key, window_ms)
end

-- slot_mark returns the mark of a hash slot and how long the slot's recovery
-- window has left in ms (0: none). A slot's mark key (no TTL) lives on the
-- shard that holds the slot's rooms and is set before any room of the slot
-- is claimed (birth.lua, see admit.lua), so its absence means that shard
-- lost its data. A lost mark starts a new one with a recovery window of
-- window_ms, as generation does for the whole registry: owners that still
-- serve rooms of the slot re-claim them, nobody else claims a room of the
-- slot that has no owner until the window ends.
local function slot_mark(mark_key, rec_key, window_ms)
  return survivor(mark_key, rec_key, window_ms)
end
