// Package bench is `roomlb bench`: it starts the peers itself on loopback,
// drives them with a Go load generator, and reports nine figures, each next
// to a baseline measured in the same run, and the project's goals as pass or
// miss. Run(ctx, Options) returns a Report (Table for people, JSON for
// files); Tiny, Quick and Full size it.
//
// # What is compared, and why this way
//
// The monolith serves only its balancer protocol: neither the Go fake
// (ott/otttest) nor the Node reference monolith (testdata/monolith) accepts
// browser WebSockets, and neither can HAProxy speak that protocol. So:
//
//   - direct, the limit: the load generator speaks the balancer protocol to
//     the monolith itself, one link multiplexing every client (join,
//     client_msg, room_msg handed to the room's clients in the generator).
//     That is what a proxy of zero cost would cost the monolith.
//   - sidecar: clients straight to a roomlb sidecar in front of a second
//     monolith of the same kind (client -> sidecar -> monolith).
//   - haproxy: clients -> HAProxy -> the same sidecar. HAProxy is a plain
//     HTTP/WebSocket reverse proxy with that sidecar as its one backend,
//     adding the shared secret header as a router does.
//   - roomlb: clients -> router -> the same sidecar.
//
// The sidecar is needed in every proxied path (it alone speaks the
// monolith's protocol), so the router's added cost is measured against
// HAProxy's added cost for the same hop, in front of the same sidecar: that
// is the claim "a hot path as fast as HAProxy's". HAProxy does less than the
// router (no registry lookup, no placement), which favours HAProxy.
//
// # Figures
//
//  1. Added latency per message at a paced rate (not saturation): a client
//     sends a chat; the time until the room's broadcast of it comes back to
//     the sender; p50 and p99 per peer, and each proxy hop's addition. The
//     window is cut in three rounds, each of which takes every peer in
//     turn, and each peer's samples are pooled: the machine's load drifts
//     less between peers than over one peer's whole window.
//  2. Messages per second at saturation per proxy core: clients alone in
//     their rooms keep chats in flight; msgs/s divided by the proxy
//     process's CPU (router, haproxy and sidecar run as processes of their
//     own: /proc/<pid>/task/*/schedstat).
//  3. Monolith CPU per 1,000 broadcast deliveries in rooms of 50: with the
//     sidecar fanning out (one room_msg per broadcast) against the monolith
//     sending to every client itself (direct, one balancer link and id per
//     client). The monolith is a process of its own (the Node monolith, or
//     the fake in a worker process) so that its CPU is its own.
//  4. Memory per idle connection in the sidecar and in the router, at each
//     level (1k, 5k, 9k): RSS delta of their processes; the idle clients are
//     held by worker processes (`roomlb bench --worker`, JSON requests on
//     stdin, answers on stdout) from source addresses 127.0.0.2 and up, so
//     that no process exceeds its 20,000 files.
//  5. Cold join (place, claim, load) and warm join (the room is loaded: the
//     router's owner lookup), p50 and p99, against the monolith's own join
//     over an open link and a warm join straight to the owner's sidecar.
//  6. Failover: from the kill of a node (its sidecar and monolith at once,
//     nothing released) to the first chat served in each of its rooms
//     elsewhere, with the default heartbeat TTL and a shorter one.
//  7. Drain: from a node's drain to the moment every client of its 100 or
//     1,000 idle rooms is served again on the other nodes (carried over by
//     the router: its new "you" on the same connection; a client closed
//     instead rejoins, and is counted), with the monolith's state debounce
//     cut to 300 ms and the rooms idle past it, so that no room waits for
//     a state write. Then a drain under chat, with the real 5 s debounce on
//     the monolith and the sidecar: 250 rooms (quick: 50) of 4 clients,
//     every client chatting from 6 s before the drain (past the rooms'
//     first state write, 5 s after their load) to a second after the last
//     is back; per client, the closes it saw, its pause (the longest a chat
//     sent from the drain's start on took to reach it: the drain moves each
//     room in its turn, and the room is served until then; p50, p99, max),
//     bracketed by the time from the last chat it received before its new
//     "you" to that "you", and the time from the drain's start to its new
//     "you"; and every chat sent from the drain's start on that did not
//     reach a client of its room. Chat is not
//     stored, so nothing is pending and each room should move at once; a
//     pause near 5 s is a drain that waited for the debounce.
//  8. Redis commands per second of one node holding 10,000 loaded rooms at
//     steady state: INFO commandstats deltas of a Redis that holds only the
//     registry (the monolith's state lives in another).
//  9. The registry at scale: simulated nodes (registry clients in the bench
//     process that heartbeat and keep their rooms with the calls a sidecar
//     makes, at its default intervals; no monoliths) against one Redis, at
//     levels up to 1,000 nodes and 1,000,000 rooms: claims per second at
//     saturation (64 callers), Redis memory per room (each room's
//     metadata written once), Redis commands per second and CPU at rest
//     (INFO deltas), and the time from a node's stop to the first of its
//     rooms a router can take.
//
// Figure 5 runs its roomlb peer on processes, as figures 1 and 2 do: a
// router process and 3 sidecar processes (`roomlb sidecar`), each in front of
// a monolith process of its own (the Node one, or the fake in a worker
// process), over one Redis; the direct baseline's monolith is as in figures
// 1 and 2. In one process, the load generator's and every peer's allocations
// would share one heap, whose GC cycles would show as slow joins; production's
// processes have small heaps of their own. Figures 6 and 7 run on the
// in-process cluster of internal/cluster, which can kill and drain a node:
// their subject is round trips (Redis, claims, loads, handoffs), not a
// process's CPU or memory. Nothing in the package asserts a time; tests check
// that a tiny run's report is complete and sane.
package bench
