// Package contract is what routers and sidecars agree on: the headers a
// router sends a sidecar and the answers it reads back, the WebSocket close
// codes roomlb sends clients, and which client paths name a room (path.go).
// Both sides import it; neither defines its own copy.
//
// A router forwards each request for a room to the sidecar of the room's
// owner with HeaderSecret and, when it routed by the registry, HeaderEpoch
// (the owner's epoch it read); HeaderPlace when it chose the node for a
// room nobody owns. The sidecar answers, besides the monolith's own
// responses:
//
//	403                      the secret is missing or wrong
//	421 + HeaderOwner        another node owns the room ("node:epoch")
//	503 + HeaderMoving       the room is being handed over: hold and retry
//	503 + HeaderDraining     the node takes no placements: place elsewhere
//
// Every header of the contract starts with InternalPrefix: routers drop
// clients' headers with it and pass none of the sidecars' to clients but
// HeaderNode.
package contract

import (
	"bytes"
	"strconv"
)

// The headers of the router-sidecar contract.
const (
	// HeaderSecret carries the shared secret from routers to sidecars.
	HeaderSecret = "X-Roomlb-Secret"
	// HeaderEpoch is the owner epoch the router routed by; absent when
	// placing.
	HeaderEpoch = "X-Roomlb-Epoch"
	// HeaderPlace is "1" when the router chose the node for a room with no
	// owner (and on /api/room/generate and /api/room/create).
	HeaderPlace = "X-Roomlb-Place"
	// HeaderOwner on a sidecar's 421 names the owner as "node:epoch".
	HeaderOwner = "X-Roomlb-Owner"
	// HeaderMoving on a sidecar's 503: the room is being handed over.
	HeaderMoving = "X-Roomlb-Moving"
	// HeaderDraining on a sidecar's 503: the node takes no placements.
	HeaderDraining = "X-Roomlb-Draining"
	// HeaderNode names, on responses, the node that served the request
	// (informational; the only header of the contract clients see).
	HeaderNode = "X-Roomlb-Node"
	// HeaderCarried is on a WebSocket handshake that carries a client over
	// from the room's previous owner: the router kept the client's
	// connection and replays its auth frame. Its value is the number of
	// clients the room had there, as that owner's close said (see
	// MovedReason), or 0 when it did not say. The sidecar does not pass on
	// the monolith's join event for the client, so that the room's users
	// see no "joined" for somebody who never left, and holds the room's
	// client messages until the others are back.
	HeaderCarried = "X-Roomlb-Carried"
)

// DefaultMaxFrame is the largest client message (all its frames together)
// sidecars and routers pass on by default; a larger one ends its client
// with CloseTooBig.
const DefaultMaxFrame = 64 << 10

// InternalPrefix starts every header of the contract, in lower case.
const InternalPrefix = "x-roomlb-"

// WebSocket close codes roomlb sends clients (RFC 6455 §7.4.1 and the IANA
// registry). The OpenTogetherTube web client reconnects on any code below
// 4000; codes from 4000 up are the monolith's own and pass through.
const (
	CloseNormal      = 1000
	CloseGoingAway   = 1001
	CloseProtocol    = 1002
	CloseInvalidData = 1007 // a text frame that is not UTF-8
	CloseTooBig      = 1009
	// CloseServiceRestart: the room continues elsewhere (it moves, its
	// node is going away, its monolith was lost). Sent by a sidecar, it
	// tells the router to carry the client over to the room's next owner
	// without passing the close on; a client that gets it (from a router
	// that could not carry it, or is shutting down) reconnects, and the
	// routers take it to the room's next owner.
	CloseServiceRestart = 1012
	// CloseTryAgain: the room could not be loaded in time; reconnect.
	CloseTryAgain = 1013
)

// The reason of a sidecar's CloseServiceRestart ends with
// " (roomlb clients=C got=N)": the room had C clients, and the sidecar
// passed on the first N messages the client sent after its auth frame
// (those after, a router carrying the client over sends to the next
// owner).
const (
	movedTag = " (roomlb clients="
	gotTag   = " got="
)

// MovedReason is the reason of a CloseServiceRestart for a client of a room
// that had clients clients, got of whose messages went to the monolith.
func MovedReason(text string, clients, got int) string {
	return text + movedTag + strconv.Itoa(clients) + gotTag + strconv.Itoa(got) + ")"
}

// ParseMoved reads the counts of a reason made by MovedReason; ok is false
// for any other reason.
func ParseMoved(reason []byte) (clients, got int, ok bool) {
	i := bytes.LastIndex(reason, []byte(movedTag))
	if i < 0 || reason[len(reason)-1] != ')' {
		return 0, 0, false
	}
	c, g, found := bytes.Cut(reason[i+len(movedTag):len(reason)-1], []byte(gotTag))
	if !found {
		return 0, 0, false
	}
	clients, err1 := strconv.Atoi(string(c))
	got, err2 := strconv.Atoi(string(g))
	if err1 != nil || err2 != nil || clients < 0 || got < 0 {
		return 0, 0, false
	}
	return clients, got, true
}
