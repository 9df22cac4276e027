package router

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
)

// clientFrame builds a masked client frame.
func clientFrame(op byte, fin bool, payload []byte, key [4]byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n < 1<<16:
		f = append(f, 0x80|126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	f = append(f, key[:]...)
	for i, c := range payload {
		f = append(f, c^key[i%4])
	}
	return f
}

// filterChunks runs stream through a frameFilter in chunks of the given
// sizes (cycled) and returns what it passed on.
func filterChunks(t *testing.T, stream []byte, sizes []int) []byte {
	t.Helper()
	var f frameFilter
	var out []byte
	write := func(b []byte) error { out = append(out, b...); return nil }
	for i, k := 0, 0; i < len(stream); k++ {
		n := min(sizes[k%len(sizes)], len(stream)-i)
		if err := f.filter(stream[i:i+n], write); err != nil {
			t.Fatal(err)
		}
		i += n
	}
	return out
}

// TestFrameFilterPassesFramesAsTheyCame: whatever the chunking (a byte at a
// time included, splitting every header), a stream without a bad close
// comes out byte for byte as it went in.
func TestFrameFilterPassesFramesAsTheyCame(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	var stream []byte
	for _, n := range []int{0, 1, 2, 5, 125, 126, 127, 300, 65535, 65536, 70000} {
		stream = append(stream, clientFrame(0x1, true, bytes.Repeat([]byte{'x'}, n), key)...)
	}
	stream = append(stream, clientFrame(0x2, false, []byte("part"), key)...)
	stream = append(stream, clientFrame(0x9, true, []byte("ping"), key)...) // a ping between fragments
	stream = append(stream, clientFrame(0x0, true, []byte("rest"), key)...)
	stream = append(stream, clientFrame(0x8, true, []byte{0x03, 0xe8}, key)...)
	stream = append(stream, clientFrame(0x8, true, nil, key)...)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sizes := range [][]int{{len(stream)}, {1}, {2}, {3}, {7}, {13}, {16 << 10}, {rng.IntN(20) + 1, rng.IntN(200) + 1, rng.IntN(5) + 1}} {
		if got := filterChunks(t, stream, sizes); !bytes.Equal(got, stream) {
			t.Fatalf("chunks %v: %d bytes out of %d in, not the same", sizes, len(got), len(stream))
		}
	}
}

// TestFrameFilterMendsOneByteClose: a close frame with a 1-byte payload is
// passed on as a close with code 1002; what comes before it is untouched,
// however the stream is cut.
func TestFrameFilterMendsOneByteClose(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	before := append(clientFrame(0x1, true, []byte(`{"action":"status"}`), key), clientFrame(0x1, true, bytes.Repeat([]byte{'y'}, 300), key)...)
	stream := append(bytes.Clone(before), clientFrame(0x8, true, []byte{0x03}, key)...)
	want := append(bytes.Clone(before), protocolClose...)
	for _, sizes := range [][]int{{len(stream)}, {1}, {2}, {5}, {len(before)}, {len(before) + 1}, {len(before) + 6}, {len(before) + 7}} {
		if got := filterChunks(t, stream, sizes); !bytes.Equal(got, want) {
			t.Fatalf("chunks %v:\n got %x\nwant %x", sizes, got, want)
		}
	}
}

// serverFrame builds an unmasked server frame.
func serverFrame(op byte, payload []byte) []byte {
	f := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		f = append(f, byte(n))
	case n < 1<<16:
		f = append(f, 126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, 127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	return append(f, payload...)
}

// chunkings are the ways the tests cut a stream of n bytes.
func chunkings(n int) [][]int {
	rng := rand.New(rand.NewPCG(3, 4))
	return [][]int{{n}, {1}, {2}, {3}, {7}, {13}, {100}, {16 << 10}, {rng.IntN(20) + 1, rng.IntN(200) + 1, rng.IntN(5) + 1}}
}

// TestFrameFilterKeepsAuthFrame: the client's first data frame is kept
// whole, as sent, however it was cut; pings before it are not it; a first
// frame that is fragmented is not kept, and the client is not resumable.
func TestFrameFilterKeepsAuthFrame(t *testing.T) {
	key := [4]byte{5, 6, 7, 8}
	auth := clientFrame(0x1, true, bytes.Repeat([]byte{'a'}, 720), key)
	stream := append(clientFrame(0x9, true, []byte("ping"), key), auth...)
	stream = append(stream, clientFrame(0x1, true, []byte(`{"action":"req"}`), key)...)
	for _, sizes := range chunkings(len(stream)) {
		var f frameFilter
		write := func([]byte) error { return nil }
		for i, k := 0, 0; i < len(stream); k++ {
			n := min(sizes[k%len(sizes)], len(stream)-i)
			f.filter(stream[i:i+n], write)
			i += n
		}
		if !bytes.Equal(f.auth, auth) || !f.resumable() {
			t.Fatalf("chunks %v: auth %d bytes (want %d), resumable %v", sizes, len(f.auth), len(auth), f.resumable())
		}
	}
	var f frameFilter
	f.filter(clientFrame(0x1, false, []byte("frag"), key), func([]byte) error { return nil })
	if f.auth != nil || f.resumable() {
		t.Fatal("a fragmented first frame was kept as the auth frame")
	}
}

// TestFrameFilterReplaysHalfSentFrame: stopped after any chunk, the filter
// replays from the last frame boundary what it passed on of the current
// frame, so that the old connection's whole frames plus the replay plus the
// rest of the stream, run through the filter again, make the stream.
func TestFrameFilterReplaysHalfSentFrame(t *testing.T) {
	key := [4]byte{1, 3, 5, 7}
	var stream []byte
	var bounds []int // frame ends
	for _, n := range []int{30, 700, 5, 300, 70000, 0, 126} {
		stream = append(stream, clientFrame(0x1, true, bytes.Repeat([]byte{'z'}, n), key)...)
		bounds = append(bounds, len(stream))
	}
	for _, sizes := range chunkings(len(stream)) {
		// About 400 stops per chunking.
		step := max(1, len(stream)/len(sizes)/sizes[0]/400)
		for stopAfter := 1; ; stopAfter += step {
			var f frameFilter
			var old []byte
			i := 0
			for k := 0; k < stopAfter && i < len(stream); k++ {
				n := min(sizes[k%len(sizes)], len(stream)-i)
				f.filter(stream[i:i+n], func(b []byte) error { old = append(old, b...); return nil })
				i += n
			}
			// The old connection got whole frames up to a boundary, and
			// the start of the next.
			whole := 0
			for _, e := range bounds {
				if e <= len(old) {
					whole = e
				}
			}
			replay := f.takeReplay()
			var next []byte
			write := func(b []byte) error { next = append(next, b...); return nil }
			f.filter(replay, write)
			if i < len(stream) {
				f.filter(stream[i:], write)
			}
			if got := append(bytes.Clone(old[:whole]), next...); !bytes.Equal(got, stream) {
				t.Fatalf("chunks %v, stopped after %d: %d bytes replayed, stream not the same", sizes, stopAfter, len(replay))
			}
			if i == len(stream) {
				break
			}
		}
	}
}

// TestFrameFilterKeepsWhatFailed: when a write to the sidecar fails, what
// was not surely written (from the frame boundary before the chunk) and
// every later chunk are kept for the next connection.
func TestFrameFilterKeepsWhatFailed(t *testing.T) {
	key := [4]byte{2, 4, 6, 8}
	auth := clientFrame(0x1, true, []byte(`{"action":"auth","token":"x"}`), key)
	a := clientFrame(0x1, true, bytes.Repeat([]byte{'a'}, 40), key)
	b := clientFrame(0x1, true, bytes.Repeat([]byte{'b'}, 400), key)
	c := clientFrame(0x1, true, []byte("c"), key)
	var f frameFilter
	ok := func([]byte) error { return nil }
	fail := func([]byte) error { return errors.New("broken pipe") }
	if err := f.filter(append(bytes.Clone(auth), a...), ok); err != nil {
		t.Fatal(err)
	}
	if err := f.filter(b[:100], ok); err != nil {
		t.Fatal(err)
	}
	if err := f.filter(b[100:], fail); !errors.Is(err, errUpstreamFailed) {
		t.Fatalf("filter after a failed write: %v", err)
	}
	if err := f.filter(c, ok); !errors.Is(err, errUpstreamFailed) {
		t.Fatalf("filter after the failure: %v", err)
	}
	if !f.resumable() || !bytes.Equal(f.auth, auth) {
		t.Fatal("the client is not resumable after a failed write")
	}
	if got, want := f.takeReplay(), append(bytes.Clone(b), c...); !bytes.Equal(got, want) {
		t.Fatalf("replay %d bytes, want frame b and c (%d bytes)", len(got), len(want))
	}
}

// TestOutFilterHoldsMovedClose: the sidecar's frames pass as they came,
// however cut, whether a chunk goes on whole or through filter; a close
// 1012 is held back (errMoved) after everything before it, another close
// passes on.
func TestOutFilterHoldsMovedClose(t *testing.T) {
	var before []byte
	for _, n := range []int{0, 10, 125, 126, 300, 65536} {
		before = append(before, serverFrame(0x1, bytes.Repeat([]byte{'s'}, n))...)
	}
	moved := serverFrame(0x8, append([]byte{0x03, 0xf4}, "room moving"...))
	normal := serverFrame(0x8, []byte{0x03, 0xe8})
	for _, tc := range []struct {
		close []byte
		held  bool
	}{{moved, true}, {normal, false}} {
		stream := append(append(bytes.Clone(before), tc.close...), serverFrame(0x1, []byte("after"))...)
		for _, sizes := range chunkings(len(stream)) {
			var o outFilter
			var out []byte
			write := func(b []byte) error { out = append(out, b...); return nil }
			var err error
			for i, k := 0, 0; i < len(stream) && err == nil; k++ {
				n := min(sizes[k%len(sizes)], len(stream)-i)
				// As the relay does: whole chunks go on as they are.
				if chunk := stream[i : i+n]; o.whole(chunk) {
					err = write(chunk)
				} else {
					err = o.filter(chunk, write)
				}
				i += n
			}
			switch {
			case tc.held && (!errors.Is(err, errMoved) || !bytes.Equal(out, before) || !bytes.Equal(o.held(), moved) || !o.atBoundary()):
				t.Fatalf("chunks %v: err %v, %d bytes out (want %d), held %x", sizes, err, len(out), len(before), o.held())
			case !tc.held && (err != nil || !bytes.Equal(out, stream) || !o.closed):
				t.Fatalf("chunks %v: err %v, %d bytes out of %d", sizes, err, len(out), len(stream))
			}
		}
	}
}

// TestFrameFilterRefusesMessagesOverMax: a message over the filter's max,
// whole or fragmented, is refused at its first frame header that makes it
// too big, nothing of it is passed on, and nothing after it; what came
// before it is passed on as it came, however the stream is cut. A message
// of exactly max passes.
func TestFrameFilterRefusesMessagesOverMax(t *testing.T) {
	key := [4]byte{5, 6, 7, 8}
	const max = 2048
	ok := append(clientFrame(0x1, true, bytes.Repeat([]byte{'a'}, max), key), clientFrame(0x9, true, []byte("ping"), key)...)
	ok = append(ok, clientFrame(0x1, false, bytes.Repeat([]byte{'b'}, 1000), key)...)
	ok = append(ok, clientFrame(0x0, true, bytes.Repeat([]byte{'c'}, max-1000), key)...)
	for _, tc := range []struct {
		name   string
		refuse []byte // the frames of the refused message
	}{
		{"whole", clientFrame(0x1, true, bytes.Repeat([]byte{'d'}, max+1), key)},
		{"fragmented", append(clientFrame(0x2, false, bytes.Repeat([]byte{'e'}, 1500), key),
			clientFrame(0x0, true, bytes.Repeat([]byte{'f'}, max-1499), key)...)},
	} {
		// The passed part of a fragmented refused message is its first
		// frame: its header did not make it too big yet.
		passed := bytes.Clone(ok)
		if tc.name == "fragmented" {
			passed = append(passed, clientFrame(0x2, false, bytes.Repeat([]byte{'e'}, 1500), key)...)
		}
		stream := append(append(bytes.Clone(ok), tc.refuse...), clientFrame(0x1, true, []byte("after"), key)...)
		for _, size := range []int{len(stream), 1, 3, 100, 4096} {
			f := frameFilter{max: max}
			var out []byte
			write := func(b []byte) error { out = append(out, b...); return nil }
			var err error
			for i := 0; i < len(stream) && err == nil; i += size {
				err = f.filter(stream[i:min(i+size, len(stream))], write)
			}
			if !errors.Is(err, errTooBig) {
				t.Fatalf("%s, chunks of %d: %v, want errTooBig", tc.name, size, err)
			}
			if !bytes.Equal(out, passed) {
				t.Fatalf("%s, chunks of %d: passed on %d bytes, want the %d before the refused frame", tc.name, size, len(out), len(passed))
			}
		}
	}
}

// TestFrameFilterReplaysLateFailure: a relay loop writes a chunk's bytes
// without waiting and leaves the rest to its relay's goroutine, whose write
// may fail after the whole chunk was scanned (and the next frame's header
// begun in it): what the next connection gets is still the stream from the
// last frame boundary the old one got whole.
func TestFrameFilterReplaysLateFailure(t *testing.T) {
	key := [4]byte{9, 7, 5, 3}
	var stream []byte
	var bounds []int // frame ends
	for _, n := range []int{3, 130, 0, 7, 300, 1, 126, 20} {
		stream = append(stream, clientFrame(0x1, true, bytes.Repeat([]byte{'q'}, n), key)...)
		bounds = append(bounds, len(stream))
	}
	for _, sizes := range [][]int{{1}, {3}, {5, 1}, {7, 2, 11}, {13}, {100, 3}} {
		for failAt := 0; ; failAt++ {
			var f frameFilter
			var old []byte
			ok := func(b []byte) error { old = append(old, b...); return nil }
			i := 0
			for k := 0; k < failAt && i < len(stream); k++ {
				n := min(sizes[k%len(sizes)], len(stream)-i)
				f.filter(stream[i:i+n], ok)
				i += n
			}
			if i == len(stream) {
				break
			}
			// The failing chunk: scanned whole, its writes lost.
			n := min(sizes[failAt%len(sizes)], len(stream)-i)
			chunk := stream[i : i+n]
			if _, err := f.scan(chunk, func([]byte) error { return nil }); err != nil {
				t.Fatal(err)
			}
			f.failed2(chunk)
			i += n
			whole := 0
			for _, e := range bounds {
				if e <= len(old) {
					whole = e
				}
			}
			var next []byte
			write := func(b []byte) error { next = append(next, b...); return nil }
			f.filter(f.takeReplay(), write)
			if i < len(stream) {
				f.filter(stream[i:], write)
			}
			if got := append(bytes.Clone(old[:whole]), next...); !bytes.Equal(got, stream) {
				t.Fatalf("chunks %v, failed at chunk %d: stream not the same", sizes, failAt)
			}
		}
	}
}
