-- heartbeat: register or refresh a node.
-- KEYS[1] node key roomlb:node:N (hash, PX ttl), KEYS[2] roomlb:nodes (zset by load)
-- ARGV[1] node id, ARGV[2] ttl ms, ARGV[3] load, ARGV[4] events channel,
-- ARGV[5] state, ARGV[6..] more field, value pairs
-- Publishes node_up for a new node and node_<state> when the state changes.
-- Returns 1 when the node was new, 0 otherwise.
local old = redis.call('HGET', KEYS[1], 'state')
redis.call('HSET', KEYS[1], 'state', ARGV[5], 'load', ARGV[3], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if not old then
  publish(ARGV[4], 'node_up', '', ARGV[1], 0)
  return 1
end
if old ~= ARGV[5] then
  publish(ARGV[4], 'node_' .. ARGV[5], '', ARGV[1], 0)
end
return 0
