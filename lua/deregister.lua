-- deregister: a node leaves on purpose.
-- KEYS[1] node key, KEYS[2] roomlb:nodes; ARGV[1] node id, ARGV[2] events channel
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
publish(ARGV[2], 'node_down', '', ARGV[1], 0)
return 1
