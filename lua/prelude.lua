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

-- owner_node returns the node part of an owner value "node:epoch".
local function owner_node(value)
  return string.match(value, '^(.*):%d+$')
end
