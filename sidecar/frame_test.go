package sidecar

import (
	"bytes"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/fasthttp/websocket"
)

// textFrame's frames, written raw on a server connection, read back as
// text messages of the same payload by a WebSocket client, at each length
// encoding (7-bit, 16-bit, 64-bit).
func TestTextFrame(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 200000}
	up := websocket.Upgrader{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		for _, n := range sizes {
			c.UnderlyingConn().Write(textFrame(payload(n)))
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, n := range sizes {
		typ, got, err := c.ReadMessage()
		if err != nil || typ != websocket.TextMessage || !bytes.Equal(got, payload(n)) {
			t.Fatalf("%d bytes: type %d, %d bytes back, %v", n, typ, len(got), err)
		}
	}
}

func payload(n int) []byte { return []byte(strings.Repeat("x", n)) }
