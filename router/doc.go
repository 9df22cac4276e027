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
// sidecar, and then relayed as bytes in both directions without parsing
// frames. An idle relay holds no buffer: each direction waits for its source
// to be readable in the network poller, then copies through a pooled
// buffer. When a room's owner changes to another node (a higher epoch), the
// router closes the room's clients it relays to the old owner with 1012, so
// that a frozen or cut-off owner does not keep them: they reconnect to the
// new owner. The router holds no state that it cannot rebuild from Redis
// within a second.
package router
