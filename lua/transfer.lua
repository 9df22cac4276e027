-- transfer: hand a room from its owner A to node B with a new epoch (drains,
-- moves). Only A at its current epoch may do it.
-- KEYS[1] owner key, KEYS[2] epoch key
-- ARGV[1] from node, ARGV[2] from epoch, ARGV[3] to node, ARGV[4] lease ms,
-- ARGV[5] epoch ttl ms, ARGV[6] events channel, ARGV[7] room
-- Returns {1, new epoch} when moved, {0, current owner value or ''} otherwise.
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] .. ':' .. ARGV[2] then
  return {0, cur or ''}
end
local e = next_epoch(KEYS[2], ARGV[5])
redis.call('SET', KEYS[1], ARGV[3] .. ':' .. num(e), 'PX', ARGV[4])
publish(ARGV[6], 'move', ARGV[7], ARGV[3], e)
return {1, e}
