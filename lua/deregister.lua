-- deregister: a node leaves on purpose. Its session ends; a drain released
-- its rooms, but one cut short may have left some naming it: the sweep
-- counter is raised (see DropStale).
-- KEYS[1] node key, KEYS[2] roomlb:nodes, KEYS[3] sweep counter roomlb:sweep;
-- ARGV[1] node id, ARGV[2] events channel
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
publish(ARGV[2], 'node_down', '', ARGV[1], 0)
return 1
