-- reclaim: a node takes back the rooms it is serving after Redis lost the
-- registry, also during a recovery window (see generation in prelude.lua),
-- where claim.lua refuses. The node's heartbeat key was lost too, so it
-- heartbeats with a new session: a room whose value names the node at the
-- epoch it holds (in its old session or its new one) is bound to the new
-- session at that epoch; a room with no value gets a new epoch for the node;
-- a room with any other value is lost. The caller must be serving each room
-- validly on its own clock, so that no other node can be serving it.
-- The rooms are of one hash slot; the caller ran mark.lua for it before.
-- KEYS[1] the slot's mark key, KEYS[2] its recovery key, then for room i
-- KEYS[1+2i] owner key, KEYS[2+2i] epoch key
-- ARGV[1] node id, ARGV[2] its session now, ARGV[3] epoch ttl ms, ARGV[4]
-- events channel, ARGV[5] recovery window ms, then for room i ARGV[3+3i] the
-- epoch the node holds it at, ARGV[4+3i] the session it holds it in,
-- ARGV[5+3i] the room
-- Returns {the slot's mark, then for room i: epoch (0 when lost), owner
-- value ('' unless lost)}. A slot without a mark lost its data (the node
-- serves rooms of it): its new mark starts a recovery window.
local mark = slot_mark(KEYS[1], KEYS[2], ARGV[5])
local out = {mark}
local node, session = ARGV[1], ARGV[2]
for i = 1, (#KEYS - 2) / 2 do
  local okey, ekey = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local held, was, room = ARGV[3 + 3 * i], ARGV[4 + 3 * i], ARGV[5 + 3 * i]
  local cur = redis.call('GET', okey)
  if cur == owner(node, was, held) or cur == owner(node, session, held) then
    redis.call('SET', okey, owner(node, session, held))
    out[#out + 1] = tonumber(held)
    out[#out + 1] = ''
  elseif cur then
    out[#out + 1] = 0
    out[#out + 1] = cur
  else
    local e = next_epoch(ekey, ARGV[3])
    redis.call('SET', okey, owner(node, session, num(e)))
    publish(ARGV[4], 'claim', room, node, e)
    out[#out + 1] = e
    out[#out + 1] = ''
  end
end
return out
