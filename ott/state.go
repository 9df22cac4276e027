package ott

// What the monolith writes to Redis. OpenTogetherTube writes a room's state
// (room:NAME) a debounce after the last change of a storable property, and
// sends each change to the balancers with clients in the room as a `sync`
// broadcast carrying it; chat, user lists and votes are not storable
// (ott/PROTOCOL.md §7). A sidecar that hands a room over must wait for the
// write of its last change, and need wait for nothing else: these two
// functions tell the frames that may bring a write from those that cannot.

// storable reports whether key is a room property the monolith stores.
// playbackPosition alone is left out: every join broadcasts the position
// as a sync without changing it; a seek, which does change it, comes from
// a client request (see RequestChangesState).
func storable(key []byte) bool {
	switch string(key) {
	case "name", "title", "description", "isTemporary", "visibility", "queueMode", "currentSource",
		"queue", "isPlaying", "playbackSpeed", "grants", "userRoles", "owner", "_playbackStart",
		"videoSegments", "autoSkipSegmentCategories", "prevQueue", "restoreQueueBehavior", "enableVoteSkip":
		return true
	}
	return false
}

// BroadcastChangesState reports whether a room broadcast's payload is a
// `sync` carrying a storable property: the monolith writes the room a
// debounce later. A payload that cannot be read counts as a change. It does
// not allocate for keys without escapes.
func BroadcastChangesState(payload []byte) bool {
	s := scanner{data: payload}
	if !s.openObject() {
		return true
	}
	isSync, changes := false, false
	for first := true; ; {
		key, ok, err := s.nextKey(&first, true)
		if err != nil {
			return true
		}
		if !ok {
			break
		}
		v, err := s.value()
		if err != nil {
			return true
		}
		switch {
		case string(key) == "action":
			isSync = string(v) == `"sync"`
		case storable(key):
			changes = true
		}
	}
	return isSync && changes
}

// RequestChangesState reports whether a client frame may change a storable
// property of its room: every frame but those known not to (a request to
// join, leave, vote, update the user or chat; a player status; kickme;
// notify). A frame that cannot be read counts as a change.
func RequestChangesState(payload []byte) bool {
	s := scanner{data: payload}
	if !s.openObject() {
		return true
	}
	var action []byte
	typ := int64(-1)
	for first := true; ; {
		key, ok, err := s.nextKey(&first, true)
		if err != nil {
			return true
		}
		if !ok {
			break
		}
		if string(key) == "request" && s.openObject() {
			for first := true; ; {
				k, ok, err := s.nextKey(&first, false)
				if err != nil {
					return true
				}
				if !ok {
					break
				}
				v, err := s.value()
				if err != nil {
					return true
				}
				if string(k) == "type" {
					if n, ok := parseInt(v); ok {
						typ = n
					}
				}
			}
			continue
		}
		v, err := s.value()
		if err != nil {
			return true
		}
		if string(key) == "action" {
			action = v
		}
	}
	switch string(action) {
	case `"status"`, `"kickme"`, `"notify"`:
		return false
	case `"req"`:
		switch typ {
		case 0, 1, 8, 10, 11: // join, leave, vote, update user, chat
			return false
		}
	}
	return true
}
