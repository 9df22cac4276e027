package ott

import "bytes"

// RoomPrefix starts the client paths of a room (ott-protocol.md §4.1).
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
