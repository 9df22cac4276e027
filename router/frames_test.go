package router

import (
	"bytes"
	"encoding/binary"
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
