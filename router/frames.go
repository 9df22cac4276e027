package router

import (
	"encoding/binary"

	"github.com/roomlb/roomlb/contract"
)

// A relay passes a client's WebSocket frames on as they came, but follows
// their boundaries from the headers alone (RFC 6455 §5.2): payloads are
// skipped, never read or copied apart. That lets it mend the one malformed
// frame the sidecar's WebSocket library cannot tell from a good one: a
// close frame with a 1-byte payload (a close code is two bytes; one byte is
// a protocol error, RFC 6455 §5.5.1). The library reads it as a close
// without a code and echoes one without a code; the relay passes on, in
// its place, a close with code 1002, which the sidecar echoes: the client
// is told its error, as RFC 6455 §7.4.1 says. Everything else malformed is
// left to the sidecar, which answers it with 1002 itself.

// maxFrameHeader is the longest frame header: 2 bytes, an 8-byte length,
// a 4-byte masking key.
const maxFrameHeader = 14

// protocolClose is a masked client close frame with code 1002 (the masking
// key is zero, so the payload is as it reads).
var protocolClose = []byte{0x88, 0x80 | 2, 0, 0, 0, 0, contract.CloseProtocol >> 8, contract.CloseProtocol & 0xff}

// frameFilter follows the frames of a client's stream, one chunk at a time.
// A frame header split across chunks is held back until it is whole.
type frameFilter struct {
	hdr  [maxFrameHeader]byte
	n    int   // bytes of a split header held in hdr
	left int64 // payload bytes of the current frame still to come
	drop bool  // the current frame's payload is not passed on
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

// badClose reports whether the whole frame header h is a close frame with
// a 1-byte payload.
func badClose(h []byte) bool { return h[0]&0x0f == 0x8 && h[1]&0x7f == 1 }

// filter passes chunk b on through write, whole as far as it can: a
// frame header split at b's end is held for the next chunk, and a close
// frame with a 1-byte payload is replaced by a close with code 1002.
func (f *frameFilter) filter(b []byte, write func([]byte) error) error {
	start := 0 // b[start:i] is passed on but not written yet
	i := 0
	for i < len(b) {
		if f.left > 0 {
			k := int(min(f.left, int64(len(b)-i)))
			if f.drop && i > start {
				if err := write(b[start:i]); err != nil {
					return err
				}
			}
			i += k
			f.left -= int64(k)
			if f.drop {
				start = i
			}
			continue
		}
		if f.n == 0 {
			if hl := headerLen(b[i:]); hl > 0 && hl <= len(b)-i {
				h := b[i : i+hl]
				if badClose(h) {
					if err := flush(write, b[start:i], protocolClose); err != nil {
						return err
					}
					i += hl
					start = i
					f.left, f.drop = 1, true
					continue
				}
				f.left, f.drop = payloadLen(h), false
				i += hl
				continue
			}
		}
		// A header split across chunks: hold its bytes until it is whole.
		if f.n == 0 && i > start {
			if err := write(b[start:i]); err != nil {
				return err
			}
		}
		for i < len(b) && (f.n < 2 || f.n < headerLen(f.hdr[:f.n])) {
			f.hdr[f.n] = b[i]
			f.n++
			i++
		}
		start = i
		if f.n < 2 || f.n < headerLen(f.hdr[:f.n]) {
			return nil // still split: the rest comes with the next chunk
		}
		h := f.hdr[:f.n]
		f.n = 0
		if badClose(h) {
			if err := write(protocolClose); err != nil {
				return err
			}
			f.left, f.drop = 1, true
			continue
		}
		if err := write(h); err != nil {
			return err
		}
		f.left, f.drop = payloadLen(h), false
	}
	if i > start {
		return write(b[start:i])
	}
	return nil
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
