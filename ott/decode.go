package ott

// Decoder decodes the frames of one link, reusing the strings of room names
// and client ids it has seen, so that decoding the frames of known rooms and
// clients does not allocate. The zero value is ready to use. A Decoder is not
// safe for concurrent use: keep one per reading goroutine.
type Decoder struct {
	strs map[string]string
}

// maxInterned bounds a Decoder's memory: when full, it starts over.
const maxInterned = 1 << 14

// maxInternLen keeps tokens and other long strings out of the table.
const maxInternLen = 128

func (d *Decoder) intern(b []byte) string {
	if len(b) > maxInternLen {
		return string(b)
	}
	if s, ok := d.strs[string(b)]; ok {
		return s
	}
	if d.strs == nil {
		d.strs = make(map[string]string)
	} else if len(d.strs) >= maxInterned {
		clear(d.strs)
	}
	s := string(b)
	d.strs[s] = s
	return s
}

// DecodeM2B parses one monolith-to-balancer frame.
//
// The checks are those of the upstream balancer: the envelope must be an
// object with a known M2B type and an object payload whose fields have the
// documented JSON types (room_msg.client_id may be absent or null). There
// are two deliberate leniencies: kick.reason is echoed unvalidated by the
// monolith, so any value is accepted (a non-integer decodes as 0), and
// RoomMetadata only requires "name" (other fields of an unexpected type stay
// zero; Raw keeps them). Unknown fields are ignored; of repeated keys the last
// counts, as in JSON.parse.
//
// RoomMsg.Payload, RoomMetadata.Raw and RoomMetadata.CurrentSource alias
// data: copy them to keep them after data is reused.
func DecodeM2B(data []byte) (M2B, error) {
	return (*Decoder)(nil).DecodeM2B(data)
}

// DecodeB2M parses one balancer-to-monolith frame with the monolith's checks
// (ott/PROTOCOL.md §3.1): the envelope must be an object with a known B2M
// type and an object payload, the checked fields must be strings, and
// client_msg.payload must be an object, an array or null. join.token is not
// checked: anything but a string decodes as "". ClientMsg.Payload aliases
// data.
func DecodeB2M(data []byte) (B2M, error) {
	return (*Decoder)(nil).DecodeB2M(data)
}

// DecodeM2B is DecodeM2B reusing the Decoder's strings. A nil Decoder
// works and reuses nothing.
func (d *Decoder) DecodeM2B(data []byte) (M2B, error) {
	var m M2B
	s := scanner{data: data, strs: d}
	if err := s.envelope(&m, nil); err != nil {
		return M2B{}, err
	}
	return m, nil
}

// DecodeB2M is DecodeB2M reusing the Decoder's strings. A nil Decoder
// works and reuses nothing.
func (d *Decoder) DecodeB2M(data []byte) (B2M, error) {
	var m B2M
	s := scanner{data: data, strs: d}
	if err := s.envelope(nil, &m); err != nil {
		return B2M{}, err
	}
	return m, nil
}

