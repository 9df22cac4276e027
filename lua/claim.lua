-- claim: take a room that has no live owner. A room belongs to its owner
-- only while the owner's heartbeat key lives with the session the room's
-- value names; the caller checks that (the heartbeat key is in another hash
-- slot) and passes the value it found dead, which this script replaces only
-- if it is still the room's value. A session never comes back once its key
-- is gone, so a value found dead stays dead.
-- KEYS[1] owner key   roomlb:room:{r}        "node:session:epoch", no TTL
-- KEYS[2] epoch key   roomlb:room:{r}:epoch  last epoch handed out
-- KEYS[3] meta key    roomlb:room:{r}:meta   its "name" is the canonical casing
-- KEYS[4] the slot's mark key roomlb:slot:N:{t}, KEYS[5] its recovery key
-- (t is a tag in the room's hash slot N)
-- ARGV[1] node id, ARGV[2] its session, ARGV[3] epoch ttl ms,
-- ARGV[4] events channel ('' for none), ARGV[5] room, ARGV[6] recovery window
-- ms, ARGV[7] the owner value the caller found dead ('' for none)
-- Returns {1, epoch, name, mark} when claimed, {0, owner value, name, mark}
-- when the room has another value than ARGV[7], {-1, recovery ms left,
-- name, mark} when it has none (or a dead one) but its slot is in a
-- recovery window (only its last owner may take it, with reclaim.lua);
-- name is the room's canonical casing as last recorded, or '', and mark
-- the slot's mark (see slot_mark in prelude.lua), which owners check.
-- The caller made sure the slot is in use before (admit.lua; birth.lua and
-- mark.lua for its first claim). During a slot's recovery window nothing of the slot is
-- taken: its shard lost the room's key, and its owner, which may still
-- serve it, re-claims it once it notices, within the window.
local name = redis.call('HGET', KEYS[3], 'name') or ''
local mark, left = slot_mark(KEYS[4], KEYS[5], ARGV[6])
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[7] then
  local mine = owner(ARGV[1], ARGV[2], '')
  if string.sub(cur, 1, #mine) == mine then
    -- Already the caller's session's (a router stole or moved it here),
    -- which the caller may adopt: written again, so that a WAIT after this
    -- call covers the write that made it so, wherever it came from.
    redis.call('SET', KEYS[1], cur)
  end
  return {0, cur, name, mark}
end
if left > 0 then
  return {-1, left, name, mark}
end
local e = next_epoch(KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], owner(ARGV[1], ARGV[2], num(e)))
if cur then
  publish(ARGV[4], 'steal', ARGV[5], ARGV[1], e)
else
  publish(ARGV[4], 'claim', ARGV[5], ARGV[1], e)
end
return {1, e, name, mark}
