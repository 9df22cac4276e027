package router

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/roomlb/roomlb/contract"
)

// A relay passes WebSocket frames on as they came, but follows their
// boundaries in both directions from the headers alone (RFC 6455 §5.2):
// payloads are skipped, never parsed. That lets it
//
//   - mend the one malformed client frame the sidecar's WebSocket library
//     cannot tell from a good one: a close frame with a 1-byte payload (a
//     close code is two bytes; one byte is a protocol error, RFC 6455
//     §5.5.1). The library reads it as a close without a code and echoes
//     one without a code; the relay passes on, in its place, a close with
//     code 1002, which the sidecar echoes: the client is told its error, as
//     RFC 6455 §7.4.1 says. Everything else malformed is left to the
//     sidecar, which answers it with 1002 itself.
//   - refuse a client message larger than the router's MaxFrame before a
//     byte of it reaches the sidecar: the client is closed with 1009, as
//     the sidecar would close it, but surely (a sidecar that closes in the
//     middle of a large frame resets the connection, and the router could
//     take that for a crash and try to carry the client over).
//   - carry a client over to its room's next owner (see carry.go): it keeps
//     the client's first data frame (the auth frame) as sent, knows where
//     the client's stream can be cut and resumed on another connection, and
//     holds back the sidecar's close frame that means "this room continues
//     elsewhere" (contract.CloseServiceRestart).

// maxFrameHeader is the longest frame header: 2 bytes, an 8-byte length,
// a 4-byte masking key.
const maxFrameHeader = 14

// Bounds of what a relay keeps to carry a client over: its auth frame
// (OpenTogetherTube's is about 720 bytes), a client frame that spans reads
// (a frame larger than the sidecar's limit is refused there anyway), and
// what the client sent after its sidecar's connection failed.
const (
	maxAuthFrame = 8 << 10
	maxKeptFrame = 256 << 10
	maxReplay    = 256 << 10
)

// A relay keeps copies of the messages the client sent most recently (at
// most maxRecent, each of at most maxRecentMsg bytes, none older than
// recentAge): when the old owner's close says it passed on fewer than were
// sent (contract.MovedReason), the rest go to the next owner. A message a
// sidecar has not taken within recentAge is one it will not take: its
// room moved long ago, or it is frozen (and then it says nothing).
const (
	maxRecent    = 64
	maxRecentMsg = 4 << 10
	recentAge    = 2 * time.Second
)

// sentMsg is a copy of a message the client sent (b nil: not kept, a
// fragmented or large one): its number among the messages after the auth
// frame, and when it was passed on (unix ns).
type sentMsg struct {
	seq int
	at  int64
	b   []byte
}

// protocolClose is a masked client close frame with code 1002 (the masking
// key is zero, so the payload is as it reads).
var protocolClose = []byte{0x88, 0x80 | 2, 0, 0, 0, 0, contract.CloseProtocol >> 8, contract.CloseProtocol & 0xff}

// errTooBig is what frameFilter.filter returns for a client message over
// its max, and for every chunk after it: nothing of that message, or after
// it, is passed on.
var errTooBig = errors.New("router: client message over the router's max frame")

// errUpstreamFailed is what frameFilter.filter returns once writing to the
// sidecar failed: what could not be written is kept for a carry-over.
var errUpstreamFailed = errors.New("router: writing to the sidecar failed")

// frameFilter follows the frames of a client's stream, one chunk at a time.
// A frame header split across chunks is held back until it is whole.
type frameFilter struct {
	splitHeader       // a header split across chunks (n bytes held)
	left        int64 // payload bytes of the current frame still to come
	drop        bool  // the current frame's payload is not passed on

	// max is the largest client message passed on (0: no bound); msgLen
	// the payload of the fragmented message under way so far; tooBig says
	// a message over max came, and nothing is passed on any more.
	max    int64
	msgLen int64
	tooBig bool

	// What a carry-over needs. cur holds the bytes of the current frame
	// passed on in earlier chunks (copied at the end of a chunk the frame
	// did not end in) or, for the auth frame, in this one too; keepAuth
	// says the current frame is the auth frame; big that it is too large
	// to keep.
	cur      []byte
	keepAuth bool
	big      bool
	// auth is the client's first data frame, whole and masked as sent; nil
	// until it is, and for good when that frame was not one final text or
	// binary frame of at most maxAuthFrame (such a client is not carried).
	auth     []byte
	authSeen bool
	// closed: the client sent a close frame.
	closed bool
	// seq counts the messages after the auth frame; recent keeps the
	// last of them; keepMsg says the current frame is a whole message to
	// keep, frag that a fragmented message is under way.
	seq     int
	recent  []sentMsg
	keepMsg bool
	frag    bool
	// seqBefore, fragBefore, lead and authBefore are what the current
	// chunk found (see scan and fail).
	seqBefore  int
	fragBefore bool
	lead       []byte
	authBefore bool
	// leadHdr holds lead when it is a split header (fill reuses hdr);
	// leadCur says lead is cur, whose array the chunk must then not
	// reuse for the next frame.
	leadHdr [maxFrameHeader]byte
	leadCur bool
	// failed: a write to the sidecar failed. replay holds what was not
	// surely written, from a frame boundary on, and every chunk since;
	// overflow says it outgrew maxReplay.
	failed   bool
	replay   []byte
	overflow bool
}