// envelope reads {"type":..., "payload":...} into m2b or b2m, whichever is
// not nil. Frames put "type" first, so the payload is normally decoded in
// place, in the same pass; a payload that comes first, or a repeated key, is
// decoded after the whole frame has been validated.
func (s *scanner) envelope(m2b *M2B, b2m *B2M) error {
	known := Type.isB2M
	if m2b != nil {
		known = Type.isM2B
	}
	// payload decodes the payload at s.pos as type t.
	payload := func(s *scanner, t Type) error {
		if m2b != nil {
			*m2b = M2B{Type: t}
			return s.m2b(t, m2b)
		}
		*b2m = B2M{Type: t}
		return s.b2m(t, b2m)
	}
	if !s.openObject() {
		if _, err := s.value(); err != nil {
			return err
		}
		if err := s.end(); err != nil {
			return err
		}
		return envelopeError("not an object")
	}
	var (
		typ        Type
		typeName   []byte // the last "type" string, for the error
		typeString bool   // the last "type" was a string
		pStart     = -1   // the last "payload": data[pStart:pEnd]
		pEnd       int
		decoded    = -1 // pStart of the payload decoded in place, as typ
	)
	first := true
	for {
		key, ok, err := s.nextKey(&first, true)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		switch string(key) {
		case "type":
			if s.peek() != '"' {
				if _, err := s.value(); err != nil {
					return err
				}
				typeString, typ, decoded = false, 0, -1
				continue
			}
			raw, special, err := s.stringBytes()
			if err != nil {
				return err
			}
			typeName = raw
			if special {
				typeName = unescape(nil, raw)
			}
			typeString, decoded = true, -1
			if typ = typeOf(typeName); !known(typ) {
				typ = 0
			}
		case "payload":
			s.ws()
			start, depth := s.pos, s.depth
			if typ != 0 && s.peek() == '{' {
				if err := payload(s, typ); err == nil {
					pStart, pEnd, decoded = start, s.pos, start
					continue
				}
				// Decode it again at the end, where a syntax error later in
				// the frame takes precedence over this one.
				s.pos, s.depth = start, depth
			}
			if _, err := s.value(); err != nil {
				return err
			}
			pStart, pEnd, decoded = start, s.pos, -1
		default:
			if _, err := s.value(); err != nil {
				return err
			}
		}
	}
	if err := s.end(); err != nil {
		return err
	}
	switch {
	case !typeString:
		return envelopeError("type is not a string")
	case pStart < 0:
		return envelopeError("no payload")
	case typ == 0:
		return &unknownTypeError{name: string(typeName)}
	case s.data[pStart] != '{':
		return envelopeError("payload is not an object")
	case decoded == pStart:
		return nil
	}
	sub := scanner{data: s.data[:pEnd], pos: pStart, strs: s.strs}
	return payload(&sub, typ)
}

func (s *scanner) b2m(t Type, m *B2M) error {
	f := fields{s: s, t: t}
	for f.next() {
		switch f.key() {
		case "id":
			if t == TypeInit {
				m.Init.ID = f.str(1)
				continue
			}
		case "room":
			switch t {
			case TypeLoad:
				m.Load.Room = f.id(1)
				continue
			case TypeUnload:
				m.Unload.Room = f.id(1)
				continue
			case TypeJoin:
				m.Join.Room = f.id(1)
				continue
			}
		case "client":
			switch t {
			case TypeJoin:
				m.Join.Client = f.id(2)
				continue
			case TypeLeave:
				m.Leave.Client = f.id(1)
				continue
			}
		case "token":
			if t == TypeJoin {
				// Unchecked by the monolith: a token of another type is
				// treated as missing.
				m.Join.Token = ""
				if f.s.peek() == '"' {
					m.Join.Token = f.str(0)
				} else {
					f.skip()
				}
				continue
			}
		case "client_id":
			if t == TypeClientMsg {
				m.ClientMsg.ClientID = f.id(1)
				continue
			}
		case "payload":
			if t == TypeClientMsg {
				// typeof payload === "object": an object, an array or null.
				if c := f.s.peek(); c != '{' && c != '[' && c != 'n' {
					f.fail("payload", "not an object")
					continue
				}
				m.ClientMsg.Payload = f.raw(2)
				continue
			}
		}
		f.skip()
	}
	switch t {
	case TypeInit:
		f.require(1, "id")
	case TypeLoad, TypeUnload:
		f.require(1, "room")
	case TypeJoin:
		f.require(1, "room")
		f.require(2, "client")
	case TypeLeave:
		f.require(1, "client")
	case TypeClientMsg:
		f.require(1, "client_id")
		f.require(2, "payload")
	}
	return f.err
}

