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
//	roomlb:room:{r}              string "node:session:epoch"  owner of room r (no TTL)
//	roomlb:room:{r}:epoch        integer, PX epoch TTL        last epoch handed out
//	roomlb:room:{r}:meta         hash, written fenced          the monolith's room metadata
//	roomlb:slot:N:{t}            string, no TTL                mark of hash slot N (t: a tag in slot N)
//	roomlb:slot:N:{t}:recovery   string, PX window             the slot's recovery window
//	roomlb:{fleet}:node:N        hash, PX heartbeat TTL        address, region, state, load, session...
//	roomlb:{fleet}:nodes         sorted set, score = load      live nodes for placement
//	roomlb:{fleet}:generation    string, no TTL                the registry's generation
//	roomlb:{fleet}:recovery      string, PX window             the fleet's recovery window
//	roomlb:{fleet}:slots         bitmap                        hash slots that may hold served rooms
//	roomlb:{fleet}:handoff:N     stream                        rooms offered to node N
//	roomlb:{fleet}:handoffs      set                           nodes with a handoff stream
//	roomlb:{fleet}:sweep         integer                       raised when a session may have ended
//	roomlb:events                pub/sub channel, JSON         ownership and node changes
//	roomlb:lock:housekeeping     redsync mutex                 singleton pruning of dead nodes and stale rooms
//	roomlb:lock:room:{r}         redsync mutex                 one admin operation on a room at a time (ctl move)
//
// Every script touches the keys of one hash slot (Redis Cluster): a room's
// keys share its tag, the fleet's the tag {fleet}. See recovery.go and
// verify.go for how a loss of Redis's data, or of one shard's, is found.
//
// r is the room name in lower case (rooms are case-insensitive); the
// canonical casing is kept in the meta hash.
package registry
