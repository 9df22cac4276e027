-- release: give a room up, only by its owner at that epoch (compare value).
-- The metadata stays (until its TTL): the next owner learns the room's
-- canonical casing from it.
-- KEYS[1] owner key
-- ARGV[1] node id, ARGV[2] epoch, ARGV[3] events channel, ARGV[4] room
-- Returns {1} when released, {0, current owner value or ''} otherwise.
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] .. ':' .. ARGV[2] then
  return {0, cur or ''}
end
redis.call('DEL', KEYS[1])
publish(ARGV[3], 'release', ARGV[4], ARGV[1], tonumber(ARGV[2]))
return {1}
