package sidecar

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/nodemonolith"
)

// TestJoinBroadcastNode: clients join through the sidecar in front of the
// Node reference monolith, get the sync, and a chat request reaches every
// client of the room while the monolith sent one message for it.
func TestJoinBroadcastNode(t *testing.T) {
	reg, srv := newTestRegistry(t)
	mono := nodemonolith.Start(t, srv.URL(), "STATE_DEBOUNCE_MS=300")
	sc := startSidecar(t, reg, "node-a", mono.BalancerAddr, nil)
	addr := sc.Addr()

	createRoom(t, addr, "MovieNight")
	o, err := reg.Owner(context.Background(), "movienight")
	if err != nil || o.Node != "node-a" {
		t.Fatalf("after create, owner = %+v, %v; want node-a", o, err)
	}

	const n = 5
	clients := make([]*wsClient, n)
	for i := range clients {
		c, res, err := dial(t, addr, "movienight", grant(t, addr))
		if err != nil {
			t.Fatalf("dial: %v (%v)", err, res)
		}
		sync := c.next("sync", 5*time.Second)
		if sync["name"] != "MovieNight" {
			t.Fatalf("client %d sync names room %v, want the canonical MovieNight", i, sync["name"])
		}
		c.next("you", 5*time.Second)
		clients[i] = c
	}
	time.Sleep(200 * time.Millisecond) // let the join broadcasts settle
	in := counter(t, sc, "in")

	clients[0].sendJSON(map[string]any{"action": "req", "request": map[string]any{"type": 11, "text": "hello all"}})
	for i, c := range clients {
		m := c.next("chat", 5*time.Second)
		if m["text"] != "hello all" {
			t.Fatalf("client %d got chat %v", i, m)
		}
	}
	if got := counter(t, sc, "in") - in; got != 1 {
		t.Fatalf("the monolith sent %v messages for one chat to %d clients, want 1", got, n)
	}
}

// counter reads roomlb_sidecar_messages_total{direction}.
func counter(t testing.TB, s *running, direction string) float64 {
	t.Helper()
	mfs, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "roomlb_sidecar_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "direction" && strings.EqualFold(l.GetValue(), direction) {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
