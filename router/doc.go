// Package router is roomlb's stateless, room-aware front: clients connect to
// it, and it forwards every room's HTTP requests and WebSocket connections to
// the sidecar of the node that owns the room.
//
// A request about room R (/api/room/R, /api/room/R/...) goes to R's owner,
// found in a local cache that registry events keep fresh (Redis only on a
// miss). A room with no owner is placed on the least-loaded live active node
// (power of two random choices, same region first), and the chosen sidecar
// claims it. /api/room/generate and /api/room/create go to a placed node;
// /api/room/list is answered from the registry's room metadata; /api/status
// is answered by the router; everything else goes to any live active node.
//
// Sidecars answer a router that routed by a stale view with 421 (owned
// elsewhere, X-Roomlb-Owner naming the owner when known), 503 with
// X-Roomlb-Moving (the room is being handed over: the router holds the
// request and retries) or 503 with X-Roomlb-Draining (the node takes no
// placements). An owner that refuses connections and has no heartbeat left
// loses its room at once: the router steals it for a live node.
//
// WebSocket upgrades are validated at the router, handshaken with the
// sidecar, and then relayed as bytes in both directions, following frame
// boundaries from their headers only (frames.go). While a relay only passes
// bytes on, a relay loop does it (loop_linux.go: a few epoll loops per
// process, each a goroutine waiting in epoll_wait, holding no buffer per
// relay); anything else (an end, a failure, a peer that does not read, a
// stop) hands the relay back to two goroutines of its own for the rest of
// its turn (relay.go). When a room's owner lets it go, or a newer owner
// appears, the router carries the room's clients over to the next owner on
// the same client connection (carry.go), or closes them with 1012 where it
// cannot. The router holds no state that it cannot rebuild from Redis
// within a second.
package router
