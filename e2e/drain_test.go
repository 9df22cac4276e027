package e2e

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/internal/cluster"
	"github.com/roomlb/roomlb/internal/roomlbtest"
	"github.com/roomlb/roomlb/sidecar"
)

// nodeCluster starts Node reference monoliths whose sidecars know their
// real state debounce (5 s, as OpenTogetherTube's), and one router.
func nodeCluster(t *testing.T, nodes int) *cluster.Cluster { return nodeClusterRouters(t, nodes, 1) }

// nodeClusterRouters is nodeCluster with routers routers.
func nodeClusterRouters(t *testing.T, nodes, routers int) *cluster.Cluster {
	c, _ := start(t, nodes, routers, func(o *cluster.Options) {
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
// The router carries alice over: no close, a new id from the next owner.
// Checked by how the drain's wait for the monolith's write ended, not by
// how long the move took.
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
	from := nodeOf(t, c, alice.node)
	moveAway(t, c, from, "chatty", true)
	if _, err := alice.next("you", 10*time.Second); err != nil {
		t.Fatalf("alice was not carried over: %v", err)
	}
	if to := nodeAfter(t, c, "chatty"); to == alice.node {
		t.Fatalf("the room is still on the drained node %s", to)
	}
	// The drain saw nothing pending and moved the room at once: it did
	// not wait for a write of the monolith's (a wait that would end
	// written, unseen or cancelled).
	g := from.Sidecar.Gatherer()
	for _, result := range []string{"none", "written", "unseen", "cancelled"} {
		want := 0.0
		if result == "none" {
			want = 1
		}
		if got := roomlbtest.Counter(t, g, `roomlb_sidecar_move_waits_total{result="`+result+`"}`); got != want {
			t.Errorf("move_waits_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

// nodeOf returns the cluster node with id.
func nodeOf(t *testing.T, c *cluster.Cluster, id string) *cluster.Node {
	t.Helper()
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	t.Fatalf("node %q is not in the cluster", id)
	return nil
}

// moveAway hands room over from the node serving it: a drain of the node,
// or a move of the room alone to the other node (roomlb ctl move).
func moveAway(t *testing.T, c *cluster.Cluster, from *cluster.Node, room string, drain bool) {
	t.Helper()
	if drain {
		if res, body := do(t, from.SidecarAddr, "POST", "/admin/drain", "", contract.HeaderSecret, c.Secret); res.StatusCode != 202 {
			t.Fatalf("drain: %d %s", res.StatusCode, body)
		}
		return
	}
	var to string
	for _, n := range c.Nodes {
		if n != from {
			to = n.ID
		}
	}
	form := url.Values{"room": {room}, "to": {to}}.Encode()
	if res, body := do(t, from.SidecarAddr, "POST", "/admin/move", form, contract.HeaderSecret, c.Secret, "Content-Type", "application/x-www-form-urlencoded"); res.StatusCode != 202 {
		t.Fatalf("move: %d %s", res.StatusCode, body)
	}
}

// video is a queue item of the reference monolith; length 0 means none.
func video(id string, length int) map[string]any {
	v := map[string]any{"service": "direct", "id": "https://example.com/" + id}
	if length > 0 {
		v["length"] = length
	}
	return v
}

func request(typ int, fields ...any) map[string]any {
	r := map[string]any{"type": typ}
	for i := 0; i+1 < len(fields); i += 2 {
		r[fields[i].(string)] = fields[i+1]
	}
	return map[string]any{"action": "req", "request": r}
}

// syncUntil reads syncs until one whose currentSource is the video id.
func (c *client) syncUntil(id string) {
	c.t.Helper()
	for {
		m := c.mustNext("sync")
		if cur, _ := m["currentSource"].(map[string]any); cur != nil && cur["id"] == "https://example.com/"+id {
			return
		}
	}
}

// rejoin joins room as a browser reconnecting after a move does, and
// returns the client with its first sync. A join that reached the old owner
// just before the move began is closed with 1012 like the others: the
// browser joins again.
func rejoin(t *testing.T, r, room, token string) (*client, map[string]any) {
	t.Helper()
	for range 3 {
		c, err := join(t, r, room, token)
		if err != nil {
			t.Fatalf("rejoin: %v", err)
		}
		m, err := c.next("sync", 10*time.Second)
		if err == nil {
			return c, m
		}
		if !strings.Contains(err.Error(), "closed (1012)") {
			t.Fatalf("rejoin: %v", err)
		}
	}
	t.Fatalf("rejoin: closed with 1012 three times")
	return nil, nil
}

// fullSync reads messages until a full sync (one with the room's title).
func (c *client) fullSync(limit time.Duration) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		m, err := c.next("sync", time.Until(deadline))
		if err != nil {
			c.t.Fatalf("no full sync: %v", err)
		}
		if _, full := m["title"]; full {
			return m
		}
	}
}

// added reads the next sync and reports whether it shows the video id
// queued or playing (a sync of the room's creation may still be on its
// way; the tick may have moved the video into the player already).
func (c *client) added(id string) bool {
	c.t.Helper()
	m := c.mustNext("sync")
	if cur, _ := m["currentSource"].(map[string]any); cur != nil && cur["id"] == "https://example.com/"+id {
		return true
	}
	q, _ := m["queue"].([]any)
	for _, v := range q {
		if v, _ := v.(map[string]any); v["id"] == "https://example.com/"+id {
			return true
		}
	}
	return false
}

// playing reads syncs until one shows the player playing.
func (c *client) playing() {
	c.t.Helper()
	for c.mustNext("sync")["isPlaying"] != true {
	}
}

// A change followed at once by a move is not lost: the next owner loads
// the room only once the monolith's write of it has landed, whether the
// change came from a client's request or from the monolith's own 1 s tick,
// and whether or not the room still had clients on the node when it moved
// (a room without clients sends no changes here). The monolith writes a
// room 5 s after its last change, and that write outlives the unload.
func TestChangeThenMoveKeepsTheChange(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the monolith's state debounce")
	}
	for _, tc := range []struct {
		name      string
		tick      bool // the last change is the tick's, not the request's
		leave     bool // the client leaves before the move
		drain     bool // a drain of the node, not a move of the room
		wantQueue bool // the added video may still be queued, not playing
	}{
		{name: "request", drain: true, wantQueue: true},
		{name: "request-no-clients", leave: true, wantQueue: true},
		{name: "tick", tick: true},
		{name: "tick-no-clients", tick: true, leave: true, drain: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
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
			want := "b"
			if tc.tick {
				// A ends one second into its play: the tick then plays B.
				for _, req := range []map[string]any{
					request(5, "video", video("a", 1)),
					request(5, "video", video("b", 1000)),
				} {
					if err := alice.send(req); err != nil {
						t.Fatal(err)
					}
				}
				alice.syncUntil("a") // the tick moved A into the empty player
				if err := alice.send(request(2, "state", true)); err != nil {
					t.Fatal(err)
				}
				if tc.leave {
					alice.playing() // applied before she goes
					alice.Conn.Close()
					time.Sleep(2500 * time.Millisecond) // A ends unseen
				} else {
					alice.syncUntil("b")
				}
			} else {
				if err := alice.send(request(5, "video", video("b", 0))); err != nil {
					t.Fatal(err)
				}
				// Applied (its sync is out), not yet written.
				for !alice.added(want) {
				}
				if tc.leave {
					alice.Conn.Close()
				}
			}
			moveAway(t, c, nodeOf(t, c, alice.node), "queue", tc.drain)
			var s map[string]any
			if tc.leave {
				_, s = rejoin(t, r, "queue", token)
			} else {
				// Carried over: the next owner's join sequence begins
				// with the room's full state.
				s = alice.fullSync(20 * time.Second)
			}
			if to := nodeAfter(t, c, "queue"); to == alice.node {
				t.Fatalf("the room is still on the node it moved from, %s", to)
			}
			cur, _ := s["currentSource"].(map[string]any)
			if cur != nil && cur["id"] == "https://example.com/"+want {
				return
			}
			if tc.wantQueue {
				if q, _ := s["queue"].([]any); len(q) == 1 {
					if v, _ := q[0].(map[string]any); v["id"] == "https://example.com/"+want {
						return
					}
				}
			}
			t.Fatalf("the new owner's room has currentSource %v and queue %v: the change made just before the move is lost", s["currentSource"], s["queue"])
		})
	}
}

// A room made and moved before the monolith's first write of it (5 s after
// it was made) loads on its new owner, with what it was made with.
func TestNewRoomMovedBeforeFirstWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the monolith's state debounce")
	}
	c := nodeCluster(t, 2)
	r := c.Routers[0].Addr
	token := grant(t, r)
	if res, body := do(t, r, "POST", "/api/room/create", `{"name":"Fresh","title":"made just now","isTemporary":true}`); res.StatusCode != 200 {
		t.Fatalf("create: %d %s", res.StatusCode, body)
	}
	var from *cluster.Node
	for _, n := range c.Nodes {
		if o, err := c.Registry.Owner(context.Background(), "fresh"); err == nil && o.Node == n.ID {
			from = n
		}
	}
	if from == nil {
		t.Fatal("the new room has no owner")
	}
	moveAway(t, c, from, "fresh", false)
	alice, s := rejoin(t, r, "fresh", token)
	if alice.node == from.ID {
		t.Fatalf("joined on the node it moved from, %s", alice.node)
	}
	if s["title"] != "made just now" {
		t.Fatalf("the moved room's title is %v, want the one it was made with", s["title"])
	}
}
