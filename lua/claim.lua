-- claim: take an unowned room.
-- KEYS[1] owner key   roomlb:room:{r}        "node:epoch", PX lease
-- KEYS[2] epoch key   roomlb:room:{r}:epoch  last epoch handed out
-- KEYS[3] meta key    roomlb:room:{r}:meta   its "name" is the canonical casing
-- KEYS[4] generation key roomlb:generation, KEYS[5] recovery key roomlb:recovery
-- ARGV[1] node id, ARGV[2] lease ms, ARGV[3] epoch ttl ms,
-- ARGV[4] events channel ('' for none), ARGV[5] room, ARGV[6] recovery window ms
-- Returns {1, epoch, name} when claimed, {0, owner value, pttl ms, name}
-- when owned, {-1, recovery ms left, name} when the room is unowned but the
-- registry is in a recovery window (only its last owner may take it, with
-- reclaim.lua); name is the room's canonical casing as last recorded, or ''.
local name = redis.call('HGET', KEYS[3], 'name') or ''
local cur = redis.call('GET', KEYS[1])
if cur then
  return {0, cur, redis.call('PTTL', KEYS[1]), name}
end
local _, left = generation(KEYS[4], KEYS[5], ARGV[6])
if left > 0 then
  return {-1, left, name}
end
local e = next_epoch(KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. num(e), 'PX', ARGV[2])
publish(ARGV[4], 'claim', ARGV[5], ARGV[1], e)
return {1, e, name}
