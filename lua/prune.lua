-- prune: drop dead nodes (heartbeat key gone) from the load index, and raise
-- the sweep counter when it did (their rooms may still name their sessions:
-- see DropStale).
-- KEYS[1] roomlb:nodes, KEYS[2] sweep counter roomlb:sweep, KEYS[2+i] node key
-- of candidate i
-- ARGV[1] events channel, ARGV[1+i] node id of candidate i
-- Returns the ids removed. A candidate that heartbeated meanwhile is kept.
local removed = {}
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    if redis.call('ZREM', KEYS[1], ARGV[i - 1]) == 1 then
      publish(ARGV[1], 'node_down', '', ARGV[i - 1], 0)
      removed[#removed + 1] = ARGV[i - 1]
    end
  end
end
if #removed > 0 then
  redis.call('INCR', KEYS[2])
end
return removed
