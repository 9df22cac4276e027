-- transfer: hand a room from its owner A to node B with a new epoch (drains,
-- moves). Only A at its session and current epoch may do it. The room
-- belongs to the session of B given here: if that session is gone already,
-- the room is free to claim again, as any room of a dead session is.
-- KEYS[1] owner key, KEYS[2] epoch key, KEYS[3] the slot's mark key
-- ARGV[1] from node, ARGV[2] from session, ARGV[3] from epoch, ARGV[4] to
-- node, ARGV[5] to session, ARGV[6] epoch ttl ms, ARGV[7] events channel,
-- ARGV[8] room
-- Returns {1, new epoch, the slot's mark or ''} when moved, {0, current
-- owner value or ''} otherwise.
local cur = redis.call('GET', KEYS[1])
if cur ~= owner(ARGV[1], ARGV[2], ARGV[3]) then
  return {0, cur or ''}
end
local e = next_epoch(KEYS[2], ARGV[6])
redis.call('SET', KEYS[1], owner(ARGV[4], ARGV[5], num(e)))
publish(ARGV[7], 'move', ARGV[8], ARGV[4], e)
return {1, e, redis.call('GET', KEYS[3]) or ''}
