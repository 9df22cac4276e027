// Package sidecar is the roomlb process that runs next to one monolith.
//
// Towards the monolith it plays the OpenTogetherTube balancer: it dials the
// monolith's balancer port and keeps one multiplexed WebSocket link, maps
// each client to join / leave / client_msg, and fans the monolith's room
// broadcasts out to the room's clients itself (the monolith sends one
// message per broadcast). Towards Redis it registers the node, claims every
// room its monolith holds in the session of the node's heartbeat key (a room
// is the node's for as long as that key lives, with no renewal of its own),
// and stops serving every room (unloads it, closes its clients) before the
// key can run out when it cannot refresh it. Towards the routers it serves the clients' WebSockets and
// passes HTTP through to the monolith, refusing rooms it does not own.
// On SIGTERM (or an admin request) it drains: every room is handed to other
// nodes with its latest state in Redis before the sidecar exits.
//
// The parts, each a type of its own:
//
//   - table (table.go): the rooms, their leases, clients and what is in
//     flight for them, under one lock. What must run under the lock is a
//     method of locked, which only Sidecar.lock returns; the rules that keep
//     a room safe (a fenced or released lease is never adopted again, a
//     room leaves the table before its release is sent) are kept there
//     (room.go, carry.go, and dispatch.go for the monolith's messages).
//   - presence (presence.go): the node's heartbeat key in Redis, the life
//     of it every room is bound to, and the lock that orders heartbeats.
//   - link (link.go): the connection to the monolith's balancer port, its
//     writer and reader.
//   - ingress (ingress.go, upgrade.go): the HTTP side routers talk to;
//     client (client.go): one client's WebSocket.
//   - handoffs (node.go, drain.go): rooms offered to and taken from other
//     nodes; serveLog (servelog.go); clock (clock.go), the lease clock.
//   - Sidecar (sidecar.go): the wiring, Run, and the loops that fence and
//     re-claim leases (leases.go) and keep the registry current (node.go).
package sidecar
