-- release: give a room up, only by its owner at that session and epoch
-- (compare value). The metadata stays (until its TTL): the next owner learns
-- the room's canonical casing from it.
-- KEYS[1] owner key
-- ARGV[1] node id, ARGV[2] session, ARGV[3] epoch, ARGV[4] events channel,
-- ARGV[5] room
-- Returns {1} when released, {0, current owner value or ''} otherwise.
local cur = redis.call('GET', KEYS[1])
if cur ~= owner(ARGV[1], ARGV[2], ARGV[3]) then
  return {0, cur or ''}
end
redis.call('DEL', KEYS[1])
publish(ARGV[4], 'release', ARGV[5], ARGV[1], tonumber(ARGV[3]))
return {1}
