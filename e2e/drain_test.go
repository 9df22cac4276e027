package e2e

import (
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/cluster"
	"github.com/roomlb/roomlb/sidecar"
)

// nodeCluster starts Node reference monoliths whose sidecars know their
// real state debounce (5 s, as OpenTogetherTube's).
func nodeCluster(t *testing.T, nodes int) *cluster.Cluster {
	c, _ := start(t, nodes, 1, func(o *cluster.Options) {
		o.Monolith = cluster.NodeMonolith
		prev := o.Sidecar
		o.Sidecar = func(i int, cfg *sidecar.Config) {
			prev(i, cfg)
			cfg.StateDebounce = 5 * time.Second
		}
	})
	return c
}

// A drain under chat only gives the room's clients their room back at
// once: chats are not written to Redis, so nothing is pending and the room
// need not wait for the monolith's state debounce (5 s) before it moves.
func TestChatOnlyDrainIsQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the monolith's first state write")
	}
	c := nodeCluster(t, 2)
	r := c.Routers[0].Addr
	token := grant(t, r)
	if res, body := do(t, r, "POST", "/api/room/create", `{"name":"Chatty","isTemporary":true}`); res.StatusCode != 200 {
		t.Fatalf("create: %d %s", res.StatusCode, body)
	}
	alice, err := join(t, r, "chatty", token)
	if err != nil {
		t.Fatal(err)
	}
	alice.mustNext("you")
	// The room's first write (5 s after it was made) lands while alice chats.
	for deadline := time.Now().Add(6 * time.Second); time.Now().Before(deadline); {
		alice.chat("hi")
		alice.mustNext("chat")
		time.Sleep(200 * time.Millisecond)
	}
	var from *cluster.Node
	for _, n := range c.Nodes {
		if n.ID == alice.node {
			from = n
		}
	}
	if from == nil {
		t.Fatalf("alice's node %q is not in the cluster", alice.node)
	}
	if res, body := do(t, from.SidecarAddr, "POST", "/admin/drain", "", sidecar.HeaderSecret, c.Secret); res.StatusCode != 202 {
		t.Fatalf("drain: %d %s", res.StatusCode, body)
	}
	if code := alice.CloseCode(5 * time.Second); code != 1012 {
		t.Fatalf("alice closed with %d, want 1012", code)
	}
	closed := time.Now()
	back, err := join(t, r, "chatty", token)
	if err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	back.mustNext("you")
	took := time.Since(closed)
	if back.node == alice.node {
		t.Fatalf("rejoined on the drained node %s", back.node)
	}
	// Not a speed figure (a loaded machine may take longer than the 0.1 s
	// seen on an idle one): a drain that waited for the 5 s debounce would
	// take longer than this whatever the load.
	if took > 4*time.Second {
		t.Fatalf("the room was back after %v: the drain waited for the monolith's state debounce with nothing pending", took)
	}
	t.Logf("room back on %s %v after the close", back.node, took)
}

// A change followed at once by a drain is not lost: the room waits for the
// monolith's write of it before the next owner loads it.
func TestChangeThenDrainKeepsTheChange(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the monolith's state debounce")
	}
	c := nodeCluster(t, 2)
	r := c.Routers[0].Addr
	token := grant(t, r)
	if res, body := do(t, r, "POST", "/api/room/create", `{"name":"Queue","isTemporary":true}`); res.StatusCode != 200 {
		t.Fatalf("create: %d %s", res.StatusCode, body)
	}
	alice, err := join(t, r, "queue", token)
	if err != nil {
		t.Fatal(err)
	}
	alice.mustNext("you")
	time.Sleep(5500 * time.Millisecond) // the room's first write
	if err := alice.send(map[string]any{"action": "req", "request": map[string]any{"type": 5, "video": map[string]any{"service": "direct", "id": "https://example.com/a.mp4"}}}); err != nil {
		t.Fatal(err)
	}
	// Applied (its sync is out), and not yet written: the monolith writes
	// it 5 s later. A frame that reached the sidecar after the move began
	// would be dropped instead, which the invisible moves will change.
	for {
		m := alice.mustNext("sync")
		if _, ok := m["currentSource"]; ok {
			break
		}
	}
	var from *cluster.Node
	for _, n := range c.Nodes {
		if n.ID == alice.node {
			from = n
		}
	}
	if res, body := do(t, from.SidecarAddr, "POST", "/admin/drain", "", sidecar.HeaderSecret, c.Secret); res.StatusCode != 202 {
		t.Fatalf("drain: %d %s", res.StatusCode, body)
	}
	alice.CloseCode(5 * time.Second)
	back, err := join(t, r, "queue", token)
	if err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	s := back.mustNext("sync")
	if back.node == alice.node {
		t.Fatalf("rejoined on the drained node %s", back.node)
	}
	cur, _ := s["currentSource"].(map[string]any)
	if cur == nil || cur["id"] != "https://example.com/a.mp4" {
		t.Fatalf("the new owner's room has currentSource %v, want the video added just before the drain", s["currentSource"])
	}
}
