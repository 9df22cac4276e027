package registry

import (
	"fmt"
	"strings"
)

// MaxRoomLen is the longest room name accepted. OpenTogetherTube allows 32
// characters for chosen names and 36 for generated (UUID) ones; 64 leaves room
// without letting a name grow keys without bound.
const MaxRoomLen = 64

// MaxNodeLen is the longest node id accepted (Nomad allocation ids are 36).
const MaxNodeLen = 128

// RoomKey validates a room name and returns the form used in keys and
// events: lower case. Names are ASCII letters, digits, '_' and '-'; anything
// else is refused before it reaches Redis.
func RoomKey(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty", ErrBadRoom)
	}
	if len(name) > MaxRoomLen {
		return "", fmt.Errorf("%w: %d bytes, at most %d", ErrBadRoom, len(name), MaxRoomLen)
	}
	lower := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '_', c == '-':
		case 'A' <= c && c <= 'Z':
			lower = false
		default:
			return "", fmt.Errorf("%w: byte %q at %d (allowed: A-Z a-z 0-9 _ -)", ErrBadRoom, c, i)
		}
	}
	if lower {
		return name, nil
	}
	return strings.ToLower(name), nil
}

// ValidNode reports whether id can be a node id: 1 to MaxNodeLen of ASCII
// letters, digits, '.', '_' and '-' (no ':', which separates it from the
// epoch in owner values).
func ValidNode(id string) error {
	if err := validID(id, MaxNodeLen); err != nil {
		return fmt.Errorf("%w: %v", ErrBadNode, err)
	}
	return nil
}

// validSession checks a heartbeat session id: it is part of owner values
// "node:session:epoch", so the node id's alphabet, which has no colon.
func validSession(s string) error {
	if err := validID(s, MaxNodeLen); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSession, err)
	}
	return nil
}

func validID(id string, most int) error {
	if id == "" || len(id) > most {
		return fmt.Errorf("length %d, want 1 to %d", len(id), most)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-', c == '.':
		default:
			return fmt.Errorf("byte %q at %d (allowed: A-Z a-z 0-9 . _ -)", c, i)
		}
	}
	return nil
}
