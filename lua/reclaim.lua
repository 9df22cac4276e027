-- reclaim: a node takes back the rooms it is serving whose keys Redis lost,
-- also during a recovery window (see generation in prelude.lua), where
-- claim.lua refuses. A room still owned by the node at the epoch it holds is
-- only renewed; an unowned room gets a new epoch for the node; a room owned
-- by anyone else (or by the node at another epoch) is lost. The caller must
-- be serving each room with a lease that is valid on its own clock, so that
-- no other node can be serving it.
-- KEYS[1] generation key, KEYS[2] recovery key, then for room i
-- KEYS[1+2i] owner key, KEYS[2+2i] epoch key
-- ARGV[1] node id, ARGV[2] lease ms, ARGV[3] epoch ttl ms, ARGV[4] events
-- channel, ARGV[5] recovery window ms, then for room i ARGV[4+2i] the epoch
-- the node holds it at, ARGV[5+2i] the room
-- Returns {generation, then for room i: epoch (0 when lost), owner value ('' unless lost)}.
local gen = generation(KEYS[1], KEYS[2], ARGV[5])
local out = {gen}
local node = ARGV[1]
for i = 1, (#KEYS - 2) / 2 do
  local okey, ekey = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local held, room = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  local cur = redis.call('GET', okey)
  if cur == node .. ':' .. held then
    redis.call('PEXPIRE', okey, ARGV[2])
    out[#out + 1] = tonumber(held)
    out[#out + 1] = ''
  elseif cur then
    out[#out + 1] = 0
    out[#out + 1] = cur
  else
    local e = next_epoch(ekey, ARGV[3])
    redis.call('SET', okey, node .. ':' .. num(e), 'PX', ARGV[2])
    publish(ARGV[4], 'claim', room, node, e)
    out[#out + 1] = e
    out[#out + 1] = ''
  end
end
return out
