-- heartbeat: register or refresh a node, and tell it the registry's
-- generation (see generation in prelude.lua): a node that registered under
-- another generation learns that Redis lost its rooms' keys.
-- The node key's session field names one continuous life of the key: a new
-- key takes ARGV[7], an existing one keeps its own. A node that finds
-- another session than the one it knows learns that its key lapsed in
-- between, when any router could steal its rooms.
-- A new key is a new session, and the session before it (if there was one)
-- has ended with rooms perhaps still naming it: the sweep counter is raised
-- so that housekeeping looks for them (see DropStale).
-- KEYS[1] node key roomlb:node:N (hash, PX ttl), KEYS[2] roomlb:nodes (zset by load),
-- KEYS[3] generation key, KEYS[4] recovery key, KEYS[5] sweep counter roomlb:sweep
-- ARGV[1] node id, ARGV[2] ttl ms, ARGV[3] load, ARGV[4] events channel,
-- ARGV[5] state, ARGV[6] recovery window ms, ARGV[7] session for a new key,
-- ARGV[8..] more field, value pairs
-- Publishes node_up for a new node and node_<state> when the state changes.
-- Returns {new, generation, recovery ms left, session}: new is 1 when the
-- node key was new, 0 otherwise.
local gen, left = generation(KEYS[3], KEYS[4], ARGV[6])
local old = redis.call('HGET', KEYS[1], 'state')
local session = redis.call('HGET', KEYS[1], 'session')
if not old or not session then
  session = ARGV[7]
end
redis.call('HSET', KEYS[1], 'state', ARGV[5], 'load', ARGV[3], 'session', session, unpack(ARGV, 8))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local new = 0
if not old then
  publish(ARGV[4], 'node_up', '', ARGV[1], 0)
  redis.call('INCR', KEYS[5])
  new = 1
elseif old ~= ARGV[5] then
  publish(ARGV[4], 'node_' .. ARGV[5], '', ARGV[1], 0)
end
return {new, gen, left, session}