func (s *scanner) m2b(t Type, m *M2B) error {
	switch t {
	case TypeLoaded:
		return s.loaded(t, "", &m.Loaded.Room, &m.Loaded.LoadEpoch)
	case TypeGossip:
		return s.gossip(&m.Gossip)
	}
	f := fields{s: s, t: t}
	for f.next() {
		switch t {
		case TypeInit:
			switch f.key() {
			case "port":
				m.Init.Port = int(f.integer(1))
				continue
			case "region":
				m.Init.Region = f.str(2)
				continue
			case "id":
				m.Init.ID = f.str(4)
				continue
			}
		case TypeUnloaded:
			switch f.key() {
			case "name":
				m.Unloaded.Name = f.id(1)
				continue
			case "reason":
				m.Unloaded.Reason = UnloadReason(f.reason(2))
				continue
			}
		case TypeRoomMsg:
			switch f.key() {
			case "room":
				m.RoomMsg.Room = f.id(1)
				continue
			case "client_id":
				m.RoomMsg.ClientID = ""
				if f.s.peek() == 'n' {
					f.skip()
				} else {
					m.RoomMsg.ClientID = f.id(0)
				}
				continue
			case "payload":
				m.RoomMsg.Payload = f.raw(2)
				continue
			}
		case TypeKick:
			switch f.key() {
			case "client_id":
				m.Kick.ClientID = f.id(1)
				continue
			case "reason":
				m.Kick.Reason = f.lenientInt(2)
				continue
			}
		}
		f.skip()
	}
	switch t {
	case TypeInit:
		f.require(1, "port")
		f.require(2, "region")
		f.require(4, "id")
	case TypeUnloaded:
		f.require(1, "name")
		f.require(2, "reason")
	case TypeRoomMsg:
		f.require(1, "room")
		f.require(2, "payload")
	case TypeKick:
		f.require(1, "client_id")
		f.require(2, "reason")
	}
	return f.err
}

// loaded reads the payload of loaded, or one entry of gossip (prefix
// "rooms[].").
func (s *scanner) loaded(t Type, prefix string, room *RoomMetadata, epoch *int64) error {
	f := fields{s: s, t: t, prefix: prefix}
	for f.next() {
		switch f.key() {
		case "room":
			if f.err == nil {
				if err := s.metadata(t, prefix+"room", room); err != nil {
					f.err = err
				}
				f.seen |= 1
			}
			continue
		case "load_epoch":
			*epoch = f.integer(2)
			continue
		}
		f.skip()
	}
	f.require(1, "room")
	f.require(2, "load_epoch")
	return f.err
}

func (s *scanner) gossip(g *Gossip) error {
	f := fields{s: s, t: TypeGossip}
	for f.next() {
		if f.key() != "rooms" {
			f.skip()
			continue
		}
		f.seen |= 1
		if !s.openArray() {
			f.fail("rooms", "not an array")
			continue
		}
		g.Rooms = g.Rooms[:0]
		first := true
		for {
			ok, err := s.nextElem(&first)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			var r GossipRoom
			if err := s.loaded(TypeGossip, "rooms[].", &r.Room, &r.LoadEpoch); err != nil {
				return err
			}
			g.Rooms = append(g.Rooms, r)
		}
		if g.Rooms == nil {
			g.Rooms = []GossipRoom{}
		}
	}
	f.require(1, "rooms")
	return f.err
}

// metadata reads a RoomMetadata object; only "name" is required.
func (s *scanner) metadata(t Type, field string, r *RoomMetadata) error {
	s.ws()
	start := s.pos
	if s.peek() != '{' {
		if _, err := s.value(); err != nil {
			return err
		}
		return &FieldError{Type: t, Field: field, Problem: "not an object"}
	}
	*r = RoomMetadata{}
	f := fields{s: s, t: t, prefix: field + "."}
	for f.next() {
		c := s.peek()
		switch f.key() {
		case "name":
			r.Name = f.id(1)
			continue
		case "title":
			if c == '"' {
				r.Title = f.str(0)
				continue
			}
		case "description":
			if c == '"' {
				r.Description = f.str(0)
				continue
			}
		case "isTemporary":
			if c == 't' || c == 'f' {
				r.IsTemporary = f.boolean()
				continue
			}
		case "visibility":
			if c == '"' {
				r.Visibility = f.reason(0)
				continue
			}
		case "queueMode":
			if c == '"' {
				r.QueueMode = f.reason(0)
				continue
			}
		case "currentSource":
			r.CurrentSource = f.raw(0)
			if c == 'n' {
				r.CurrentSource = nil
			}
			continue
		case "users":
			r.Users = f.lenientInt(0)
			continue
		}
		f.skip()
	}
	f.require(1, "name")
	if f.err == nil {
		r.Raw = s.data[start:s.pos]
	}
	return f.err
}

