package ott

import (
	"bytes"
	"encoding/json"
)

// Client frames the sidecar looks into when a router carries a client over
// from a room's previous owner (ott/PROTOCOL.md §4.3): the join sequence
// ends with a unicast {"action":"you",...}, and its broadcast
// {"action":"event","request":{"type":0,...},"user":{"id":CLIENT,...}}
// makes every web client in the room show "NAME joined the room".

// requestJoin is the room request type of a join (§5.3).
const requestJoin = 0

// IsYou reports whether payload is a "you" message, the last of a join
// sequence.
func IsYou(payload []byte) bool {
	if !bytes.Contains(payload, []byte(`"you"`)) {
		return false
	}
	var m struct {
		Action string `json:"action"`
	}
	return json.Unmarshal(payload, &m) == nil && m.Action == "you"
}

// JoinEventClient returns the client id of a join event; ok is false for
// any other payload.
func JoinEventClient(payload []byte) (id string, ok bool) {
	if !bytes.Contains(payload, []byte(`"event"`)) {
		return "", false
	}
	var m struct {
		Action  string `json:"action"`
		Request struct {
			Type *int `json:"type"`
		} `json:"request"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	if json.Unmarshal(payload, &m) != nil || m.Action != "event" || m.Request.Type == nil ||
		*m.Request.Type != requestJoin || m.User.ID == "" {
		return "", false
	}
	return m.User.ID, true
}
