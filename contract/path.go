package contract

import (
	"bytes"
	"encoding/hex"
)

// RoomPrefix starts the client paths of a room (ott/PROTOCOL.md §5.1).
const RoomPrefix = "/api/room/"

// RoomSegment returns the room segment of a client path: <seg> of
// /api/room/<seg>, /api/room/<seg>/ or /api/room/<seg>/<anything>, raw (not
// percent-decoded, not validated; it may be empty). The prefix matches
// ASCII case-insensitively, as the monolith's own routes do. It reports
// false for any other path and does not allocate.
func RoomSegment(path []byte) ([]byte, bool) {
	if !hasPrefixFold(path, RoomPrefix) {
		return nil, false
	}
	seg := path[len(RoomPrefix):]
	if i := bytes.IndexByte(seg, '/'); i >= 0 {
		seg = seg[:i]
	}
	return seg, true
}

// HasPrefixFold reports whether b starts with prefix, ignoring ASCII case;
// prefix must be lower case.
func HasPrefixFold(b []byte, prefix string) bool { return hasPrefixFold(b, prefix) }

func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

// AmbiguousPath reports whether a raw (still percent-encoded) client path
// could be read as another path by one of the servers it goes through:
// path normalization (RFC 3986 section 6.2.2, as fasthttp's URI.Path() does
// it for the sidecar) rewrites no leading '/', an empty segment ("//"), a
// dot segment ("/./", "/../", a trailing "/." or "/.."), and a
// percent-encoded '/' or unreserved character (letter, digit, '-', '.',
// '_', '~'; "%2e", "%2F", "%61"); and Node's URL parser, which serves the
// monolith, reads a backslash ('\' or "%5C") as '/'. Such a path could be
// routed as one room and served as another, or name a room or an endpoint
// the router would not see. Escapes of other characters are decoded too,
// but cannot form a path segment separator, a dot segment, a room name or
// a route prefix. Routers refuse these paths before any lookup, sidecars
// again before they pass a request on. It does not allocate.
func AmbiguousPath(path []byte) bool {
	if len(path) > 0 && path[0] != '/' {
		return true
	}
	for i := 0; i < len(path); i++ {
		switch path[i] {
		case '/':
			// The segment after this slash.
			end := i + 1
			for end < len(path) && path[end] != '/' {
				end++
			}
			switch string(path[i+1 : end]) {
			case ".", "..":
				return true
			case "":
				if end < len(path) {
					return true // "//"
				}
			}
		case '\\':
			return true
		case '%':
			var c [1]byte
			if i+2 < len(path) {
				if _, err := hex.Decode(c[:], path[i+1:i+3]); err == nil && (c[0] == '/' || c[0] == '\\' || unreserved(c[0])) {
					return true
				}
			}
		}
	}
	return false
}

// unreserved reports whether c is an unreserved URI character (RFC 3986
// section 2.3).
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
