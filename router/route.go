package router

import (
	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/registry"
)

// route is what a request path asks for.
type route uint8

const (
	routeOther    route = iota // anything else: any live active node
	routeRoom                  // /api/room/<name>[/...]: the room's owner
	routePlace                 // /api/room/generate, /api/room/create: a placed node
	routeList                  // /api/room/list: answered from the registry
	routeStatus                // /api/status: answered by the router
	routeBadRoom               // /api/room/<not a room name>: 400
	routeBadPath               // a path the sidecar would read differently (normalized): 400
	routeInternal              // a sidecar's own endpoint (admin, health, metrics): 404, never forwarded
	numRoutes
)

var routeNames = [numRoutes]string{"other", "room", "place", "list", "status", "bad_room", "bad_path", "internal"}

func (r route) String() string { return routeNames[r] }

const statusPath = "/api/status"

// roomKey is a room name in key form (lower case), held without allocating.
type roomKey struct {
	n   uint8
	buf [registry.MaxRoomLen]byte
}

func (k *roomKey) bytes() []byte { return k.buf[:k.n] }

// set validates name by registry.RoomKey's rule (1 to MaxRoomLen bytes of
// ASCII letters, digits, '_' and '-') and stores its lower-case form. It
// reports whether name is valid. FuzzParsePath checks that it agrees with
// registry.RoomKey on every input; it exists because RoomKey takes and
// returns a string, which would cost an allocation per request.
func (k *roomKey) set(name []byte) bool {
	if len(name) == 0 || len(name) > registry.MaxRoomLen {
		return false
	}
	for i, c := range name {
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '_', c == '-':
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		default:
			return false
		}
		k.buf[i] = c
	}
	k.n = uint8(len(name))
	return true
}

// parsePath classifies a request path as sent by the client (not
// percent-decoded, not normalized), which is what the router forwards. The
// sidecar routes on the normalized path (fasthttp's ctx.Path()), so a path
// that normalizing would change in a way that matters is routeBadPath (see
// contract.AmbiguousPath). The prefixes match ASCII case-insensitively, as the
// monolith's own routes do; the special room segments list, generate and
// create match exactly, as OpenTogetherTube reserves them (so "List" is an
// ordinary room). For routeRoom it fills key. It does not allocate.
func parsePath(path []byte, key *roomKey) route {
	if contract.AmbiguousPath(path) {
		return routeBadPath
	}
	return routeOf(path, key)
}

// routeOf classifies a path that contract.AmbiguousPath does not refuse.
func routeOf(path []byte, key *roomKey) route {
	if seg, ok := contract.RoomSegment(path); ok {
		switch string(seg) {
		case "list":
			return routeList
		case "generate", "create":
			return routePlace
		}
		if !key.set(seg) {
			return routeBadRoom
		}
		return routeRoom
	}
	if isInternal(path) {
		return routeInternal
	}
	if len(path) == len(statusPath) || (len(path) == len(statusPath)+1 && path[len(statusPath)] == '/') {
		if contract.HasPrefixFold(path, statusPath) {
			return routeStatus
		}
	}
	return routeOther
}

// internalPaths are served by the sidecar itself on its ingress, behind
// the shared secret the router adds to every request it forwards: a client
// must never reach them through a router (POST /admin/drain would drain a
// node).
var internalPaths = []string{"/admin", "/healthz", "/readyz", "/metrics"}

// isInternal reports whether path is one of internalPaths or under one,
// ASCII case-insensitively.
func isInternal(path []byte) bool {
	for _, p := range internalPaths {
		if len(path) >= len(p) && contract.HasPrefixFold(path, p) && (len(path) == len(p) || path[len(p)] == '/') {
			return true
		}
	}
	return false
}
