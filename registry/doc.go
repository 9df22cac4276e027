// Package registry is roomlb's typed API over the Redis room registry: who
// owns which room at which fencing epoch, which nodes are alive and how
// loaded they are, and the events that tell routers their caches are stale.
//
// Every ownership change runs one Lua script (package lua), so at most one
// node owns a room at any instant and every claim of a room gets an epoch
// strictly greater than all earlier ones, also after Redis lost its data.
// A room belongs to a session of its owner's heartbeat key and needs no
// renewal of its own. Sidecars claim, release and transfer rooms and
// heartbeat their node; routers look owners up, steal rooms of dead nodes
// and watch events; one sidecar at a time (a redsync lock) prunes dead
// nodes from the load index and drops the keys of rooms whose owner's
// session has ended.
//
// The schema, readable with redis-cli (prefix "roomlb:" by default):
//
//	roomlb:room:{r}         string "node:session:epoch"       owner of room r (no TTL)
//	roomlb:room:{r}:epoch   integer, PX epoch TTL             last epoch handed out
//	roomlb:room:{r}:meta    hash, written fenced               the monolith's room metadata
//	roomlb:node:N           hash, PX heartbeat TTL             address, region, state, load, session...
//	roomlb:nodes            sorted set, score = load           live nodes for placement
//	roomlb:events           pub/sub channel, JSON              ownership and node changes
//	roomlb:handoff:N        stream                             rooms offered to node N
//	roomlb:handoffs         set                                nodes with a handoff stream
//	roomlb:sweep            integer                            raised when a session may have ended
//	roomlb:lock:housekeeping  redsync mutex                    singleton pruning of dead nodes and stale rooms
//	roomlb:lock:room:{r}      redsync mutex                    one admin operation on a room at a time (ctl move)
//
// r is the room name in lower case (rooms are case-insensitive); the
// canonical casing is kept in the meta hash.
package registry
