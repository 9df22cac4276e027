package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/nodemonolith"
)

// freePort returns a loopback port nobody listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestMonolithShutdownHandsRoomsOver: the monolith stops on its own (a
// Nomad stop sends it SIGTERM): it closes the link with 1001 and exits
// without writing its rooms (like the real one, a write still pending is
// lost); the sidecar releases the rooms and offers them to the other node,
// which loads the state they last had in Redis. When a new monolith comes
// up on the same port, the sidecar links to it again (fresh balancer id)
// and takes rooms again.
func TestMonolithShutdownHandsRoomsOver(t *testing.T) {
	reg, srv := newTestRegistry(t)
	port := freePort(t)
	// A debounce longer than the shutdown delay: a change pending at the
	// SIGTERM is not written before the monolith exits.
	monoA := nodemonolith.Start(t, srv.URL(), "BALANCING_PORT="+strconv.Itoa(port), "STATE_DEBOUNCE_MS=2000", "SHUTDOWN_DELAY_MS=200")
	monoB := nodemonolith.Start(t, srv.URL())
	a := startSidecar(t, reg, "node-a", monoA.BalancerAddr, func(c *Config) { c.ShutdownFlush = 1500 * time.Millisecond })
	b := startSidecar(t, reg, "node-b", monoB.BalancerAddr, nil)
	ctx := context.Background()
	token := grant(t, a.Addr())
	const n = 10
	clients := make([]*wsClient, n)
	for i := range n {
		name := fmt.Sprintf("Shut-%d", i)
		createRoom(t, a.Addr(), name)
		c, _, err := dial(t, a.Addr(), name, token)
		if err != nil {
			t.Fatal(err)
		}
		c.next("you", 5*time.Second)
		c.sendJSON(map[string]any{"action": "req", "request": map[string]any{"type": 4, "value": float64(500 + i)}})
		for {
			if m := c.next("sync", 5*time.Second); m["playbackPosition"] == float64(500+i) {
				break
			}
		}
		clients[i] = c
	}
	waitFor(t, 10*time.Second, "every room's change written", func() bool {
		for i := range n {
			var st struct{ PlaybackPosition float64 }
			raw, err := srv.Client().Get(ctx, fmt.Sprintf("room:Shut-%d", i)).Bytes()
			if err != nil || json.Unmarshal(raw, &st) != nil || st.PlaybackPosition != float64(500+i) {
				return false
			}
		}
		return true
	})
	// A last change, pending at the SIGTERM: lost.
	clients[0].sendJSON(map[string]any{"action": "req", "request": map[string]any{"type": 4, "value": float64(9999)}})
	for {
		if m := clients[0].next("sync", 5*time.Second); m["playbackPosition"] == float64(9999) {
			break
		}
	}
	monoA.Signal(syscall.SIGTERM)
	waitFor(t, 10*time.Second, "every room on node-b", func() bool {
		for i := range n {
			o, err := reg.Owner(ctx, fmt.Sprintf("shut-%d", i))
			if err != nil || o.Node != "node-b" {
				return false
			}
		}
		return true
	})
	for i := range n {
		c, _, err := dial(t, b.Addr(), fmt.Sprintf("shut-%d", i), token)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.next("sync", 5*time.Second)["playbackPosition"]; got != float64(500+i) {
			t.Fatalf("room %d on node-b has playbackPosition %v, want %d (its last write; a change pending at the shutdown is lost)", i, got, 500+i)
		}
	}
	if ok, _ := reg.Alive(ctx, "node-a"); ok {
		waitFor(t, 3*time.Second, "node-a out of the registry while its monolith is down", func() bool {
			ok, _ := reg.Alive(ctx, "node-a")
			return !ok
		})
	}

	// A new monolith on the same port: node-a is back.
	monoA2 := nodemonolith.Start(t, srv.URL(), "BALANCING_PORT="+strconv.Itoa(port))
	_ = monoA2
	waitFor(t, 10*time.Second, "node-a registered again", func() bool {
		ok, _ := reg.Alive(ctx, "node-a")
		return ok
	})
	createRoom(t, a.Addr(), "Reborn")
	if o, err := reg.Owner(ctx, "reborn"); err != nil || o.Node != "node-a" {
		t.Fatalf("room created after the restart owned by %+v, %v; want node-a", o, err)
	}
}
