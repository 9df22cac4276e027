-- mark: set the bits of slots in the fleet's slot bitmap (see admit.lua):
-- for a slot's first claim, once the slot has its mark (birth.lua); for a
-- reclaim, before the rooms are bound again (reclaim.lua, which gives a
-- slot that lost its mark a new one, with a recovery window). Also during
-- a recovery window.
-- KEYS[1] generation key, KEYS[2] recovery key, KEYS[3] slot bitmap
-- ARGV[1] recovery window ms, ARGV[2..] slots
-- Returns the registry's generation.
local gen = generation(KEYS[1], KEYS[2], ARGV[1])
for i = 2, #ARGV do
  redis.call('SETBIT', KEYS[3], ARGV[i], 1)
end
return gen
