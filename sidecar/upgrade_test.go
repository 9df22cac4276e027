package sidecar

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/roomlb/roomlb/contract"
)

// TestUpgradeEdges: the answers to bad WebSocket handshakes, and a client
// that sends its frames before the handshake's answer (they wait in the
// server's request buffer, which the connection leaves behind).
func TestUpgradeEdges(t *testing.T) {
	reg, srv := newTestRegistry(t)
	mono := startFake(t, srv)
	sc := startSidecar(t, reg, "node-a", mono.BalancerAddr(), nil)
	addr := sc.Addr()
	createRoom(t, addr, "Piped")
	token := grant(t, addr)

	t.Run("bad handshakes", func(t *testing.T) {
		const key = "dGhlIHNhbXBsZSBub25jZQ=="
		cases := []struct {
			name, method, version, key string
			want                       int
		}{
			{"not GET", "POST", "13", key, 405},
			{"version 8", "GET", "8", key, 400},
			{"short key", "GET", "13", "c2hvcnQ=", 400},
			{"no key", "GET", "13", "", 400},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				req, _ := http.NewRequest(tc.method, "http://"+addr+"/api/room/piped", nil)
				req.Header.Set(contract.HeaderSecret, testSecret)
				req.Header.Set("Connection", "Upgrade")
				req.Header.Set("Upgrade", "websocket")
				req.Header.Set("Sec-WebSocket-Version", tc.version)
				if tc.key != "" {
					req.Header.Set("Sec-WebSocket-Key", tc.key)
				}
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				if res.StatusCode != tc.want {
					t.Fatalf("%d, want %d", res.StatusCode, tc.want)
				}
			})
		}
	})

	t.Run("frames before the answer", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		// The request, the auth frame and a chat request in one write.
		b := []byte("GET /api/room/piped HTTP/1.1\r\nHost: " + addr + "\r\n" + contract.HeaderSecret + ": " + testSecret + "\r\n" +
			"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		auth, _ := json.Marshal(map[string]any{"action": "auth", "token": token})
		b = appendClientFrame(b, auth)
		b = appendClientFrame(b, []byte(`{"action":"req","request":{"type":11,"text":"early bird"}}`))
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 101 || res.Header.Get(contract.HeaderNode) != "node-a" {
			t.Fatalf("handshake: %d, node %q; want 101 from node-a", res.StatusCode, res.Header.Get(contract.HeaderNode))
		}
		nextChat(t, br, "early bird")
	})

	t.Run("frames right after the answer, then idle", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte("GET /api/room/piped HTTP/1.1\r\nHost: " + addr + "\r\n" + contract.HeaderSecret + ": " + testSecret + "\r\n" +
			"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		if err != nil || res.StatusCode != 101 {
			t.Fatalf("handshake: %v %v", res, err)
		}
		// The chat request comes with the auth frame, so it waits in the
		// connection's read buffer while the auth is read.
		auth, _ := json.Marshal(map[string]any{"action": "auth", "token": token})
		b := appendClientFrame(nil, auth)
		b = appendClientFrame(b, []byte(`{"action":"req","request":{"type":11,"text":"buffered"}}`))
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		nextChat(t, br, "buffered")
		// Idle now, then a frame again; then one in two writes.
		if _, err := conn.Write(appendClientFrame(nil, []byte(`{"action":"req","request":{"type":11,"text":"after a pause"}}`))); err != nil {
			t.Fatal(err)
		}
		nextChat(t, br, "after a pause")
		b = appendClientFrame(nil, []byte(`{"action":"req","request":{"type":11,"text":"in two parts"}}`))
		if _, err := conn.Write(b[:5]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // to have the parts arrive apart, not checked
		if _, err := conn.Write(b[5:]); err != nil {
			t.Fatal(err)
		}
		nextChat(t, br, "in two parts")

		// An idle client that does not answer the close frame of a drain
		// is disconnected all the same.
		go sc.Drain(context.Background())
		for {
			var h [2]byte
			if _, err := io.ReadFull(br, h[:]); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatal("the sidecar kept the connection of a client that did not answer its close")
				}
				return // closed by the sidecar
			}
			if _, err := io.CopyN(io.Discard, br, int64(h[1]&0x7f)); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the sidecar kept the connection of a client that did not answer its close")
			}
		}
	})
}

// nextChat reads server frames until a chat, which must say text.
func nextChat(t *testing.T, br *bufio.Reader, text string) {
	t.Helper()
	for {
		payload := readServerFrame(t, br)
		var m map[string]any
		json.Unmarshal(payload, &m)
		if m["action"] == "chat" {
			if m["text"] != text {
				t.Fatalf("chat %v, want %q", m, text)
			}
			return
		}
	}
}

// appendClientFrame appends a masked text frame (with a zero mask).
func appendClientFrame(b, payload []byte) []byte {
	b = append(b, 0x81)
	if len(payload) < 126 {
		b = append(b, 0x80|byte(len(payload)))
	} else {
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	}
	b = append(b, 0, 0, 0, 0)
	return append(b, payload...)
}

// readServerFrame reads one unfragmented, unmasked frame's payload.
func readServerFrame(t *testing.T, r io.Reader) []byte {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatal(err)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			t.Fatal(err)
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			t.Fatal(err)
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		t.Fatal(err)
	}
	if h[0]&0x0f == 0x8 {
		t.Fatalf("server closed the connection: % x", p)
	}
	return p
}
