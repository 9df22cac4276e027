-- fenced_write: replace a hash of the room's state, refused unless the epoch
-- is the room's current one (the owner key holds it, lease alive).
-- KEYS[1] owner key, KEYS[2] the hash to write (same hash tag)
-- ARGV[1] epoch, ARGV[2] ttl ms of the hash (0: none), ARGV[3..] field, value, ...
-- Returns {1} when written, {0, current owner value or ''} when refused.
local cur = redis.call('GET', KEYS[1])
if not cur or string.match(cur, ':(%d+)$') ~= ARGV[1] then
  return {0, cur or ''}
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'epoch', ARGV[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return {1}
