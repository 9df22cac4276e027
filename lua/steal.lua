-- steal: take a room whose owner's node is dead (its heartbeat key is gone),
-- without waiting for the room lease to run out. An unowned room is simply
-- claimed, unless the registry is in a recovery window (see generation in
-- prelude.lua).
-- KEYS[1] owner key, KEYS[2] epoch key, KEYS[3] heartbeat key of the owner
-- the caller believes dead (roomlb:node:V), KEYS[4] generation key,
-- KEYS[5] recovery key
-- ARGV[1] that owner's node id V, ARGV[2] new node id, ARGV[3] lease ms,
-- ARGV[4] epoch ttl ms, ARGV[5] events channel, ARGV[6] room,
-- ARGV[7] recovery window ms
-- Returns {1, epoch} when taken; {0, current owner value} when the room is
-- owned by another node than V now; {-1, current owner value} when V is
-- alive; {-2, recovery ms left} during a recovery window.
-- During a recovery window nothing is taken: Redis lost the registry, the
-- nodes' heartbeat keys with it, and a live owner's key is back only at its
-- next heartbeat (the window lasts at least a heartbeat TTL), so a missing
-- key does not mean a dead owner then.
local cur = redis.call('GET', KEYS[1])
if cur then
  if owner_node(cur) ~= ARGV[1] then
    return {0, cur}
  end
  if redis.call('EXISTS', KEYS[3]) == 1 then
    return {-1, cur}
  end
end
local _, left = generation(KEYS[4], KEYS[5], ARGV[7])
if left > 0 then
  return {-2, left}
end
local e = next_epoch(KEYS[2], ARGV[4])
redis.call('SET', KEYS[1], ARGV[2] .. ':' .. num(e), 'PX', ARGV[3])
if cur then
  publish(ARGV[5], 'steal', ARGV[6], ARGV[2], e)
else
  publish(ARGV[5], 'claim', ARGV[6], ARGV[2], e)
end
return {1, e}