// headerLen is the length of the frame header that starts with b (at least
// 2 bytes); 0 if b is shorter than 2 bytes.
func headerLen(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	n := 2
	switch b[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b[1]&0x80 != 0 {
		n += 4
	}
	return n
}

// splitHeader holds the bytes of a frame header split across chunks.
type splitHeader struct {
	hdr [maxFrameHeader]byte
	n   int
}

// fill takes bytes of b from i on into the header until it is whole; it
// returns where it stopped in b and the header once whole (nil while it is
// still split: the rest comes with the next chunk). It then holds nothing.
func (sh *splitHeader) fill(b []byte, i int) (int, []byte) {
	for i < len(b) && (sh.n < 2 || sh.n < headerLen(sh.hdr[:sh.n])) {
		sh.hdr[sh.n] = b[i]
		sh.n++
		i++
	}
	if sh.n < 2 || sh.n < headerLen(sh.hdr[:sh.n]) {
		return i, nil
	}
	h := sh.hdr[:sh.n]
	sh.n = 0
	return i, h
}

// payloadLen is the payload length of the whole frame header h.
func payloadLen(h []byte) int64 {
	switch l := h[1] & 0x7f; l {
	case 126:
		return int64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		return int64(binary.BigEndian.Uint64(h[2:]) &^ (1 << 63))
	default:
		return int64(l)
	}
}

func isClose(h []byte) bool { return h[0]&0x0f == 0x8 }

// badClose reports whether the whole frame header h is a close frame with
// a 1-byte payload.
func badClose(h []byte) bool { return isClose(h) && h[1]&0x7f == 1 }

// over reports whether the whole frame header h starts or continues a
// message over f.max. Control frames are left to the sidecar (their
// payload is at most 125 bytes, or the sidecar refuses them).
func (f *frameFilter) over(h []byte) bool {
	if f.max <= 0 || h[0]&0x08 != 0 {
		return false
	}
	n := payloadLen(h)
	if h[0]&0x0f == 0 {
		n += f.msgLen
	}
	return n > f.max
}

// begin starts following the frame with the whole header h.
func (f *frameFilter) begin(h []byte) {
	f.left, f.drop = payloadLen(h), false
	f.cur = f.freshCur()
	f.big = f.left+int64(len(h)) > maxKeptFrame
	f.keepAuth, f.keepMsg = false, false
	op := h[0] & 0x0f
	fin := h[0]&0x80 != 0
	switch {
	case op&0x8 != 0:
	case fin:
		f.msgLen = 0
	case op == 0:
		f.msgLen += f.left
	default:
		f.msgLen = f.left
	}
	switch {
	case isClose(h):
		f.closed = true
	case op&0x8 != 0:
		// A ping or pong: not a message.
	case !f.authSeen:
		f.authSeen = true
		f.keepAuth = fin && (op == 0x1 || op == 0x2) && f.left+int64(len(h)) <= maxAuthFrame
	case op != 0 && fin:
		f.keepMsg = f.left+int64(len(h)) <= maxRecentMsg
		if !f.keepMsg {
			f.sent(nil)
		}
	case op != 0:
		f.frag = true
	case fin && f.frag:
		// The end of a fragmented message: counted, not kept.
		f.frag = false
		f.sent(nil)
	}
}

// sent counts a message passed on whole, keeping b (its frames as sent)
// unless nil.
func (f *frameFilter) sent(b []byte) {
	f.seq++
	now := time.Now().UnixNano()
	f.prune(now)
	if len(f.recent) == maxRecent {
		f.recent = append(f.recent[:0], f.recent[1:]...)
	}
	f.recent = append(f.recent, sentMsg{seq: f.seq, at: now, b: b})
}

// prune drops the copies older than recentAge.
func (f *frameFilter) prune(now int64) {
	i := 0
	for i < len(f.recent) && now-f.recent[i].at > int64(recentAge) {
		i++
	}
	if i == len(f.recent) {
		f.recent = nil
		return
	}
	if i > 0 {
		f.recent = append(f.recent[:0], f.recent[i:]...)
	}
}

// recentExpiry is when the oldest copy kept expires (unix ns); 0 for none.
func (f *frameFilter) recentExpiry() int64 {
	if len(f.recent) == 0 {
		return 0
	}
	return f.recent[0].at + int64(recentAge)
}

// since returns the messages the client sent after its first got ones, in
// order, as they were sent; lost counts those not kept.
func (f *frameFilter) since(got int) (msgs []byte, lost int) {
	f.prune(time.Now().UnixNano())
	next := got + 1
	for _, m := range f.recent {
		if m.seq < next {
			continue
		}
		lost += m.seq - next
		next = m.seq + 1
		if m.b == nil {
			lost++
			continue
		}
		msgs = append(msgs, m.b...)
	}
	if f.seq >= next {
		lost += f.seq - next + 1
	}
	return msgs, lost
}

// ended is called when the current frame, whose bytes in this chunk are
// frame, has been passed on whole.
func (f *frameFilter) ended(frame []byte) {
	switch {
	case f.keepAuth:
		f.auth = append(append(make([]byte, 0, len(f.cur)+len(frame)), f.cur...), frame...)
		f.keepAuth = false
	case f.keepMsg:
		f.sent(append(append(make([]byte, 0, len(f.cur)+len(frame)), f.cur...), frame...))
		f.keepMsg = false
	}
	if cap(f.cur) > 4<<10 {
		f.cur = nil
	} else {
		f.cur = f.freshCur()
	}
}

// freshCur is cur emptied for the next frame: its array again, unless a
// failed write's lead still holds it (see scan).
func (f *frameFilter) freshCur() []byte {
	if f.leadCur {
		f.leadCur = false
		return nil
	}
	return f.cur[:0]
}

// filter passes chunk b on through write, whole as far as it can: a
// frame header split at b's end is held for the next chunk, and a close
// frame with a 1-byte payload is replaced by a close with code 1002. When a
// write fails it keeps what was not surely written (see takeReplay) and
// returns errUpstreamFailed; so it does for every later chunk.
func (f *frameFilter) filter(b []byte, write func([]byte) error) error {
	tail, err := f.scan(b, write)
	if err == nil && len(tail) > 0 && write(tail) != nil {
		return f.failed2(b)
	}
	return err
}

// scan is filter but for its last write, which it leaves to the caller:
// it returns the rest of b to write, whole frames and the start of the
// last. A failed write of it is failed2's. (The relay writes it itself:
// the common case then runs without scan's frame under the write, which
// keeps the relay's goroutine stacks small.)
func (f *frameFilter) scan(b []byte, write func([]byte) error) (tail []byte, err error) {
	if f.tooBig {
		return nil, errTooBig
	}
	if f.failed {
		f.keep(b)
		return nil, errUpstreamFailed
	}
	// What a failed write leaves to replay: the current frame's bytes
	// from earlier chunks, or its split header, then all of b.
	f.lead, f.leadCur = nil, false
	switch {
	case f.n > 0:
		f.leadHdr = f.hdr
		f.lead = f.leadHdr[:f.n]
	case f.left > 0 && !f.drop:
		f.lead, f.leadCur = f.cur, true
	}
	f.authBefore = f.auth != nil
	f.seqBefore, f.fragBefore = f.seq, f.frag
	fs := 0    // where the current frame's bytes in b begin
	start := 0 // b[start:i] is passed on but not written yet
	i := 0
	for i < len(b) {
		if f.left > 0 {
			k := int(min(f.left, int64(len(b)-i)))
			if f.drop && i > start {
				if err := write(b[start:i]); err != nil {
					return nil, f.failed2(b)
				}
			}
			i += k
			f.left -= int64(k)
			if f.drop {
				start = i
			} else if f.left == 0 {
				f.ended(b[fs:i])
			}
			continue
		}
		if f.n == 0 {
			if hl := headerLen(b[i:]); hl > 0 && hl <= len(b)-i {
				h := b[i : i+hl]
				if badClose(h) {
					if err := flush(write, b[start:i], protocolClose); err != nil {
						return nil, f.failed2(b)
					}
					i += hl
					start = i
					f.left, f.drop, f.closed = 1, true, true
					continue
				}
				if f.over(h) {
					// What came before it still goes; the client is
					// refused whether it gets there or not.
					f.tooBig = true
					if i > start {
						write(b[start:i])
					}
					return nil, errTooBig
				}
				f.begin(h)
				fs = i
				i += hl
				if f.left == 0 {
					f.ended(h)
				}
				continue
			}
		}
		// A header split across chunks: hold its bytes until it is whole.
		if f.n == 0 && i > start {
			if err := write(b[start:i]); err != nil {
				return nil, f.failed2(b)
			}
		}
		var h []byte
		i, h = f.fill(b, i)
		start = i
		if h == nil {
			return nil, nil // still split: the rest comes with the next chunk
		}
		if badClose(h) {
			if err := write(protocolClose); err != nil {
				return nil, f.failed2(b)
			}
			f.left, f.drop, f.closed = 1, true, true
			continue
		}
		if f.over(h) {
			f.tooBig = true
			return nil, errTooBig
		}
		if err := write(h); err != nil {
			return nil, f.failed2(b)
		}
		f.begin(h)
		f.cur = append(f.cur, h...)
		fs = i
		if f.left == 0 {
			f.ended(nil)
		}
	}
	if f.left > 0 && !f.drop && !f.big {
		f.cur = append(f.cur, b[fs:]...)
	}
	return b[start:i], nil
}

// failed2 records a failed write in the chunk b that scan last took.
func (f *frameFilter) failed2(b []byte) error { return f.fail(f.lead, b, f.authBefore) }

// fail records a failed write in the chunk b: what to replay starts at the
// frame boundary before b (lead is the part of the frame that b continues)
// and takes all of b. An auth frame kept from b is taken back: it is in
// the replay.
func (f *frameFilter) fail(lead, b []byte, authBefore bool) error {
	f.failed = true
	f.replay = append(f.replay[:0], lead...)
	f.keep(b)
	if !authBefore {
		f.auth, f.authSeen = nil, false
	}
	// Messages counted in b are in the replay: not counted twice.
	for len(f.recent) > 0 && f.recent[len(f.recent)-1].seq > f.seqBefore {
		f.recent = f.recent[:len(f.recent)-1]
	}
	f.seq = f.seqBefore
	if f.fragBefore {
		f.overflow = true // the fragments before b went to the old owner
	}
	f.n, f.left, f.drop, f.cur, f.keepAuth, f.keepMsg, f.frag = 0, 0, false, nil, false, false, f.fragBefore
	return errUpstreamFailed
}

// keep adds b to the replay, within maxReplay.
func (f *frameFilter) keep(b []byte) {
	if len(f.replay)+len(b) > maxReplay {
		f.overflow = true
		return
	}
	f.replay = append(f.replay, b...)
}

// resumable reports whether the client's stream can go on on another
// connection: its auth frame is kept, it has not sent a close, is not in
// the middle of a fragmented message, and no frame or replay outgrew what
// is kept.
func (f *frameFilter) resumable() bool {
	return f.auth != nil && !f.closed && !f.overflow && !f.frag && !(f.left > 0 && (f.big || f.drop))
}

// takeReplay returns what the next connection must receive after the auth
// frame, from a frame boundary on: what a failed write left, or the part
// of the current frame (or of its header) passed on so far. The filter is
// then at a frame boundary, its auth frame kept.
func (f *frameFilter) takeReplay() []byte {
	var r []byte
	switch {
	case f.failed:
		r = f.replay
	case f.n > 0:
		r = append(r, f.hdr[:f.n]...)
	case f.left > 0:
		r = f.cur
	}
	*f = frameFilter{auth: f.auth, authSeen: f.authSeen, max: f.max}
	return r
}

// flush writes a, then b, skipping what is empty.
func flush(write func([]byte) error, a, b []byte) error {
	if len(a) > 0 {
		if err := write(a); err != nil {
			return err
		}
	}
	return write(b)
}

// errMoved is what outFilter.filter returns when the sidecar's close frame
// says the room continues elsewhere: everything before it was written, the
// close frame itself is held.
var errMoved = errors.New("router: the room continues elsewhere")

// outFilter follows the frames a sidecar sends its client, one chunk at a
// time. Frames pass on as they came, but a close frame is gathered whole
// before it goes on, so that a close with code CloseServiceRestart (the
// room moves) can be held back while the relay carries the client over.
type outFilter struct {
	splitHeader       // a header split across chunks (n bytes held)
	left        int64 // payload bytes of the current frame still to come

	// A close frame being gathered: cf[:cn] of cneed bytes.
	cf     [maxFrameHeader + 125]byte
	cn     int
	cneed  int
	moved  bool // the close frame held is a CloseServiceRestart
	closed bool // a close frame was passed on
}

// atBoundary reports whether the client has been sent whole frames only.
func (o *outFilter) atBoundary() bool { return o.n == 0 && o.left == 0 && o.cneed == 0 }

// held is the close frame held back by errMoved.
func (o *outFilter) held() []byte { return o.cf[:o.cn] }

// heldReason is the reason text of the close frame held back.
func (o *outFilter) heldReason() []byte {
	h := o.held()
	p := h[headerLen(h):]
	if len(p) < 2 {
		return nil
	}
	return p[2:]
}

// whole reports whether chunk b may go on as it is, whole: no close frame
// starts in it and it does not end in a frame header; then o has followed
// it. Otherwise o is unchanged, and filter must pass b on. (The common
// case, taken without the write callback: the relay writes b itself.)
func (o *outFilter) whole(b []byte) bool {
	if o.n > 0 || o.cneed > 0 {
		return false
	}
	left := o.left
	i := 0
	for {
		if left > 0 {
			k := min(left, int64(len(b)-i))
			i += int(k)
			left -= k
		}
		if i == len(b) {
			o.left = left
			return true
		}
		hl := headerLen(b[i:])
		if hl == 0 || hl > len(b)-i || isClose(b[i:i+hl]) {
			return false
		}
		left = payloadLen(b[i : i+hl])
		i += hl
	}
}

// filter passes chunk b on through write. It returns errMoved, having
// written what came before, at a close frame with code
// CloseServiceRestart; nothing after it is passed on.
func (o *outFilter) filter(b []byte, write func([]byte) error) error {
	start := 0
	i := 0
	for i < len(b) {
		switch {
		case o.left > 0:
			k := int(min(o.left, int64(len(b)-i)))
			i += k
			o.left -= int64(k)
			continue
		case o.cneed > 0:
			k := copy(o.cf[o.cn:o.cneed], b[i:])
			o.cn += k
			i += k
			start = i
			if o.cn < o.cneed {
				return nil
			}
			if err := o.closeFrame(write); err != nil {
				return err
			}
			continue
		}
		if o.n == 0 {
			if hl := headerLen(b[i:]); hl > 0 && hl <= len(b)-i {
				h := b[i : i+hl]
				if pl := payloadLen(h); isClose(h) && pl <= 125 {
					if i > start {
						if err := write(b[start:i]); err != nil {
							return err
						}
					}
					o.cn = copy(o.cf[:], h)
					o.cneed = hl + int(pl)
					i += hl
					start = i
					if o.cn == o.cneed {
						if err := o.closeFrame(write); err != nil {
							return err
						}
					}
					continue
				}
				o.left = payloadLen(h)
				i += hl
				continue
			}
		}
		if o.n == 0 && i > start {
			if err := write(b[start:i]); err != nil {
				return err
			}
		}
		var h []byte
		i, h = o.fill(b, i)
		start = i
		if h == nil {
			return nil
		}
		if pl := payloadLen(h); isClose(h) && pl <= 125 {
			o.cn = copy(o.cf[:], h)
			o.cneed = len(h) + int(pl)
			if o.cn == o.cneed {
				if err := o.closeFrame(write); err != nil {
					return err
				}
			}
			continue
		}
		if err := write(h); err != nil {
			return err
		}
		o.left = payloadLen(h)
	}
	if i > start {
		return write(b[start:i])
	}
	return nil
}

// closeFrame decides on the close frame gathered whole in cf: held back
// if it says the room moves, passed on otherwise.
func (o *outFilter) closeFrame(write func([]byte) error) error {
	o.cneed = 0
	h := o.cf[:o.cn]
	p := h[headerLen(h):]
	if h[1]&0x80 == 0 && len(p) >= 2 && int(binary.BigEndian.Uint16(p)) == contract.CloseServiceRestart {
		o.moved = true
		return errMoved
	}
	o.closed = true
	return write(h)
}
