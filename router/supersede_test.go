package router

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/registry"
)

// wantServiceRestart reads ws until it ends and fails unless that is a
// close frame with 1012 within a few seconds (the router ends a superseded
// relay at once; the bound only keeps a broken router from hanging the test).
func wantServiceRestart(t testing.TB, ws *websocket.Conn, what string) {
	t.Helper()
	start := time.Now()
	ws.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		_, msg, err := ws.ReadMessage()
		if err == nil {
			t.Logf("%s: message %q before the close", what, msg)
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseServiceRestart {
			t.Fatalf("%s: the WebSocket ended with %v, want a close frame 1012 within 3s", what, err)
		}
		t.Logf("%s: closed with 1012 after %v", what, time.Since(start))
		return
	}
}

// wantCarried reads ws and fails unless, with no close, the first frame the
// client sent ("hi") comes back from a node other than from (the router
// replayed it there, carrying the client over), to, which echoes what the
// client sends next; "" for to is any node.
func wantCarried(t testing.TB, c *cluster, ws *websocket.Conn, from, to, what string) {
	t.Helper()
	start := time.Now()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("%s: the WebSocket ended with %v, want it carried over", what, err)
		}
		node, text, _ := strings.Cut(string(msg), ": ")
		if text == "hi" && node != from && (to == "" || node == to) {
			to = node
			break
		}
		t.Logf("%s: message %q before the carry-over", what, msg)
	}
	ws.SetReadDeadline(time.Time{})
	t.Logf("%s: carried over to %s after %v", what, to, time.Since(start))
	if got := echo(t, ws, "after"); got != to+": after" {
		t.Fatalf("%s: echo %q after the carry-over, want %s's", what, got, to)
	}
	if got := c.sidecar(to).last().hdr.Get(contract.HeaderCarried); got != "0" {
		t.Errorf("%s: %s got the carried client's handshake with %s %q, want 0 (the count of clients is unknown)", what, to, contract.HeaderCarried, got)
	}
}

// TestSupersededRelays: when a room's owner changes to a higher epoch on
// another node, the router carries the clients it relays to the old owner
// over to the new one, even when the old owner goes on answering (frozen,
// cut off from Redis); a client it cannot carry (it sent no frame yet, so
// no auth frame is kept) it closes with 1012: it reconnects and reaches the
// new owner. A new epoch on the same node keeps them.
func TestSupersededRelays(t *testing.T) {
	c := newCluster(t, Config{})
	ctx := context.Background()
	b := c.node(registry.Node{ID: "node-b"})

	t.Run("move", func(t *testing.T) {
		a := c.node(registry.Node{ID: "node-a"})
		la := c.claim("cinema", a)
		ws, _, err := c.dial("/api/room/cinema", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		if got := echo(t, ws, "hi"); got != "node-a: hi" {
			t.Fatalf("echo %q, want node-a's", got)
		}

		// The same node at a new epoch (a re-claim of its own room).
		la, err = c.reg.Transfer(ctx, la, "node-a", c.sidecar("node-a").session())
		if err != nil {
			t.Fatal(err)
		}
		c.waitEvent(registry.EventMove)
		if got := echo(t, ws, "still"); got != "node-a: still" {
			t.Fatalf("after node-a's new epoch: echo %q, want node-a's", got)
		}
		silent, _, err := c.dial("/api/room/cinema", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()

		// Another node: node-a's relays move although node-a still answers.
		if _, err := c.reg.Transfer(ctx, la, "node-b", c.sidecar("node-b").session()); err != nil {
			t.Fatal(err)
		}
		wantCarried(t, c, ws, "node-a", "node-b", "relay to node-a after the move to node-b")
		wantServiceRestart(t, silent, "relay that sent no frame, after the move to node-b")
		again, _, err := c.dial("/api/room/cinema", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		if got := echo(t, again, "back"); got != "node-b: back" {
			t.Errorf("after reconnecting: echo %q, want node-b's", got)
		}
	})

	t.Run("steal from a frozen owner", func(t *testing.T) {
		a := c.node(registry.Node{ID: "node-f"})
		c.claim("arcade", a)
		ws, _, err := c.dial("/api/room/arcade", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		echo(t, ws, "hi")
		// No more heartbeats and no new connections, but the relayed
		// WebSocket stays open and served, as by a paused process.
		a.crash()
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := c.reg.Steal(ctx, "arcade", "node-f", "node-b", c.sidecar("node-b").session())
			if err == nil {
				break
			}
			if !errors.Is(err, registry.ErrOwnerAlive) || time.Now().After(deadline) {
				t.Fatalf("steal: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		wantCarried(t, c, ws, "node-f", "node-b", "relay to the frozen node-f after the steal")
	})

	t.Run("frozen owner nobody asks about", func(t *testing.T) {
		// As above, but no request makes a router steal the room: the
		// router ends the relays to a node whose heartbeat has been gone
		// for a recovery window.
		a := c.node(registry.Node{ID: "node-g"})
		c.claim("attic", a)
		ws, _, err := c.dial("/api/room/attic", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		echo(t, ws, "hi")
		a.crash()
		wantCarried(t, c, ws, "node-g", "", "relay to the frozen node-g")
	})

	t.Run("placed room", func(t *testing.T) {
		// A relay to a node the router placed the room on does not know
		// the epoch: it is checked against Redis.
		ws, resp, err := c.dial("/api/room/lounge", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		from := resp.Header.Get(contract.HeaderNode)
		if got := echo(t, ws, "hi"); got != from+": hi" {
			t.Fatalf("echo %q from %s", got, from)
		}
		o, err := c.reg.Owner(ctx, "lounge")
		if err != nil || o.Node != from {
			t.Fatalf("owner %+v, %v; want %s", o, err, from)
		}
		to := "node-b"
		if from == to {
			to = "node-a"
		}
		if _, err := c.reg.Transfer(ctx, registry.Lease{Room: "lounge", Node: o.Node, Session: o.Session, Epoch: o.Epoch}, to, c.sidecar(to).session()); err != nil {
			t.Fatal(err)
		}
		wantCarried(t, c, ws, from, to, "relay of a placed room after a move")
	})

	t.Run("missed event", func(t *testing.T) {
		la := c.claim("studio", b)
		ws, _, err := c.dial("/api/room/studio", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		echo(t, ws, "hi")
		// The move's event is lost; the subscription comes back.
		c.blockEvents.Store(true)
		if _, err := c.reg.Transfer(ctx, la, "node-a", c.sidecar("node-a").session()); err != nil {
			t.Fatal(err)
		}
		if got := echo(t, ws, "unseen"); !strings.HasPrefix(got, "node-b: ") {
			t.Fatalf("echo %q, want node-b's", got)
		}
		c.blockEvents.Store(false)
		if err := c.redis.Client().Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		c.waitEvent(registry.EventResync)
		wantCarried(t, c, ws, "node-b", "node-a", "relay to node-b after a move the router did not see")
	})
}
