-- admit: the fleet's half of a claim, on the fleet's keys (one hash slot).
-- A claim takes a room in steps, since the fleet's keys and the room's are
-- in different hash slots (shards of a Redis Cluster): admit, then
-- claim.lua on the room's keys. admit refuses during the fleet's recovery
-- window (see generation in prelude.lua), tells whether the room's slot is
-- in use (its bit in the fleet's slot bitmap), and whether a given owner's
-- session still lives.
-- The bitmap lets claim.lua tell a slot that lost its data from one never
-- used. Its rule: a slot's bit is set only once the slot has its mark (the
-- first claim of a slot gives it one, birth.lua, then sets the bit,
-- mark.lua, then takes the room), and a room is served only once its
-- slot's bit is set (a reclaim sets it again after the fleet's keys were
-- lost). So a slot whose bit is set has a mark unless its shard lost it,
-- and one whose bit is not set has no served room.
-- KEYS[1] generation key, KEYS[2] recovery key, KEYS[3] slot bitmap
-- roomlb:{fleet}:slots, KEYS[4] the node key of the owner to check (any
-- fleet key when none)
-- ARGV[1] recovery window ms, ARGV[2] the room's slot, ARGV[3] the owner's
-- session to check ('' for none)
-- Returns {-1, recovery ms left} in a recovery window, else {1, in use,
-- alive}: in use is 1 when the slot's bit is set; alive is 1 when the node
-- key lives with the session ARGV[3].
local _, left = generation(KEYS[1], KEYS[2], ARGV[1])
if left > 0 then
  return {-1, left}
end
local used = redis.call('GETBIT', KEYS[3], ARGV[2])
local alive = 0
if ARGV[3] ~= '' and redis.call('HGET', KEYS[4], 'session') == ARGV[3] then
  alive = 1
end
return {1, used, alive}