// fields walks the members of one payload object, recording the first
// problem and which required fields were seen. After a problem it only
// validates the rest of the object.
type fields struct {
	s      *scanner
	t      Type
	prefix string // for nested objects' field names
	first  bool
	opened bool
	k      []byte
	seen   uint8 // bits of required fields seen
	err    error
}

// next moves to the next member; false at the end of the object or on a
// syntax error.
func (f *fields) next() bool {
	if !f.opened {
		f.opened, f.first = true, true
		if !f.s.openObject() {
			if f.err == nil {
				f.err = &FieldError{Type: f.t, Field: f.prefix + "payload", Problem: "not an object"}
			}
			return false
		}
	}
	if _, isSyntax := f.err.(*SyntaxError); isSyntax {
		return false
	}
	k, ok, err := f.s.nextKey(&f.first, true)
	if err != nil {
		f.err = err
		return false
	}
	f.k = k
	return ok
}

// key is the current member's key; valid until the next call of next. It
// is "" after a problem, so that the rest of the object is only skipped.
func (f *fields) key() string {
	if f.err != nil {
		return ""
	}
	return string(f.k)
}

func (f *fields) fail(field, problem string) {
	if f.err == nil {
		f.err = &FieldError{Type: f.t, Field: f.prefix + field, Problem: problem}
	}
	f.skip()
}

// skip skips the current member's value.
func (f *fields) skip() {
	if _, err := f.s.value(); err != nil {
		f.err = err
	}
}

func (f *fields) require(bit uint8, field string) {
	if f.err == nil && bit != 0 && f.seen&bit == 0 {
		f.err = &FieldError{Type: f.t, Field: f.prefix + field, Problem: "missing"}
	}
}

func (f *fields) isString(bit uint8) bool {
	if f.s.peek() != '"' {
		f.fail(string(f.k), "not a string")
		return false
	}
	f.seen |= bit
	return true
}

func (f *fields) str(bit uint8) string {
	if !f.isString(bit) {
		return ""
	}
	v, err := f.s.str()
	if err != nil {
		f.err = err
	}
	return v
}

// id reads a room name or client id, reused by a Decoder.
func (f *fields) id(bit uint8) string {
	if !f.isString(bit) {
		return ""
	}
	v, err := f.s.id()
	if err != nil {
		f.err = err
	}
	return v
}

// reason reads a string from a small set of values (unload reasons,
// visibility), reused by a Decoder like an id.
func (f *fields) reason(bit uint8) string { return f.id(bit) }

func (f *fields) integer(bit uint8) int64 {
	if c := f.s.peek(); c != '-' && (c < '0' || c > '9') {
		f.fail(string(f.k), "not a number")
		return 0
	}
	num, err := f.s.number()
	if err != nil {
		f.err = err
		return 0
	}
	n, ok := parseInt(num)
	if !ok {
		if f.err == nil {
			f.err = &FieldError{Type: f.t, Field: f.prefix + string(f.k), Problem: "not an integer"}
		}
		return 0
	}
	f.seen |= bit
	return n
}

// lenientInt reads any value: an integer that fits an int (and a
// JavaScript number) is returned, anything else is 0.
func (f *fields) lenientInt(bit uint8) int {
	f.seen |= bit
	raw, err := f.s.value()
	if err != nil {
		f.err = err
		return 0
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0
	}
	n, ok := parseInt(raw)
	if !ok || n != int64(int(n)) {
		return 0
	}
	return int(n)
}

func (f *fields) boolean() bool {
	v, err := f.s.boolean()
	if err != nil {
		f.err = err
	}
	return v
}

func (f *fields) raw(bit uint8) []byte {
	v, err := f.s.value()
	if err != nil {
		f.err = err
		return nil
	}
	f.seen |= bit
	return v
}
