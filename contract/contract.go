// Package contract is what routers and sidecars agree on: the headers a
// router sends a sidecar and the answers it reads back, and the WebSocket
// close codes roomlb sends clients. Both sides import it; neither defines
// its own copy.
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
)

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
	// CloseServiceRestart: the room moved or its node is going away;
	// reconnect, the routers take the client to the room's next owner.
	CloseServiceRestart = 1012
	// CloseTryAgain: the room could not be loaded in time; reconnect.
	CloseTryAgain = 1013
)
