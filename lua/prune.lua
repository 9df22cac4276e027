-- prune: drop dead nodes (heartbeat key gone) from the load index.
-- KEYS[1] roomlb:nodes, KEYS[1+i] node key of candidate i
-- ARGV[1] events channel, ARGV[1+i] node id of candidate i
-- Returns the ids removed. A candidate that heartbeated meanwhile is kept.
local removed = {}
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
      publish(ARGV[1], 'node_down', '', ARGV[i], 0)
      removed[#removed + 1] = ARGV[i]
    end
  end
end
return removed
