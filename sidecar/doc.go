// Package sidecar is the roomlb process that runs next to one monolith.
//
// Towards the monolith it plays the OpenTogetherTube balancer: it dials the
// monolith's balancer port and keeps one multiplexed WebSocket link, maps
// each client to join / leave / client_msg, and fans the monolith's room
// broadcasts out to the room's clients itself (the monolith sends one
// message per broadcast). Towards Redis it registers the node, claims every
// room its monolith holds, renews the leases in batches, and stops serving a
// room (unloads it, closes its clients) before its lease can run out when it
// cannot renew. Towards the routers it serves the clients' WebSockets and
// passes HTTP through to the monolith, refusing rooms it does not own.
// On SIGTERM (or an admin request) it drains: every room is handed to other
// nodes with its latest state in Redis before the sidecar exits.
package sidecar
