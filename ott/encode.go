package ott

import (
	"strconv"
	"unicode/utf8"
)

// Every message appends its whole envelope, {"type":...,"payload":{...}},
// to dst and returns the extended buffer, like strconv.AppendInt. Field
// order is the monolith's. Raw fields (payloads, RoomMetadata.Raw,
// CurrentSource) are written verbatim and must hold valid JSON; nil is
// written as null.

// Append appends m's envelope to dst.
func (m BalancerInit) Append(dst []byte) []byte {
	dst = append(dst, `{"type":"init","payload":{"id":`...)
	dst = appendString(dst, m.ID)
	return append(dst, "}}"...)
}

// Append appends m's envelope to dst.
func (m Load) Append(dst []byte) []byte {
	dst = append(dst, `{"type":"load","payload":{"room":`...)
	dst = appendString(dst, m.Room)
	return append(dst, "}}"...)
}

// Append appends m's envelope to dst.
func (m Unload) Append(dst []byte) []byte {
	dst = append(dst, `{"type":"unload","payload":{"room":`...)
	dst = appendString(dst, m.Room)
	return append(dst, "}}"...)
}

// Append appends m's envelope to dst.
func (m Join) Append(dst []byte) []byte {
	dst = append(dst, `{"type":"join","payload":{"room":`...)
	dst = appendString(dst, m.Room)
	dst = append(dst, `,"client":`...)
	dst = appendString(dst, m.Client)
	dst = append(dst, `,"token":`...)
	dst = appendString(dst, m.Token)
	return append(dst, "}}"...)
}

// Append appends m's envelope to dst.
func (m Leave) Append(dst []byte) []byte {
	dst = append(dst, `{"type":"leave","payload":{"client":`...)
	dst = appendString(dst, m.Client)
	return append(dst, "}}"...)
}

// Append appends m's envelope to dst. m.Payload is written verbatim.
func (m ClientMsg) Append(dst []byte) []byte {
	dst = append(dst, `{"type":"client_msg","payload":{"client_id":`...)
	dst = appendString(dst, m.ClientID)
	dst = append(dst, `,"payload":`...)
	dst = appendRaw(dst, m.Payload)
	return append(dst, "}}"...)
}

// Append appends m's envelope to dst.
func (m MonolithInit) Append(dst []byte) []byte {
	dst = append(dst, `{"type":"init","payload":{"port":`...)
	dst = strconv.AppendInt(dst, int64(m.Port), 10)
	dst = append(dst, `,"region":`...)
	dst = appendString(dst, m.Region)
	dst = append(dst, `,"id":`...)
	dst = appendString(dst, m.ID)
	return append(dst, "}}"...)
}

// Append appends m's envelope to dst.
func (m Loaded) Append(dst []byte) []byte {
	dst = append(dst, `{"type":"loaded","payload":{"room":`...)
	dst = m.Room.AppendJSON(dst)
	dst = append(dst, `,"load_epoch":`...)
	dst = strconv.AppendInt(dst, m.LoadEpoch, 10)
	return append(dst, "}}"...)
}

// Append appends m's envelope to dst.
func (m Unloaded) Append(dst []byte) []byte {
	dst = append(dst, `{"type":"unloaded","payload":{"name":`...)
	dst = appendString(dst, m.Name)
	dst = append(dst, `,"reason":`...)
	dst = appendString(dst, string(m.Reason))
	return append(dst, "}}"...)
}

// Append appends m's envelope to dst. No rooms is an empty array.
func (m Gossip) Append(dst []byte) []byte {
	dst = append(dst, `{"type":"gossip","payload":{"rooms":[`...)
	for i, r := range m.Rooms {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"room":`...)
		dst = r.Room.AppendJSON(dst)
		dst = append(dst, `,"load_epoch":`...)
		dst = strconv.AppendInt(dst, r.LoadEpoch, 10)
		dst = append(dst, '}')
	}
	return append(dst, "]}}"...)
}

// Append appends m's envelope to dst; client_id is omitted when empty.
// m.Payload is written verbatim.
func (m RoomMsg) Append(dst []byte) []byte {
	dst = append(dst, `{"type":"room_msg","payload":{"room":`...)
	dst = appendString(dst, m.Room)
	if m.ClientID != "" {
		dst = append(dst, `,"client_id":`...)
		dst = appendString(dst, m.ClientID)
	}
	dst = append(dst, `,"payload":`...)
	dst = appendRaw(dst, m.Payload)
	return append(dst, "}}"...)
}

// Append appends m's envelope to dst.
func (m Kick) Append(dst []byte) []byte {
	dst = append(dst, `{"type":"kick","payload":{"client_id":`...)
	dst = appendString(dst, m.ClientID)
	dst = append(dst, `,"reason":`...)
	dst = strconv.AppendInt(dst, int64(m.Reason), 10)
	return append(dst, "}}"...)
}

// AppendJSON appends the metadata object (not an envelope) to dst: Raw
// verbatim when set, else the fields.
func (r *RoomMetadata) AppendJSON(dst []byte) []byte {
	if len(r.Raw) > 0 {
		return append(dst, r.Raw...)
	}
	dst = append(dst, `{"name":`...)
	dst = appendString(dst, r.Name)
	dst = append(dst, `,"title":`...)
	dst = appendString(dst, r.Title)
	dst = append(dst, `,"description":`...)
	dst = appendString(dst, r.Description)
	dst = append(dst, `,"isTemporary":`...)
	dst = strconv.AppendBool(dst, r.IsTemporary)
	dst = append(dst, `,"visibility":`...)
	dst = appendString(dst, r.Visibility)
	dst = append(dst, `,"queueMode":`...)
	dst = appendString(dst, r.QueueMode)
	dst = append(dst, `,"currentSource":`...)
	dst = appendRaw(dst, r.CurrentSource)
	dst = append(dst, `,"users":`...)
	dst = strconv.AppendInt(dst, int64(r.Users), 10)
	return append(dst, '}')
}

// Append appends the message m.Type names to dst. A B2M of no known type
// appends nothing.
func (m *B2M) Append(dst []byte) []byte {
	switch m.Type {
	case TypeInit:
		return m.Init.Append(dst)
	case TypeLoad:
		return m.Load.Append(dst)
	case TypeUnload:
		return m.Unload.Append(dst)
	case TypeJoin:
		return m.Join.Append(dst)
	case TypeLeave:
		return m.Leave.Append(dst)
	case TypeClientMsg:
		return m.ClientMsg.Append(dst)
	}
	return dst
}

// Append appends the message m.Type names to dst. An M2B of no known type
// appends nothing.
func (m *M2B) Append(dst []byte) []byte {
	switch m.Type {
	case TypeInit:
		return m.Init.Append(dst)
	case TypeLoaded:
		return m.Loaded.Append(dst)
	case TypeUnloaded:
		return m.Unloaded.Append(dst)
	case TypeGossip:
		return m.Gossip.Append(dst)
	case TypeRoomMsg:
		return m.RoomMsg.Append(dst)
	case TypeKick:
		return m.Kick.Append(dst)
	}
	return dst
}

func appendRaw(dst, raw []byte) []byte {
	if len(raw) == 0 {
		return append(dst, "null"...)
	}
	return append(dst, raw...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Unlike strconv.AppendQuote, the
// result is always valid JSON: control characters become \n-style or \u00XX
// escapes (never \x or \a), invalid UTF-8 becomes \ufffd, and U+2028/U+2029
// are escaped (valid JSON either way, but not inside JavaScript source).
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
