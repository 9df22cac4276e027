package sidecar

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/internal/nodemonolith"
	"github.com/roomlb/roomlb/registry"
)

// TestIngressEdges: what the sidecar answers at its edge, table-driven, on
// one sidecar whose other room keeps working throughout.
func TestIngressEdges(t *testing.T) {
	reg, srv := newTestRegistry(t)
	mono := nodemonolith.Start(t, srv.URL())
	sc := startSidecar(t, reg, "node-a", mono.BalancerAddr, func(c *Config) { c.AuthTimeout = 300 * time.Millisecond })
	addr := sc.Addr()
	createRoom(t, addr, "Steady")
	token := grant(t, addr)
	steady, _, err := dial(t, addr, "steady", token)
	if err != nil {
		t.Fatal(err)
	}
	steady.next("you", 5*time.Second)

	t.Run("http", func(t *testing.T) {
		cases := []struct {
			name, path string
			hdr        []string
			want       int
		}{
			{"no secret", "/api/room/steady", []string{contract.HeaderSecret, ""}, 403},
			{"wrong secret", "/api/room/steady", []string{contract.HeaderSecret, "guess"}, 403},
			{"bad room name", "/api/room/bad.name", nil, 400},
			{"huge room name", "/api/room/" + strings.Repeat("x", 65), nil, 400},
			{"stale router epoch above ours", "/api/room/steady", []string{contract.HeaderEpoch, "9999999999999999"}, 421},
			{"owned room", "/api/room/steady", nil, 200},
			{"no room: passed through", "/api/status", nil, 200},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				code, _, body := call(t, addr, "GET", tc.path, "", tc.hdr...)
				if code != tc.want {
					t.Fatalf("GET %s = %d %q, want %d", tc.path, code, body, tc.want)
				}
			})
		}
	})

	t.Run("owned elsewhere", func(t *testing.T) {
		z, err := reg.Beat(context.Background(), registry.Node{ID: "node-z", Addr: "127.0.0.1:1"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Claim(context.Background(), "Elsewhere", "node-z", z.Session); err != nil {
			t.Fatal(err)
		}
		code, hdr, _ := call(t, addr, "GET", "/api/room/elsewhere", "")
		if code != 421 || !strings.HasPrefix(hdr.Get(contract.HeaderOwner), "node-z:") {
			t.Fatalf("room of node-z: %d, owner %q; want 421 naming node-z", code, hdr.Get(contract.HeaderOwner))
		}
		h := http.Header{}
		h.Set(contract.HeaderSecret, testSecret)
		_, res, err := websocket.DefaultDialer.Dial("ws://"+addr+"/api/room/elsewhere", h)
		if err == nil || res == nil || res.StatusCode != 421 {
			t.Fatalf("upgrade for node-z's room: %v %v, want 421 before the upgrade", err, res)
		}
	})

	t.Run("auth", func(t *testing.T) {
		cases := []struct {
			name  string
			first func(*websocket.Conn)
			want  int
		}{
			{"no auth frame in time", func(*websocket.Conn) {}, 4004},
			{"not json", func(c *websocket.Conn) { c.WriteMessage(websocket.TextMessage, []byte("hello")) }, 1002},
			{"no action", func(c *websocket.Conn) { c.WriteMessage(websocket.TextMessage, []byte(`{"token":"x"}`)) }, 1002},
			{"other action first", func(c *websocket.Conn) { c.WriteMessage(websocket.TextMessage, []byte(`{"action":"req"}`)) }, 4004},
			{"auth without token", func(c *websocket.Conn) { c.WriteMessage(websocket.TextMessage, []byte(`{"action":"auth"}`)) }, 1002},
			{"binary first frame", func(c *websocket.Conn) { c.WriteMessage(websocket.BinaryMessage, []byte(`{}`)) }, 1006},
			{"oversized first frame", func(c *websocket.Conn) { c.WriteMessage(websocket.TextMessage, make([]byte, DefaultMaxFrame+1)) }, 1009},
			{"unknown token", func(c *websocket.Conn) {
				c.WriteMessage(websocket.TextMessage, []byte(`{"action":"auth","token":"forged"}`))
			}, 4004},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c, _, err := dial(t, addr, "steady", "")
				if err != nil {
					t.Fatal(err)
				}
				tc.first(c.Conn)
				if code := c.closeCode(5 * time.Second); code != tc.want {
					t.Fatalf("closed with %d, want %d", code, tc.want)
				}
			})
		}
	})

	t.Run("after join", func(t *testing.T) {
		c, _, err := dial(t, addr, "steady", token)
		if err != nil {
			t.Fatal(err)
		}
		c.next("you", 5*time.Second)
		// Frames the monolith cannot take are dropped; the socket stays.
		for _, f := range []string{"not json", "[1,2]", "null", "42"} {
			c.Conn.WriteMessage(websocket.TextMessage, []byte(f))
		}
		c.sendJSON(map[string]any{"action": "req", "request": map[string]any{"type": 11, "text": "still here"}})
		c.next("chat", 5*time.Second)
		// A kick code that is no legal close code is sanitized.
		c.sendJSON(map[string]any{"action": "kickme", "reason": 70000})
		if code := c.closeCode(5 * time.Second); code < 1000 || code > 4999 || code == 1005 || code == 1006 {
			t.Fatalf("kickme 70000 closed with %d, want a legal close code", code)
		}
	})

	t.Run("announcement", func(t *testing.T) {
		reg.Client().Publish(context.Background(), "announcement", `{"action":"announcement","text":"maintenance at noon"}`)
		if m := steady.next("announcement", 5*time.Second); m["text"] != "maintenance at noon" {
			t.Fatalf("announcement %v", m)
		}
	})

	// The other room was served throughout.
	steady.sendJSON(map[string]any{"action": "req", "request": map[string]any{"type": 11, "text": "fine"}})
	steady.next("chat", 5*time.Second)

	t.Run("admin drain", func(t *testing.T) {
		if code, _, _ := call(t, addr, "GET", "/readyz", ""); code != 200 {
			t.Fatalf("/readyz = %d before the drain, want 200", code)
		}
		if code, _, _ := call(t, addr, "POST", "/admin/drain", "", contract.HeaderSecret, "wrong"); code != 403 {
			t.Fatalf("drain without the secret = %d, want 403", code)
		}
		if code, _, _ := call(t, addr, "POST", "/admin/drain", ""); code != 202 {
			t.Fatalf("drain = %d, want 202", code)
		}
		if code := steady.closeCode(5 * time.Second); code != contract.CloseServiceRestart {
			t.Fatalf("client of a drained node closed with %d, want %d", code, contract.CloseServiceRestart)
		}
		select {
		case <-sc.done:
		case <-time.After(10 * time.Second):
			t.Fatal("sidecar did not stop after an admin drain")
		}
		if sc.err != nil {
			t.Fatalf("Run after an admin drain = %v, want nil", sc.err)
		}
	})
}
