-- fenced_write: replace a hash of the room's state, refused unless the epoch
-- is the room's current one (the owner key holds it, lease alive). The
-- room's epoch counter is kept as long as the hash: a claim sets it for one
-- lease only, so rooms that were looked up but never loaded leave nothing
-- behind for long.
-- KEYS[1] owner key, KEYS[2] the hash to write (same hash tag),
-- KEYS[3] the room's epoch key
-- ARGV[1] epoch, ARGV[2] ttl ms of the hash (0: none), ARGV[3] ttl ms of the
-- epoch key, ARGV[4..] field, value, ...
-- Returns {1} when written, {0, current owner value or ''} when refused.
local cur = redis.call('GET', KEYS[1])
if not cur or string.match(cur, ':(%d+)$') ~= ARGV[1] then
  return {0, cur or ''}
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'epoch', ARGV[1], unpack(ARGV, 4))
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
return {1}
