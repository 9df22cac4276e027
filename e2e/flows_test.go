package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/cluster"
	"github.com/roomlb/roomlb/ott/otttest"
	"github.com/roomlb/roomlb/sidecar"
)

// The seed's four sequence diagrams, each through two routers: what one
// router sets up, the other serves on the same node.

func TestJoinLoadedRoom(t *testing.T) {
	c, _ := start(t, 3, 2, nil)
	r1, r2 := c.Routers[0].Addr, c.Routers[1].Addr
	token := grant(t, r1)
	if res, body := do(t, r1, "POST", "/api/room/create", `{"name":"Foo","isTemporary":true}`); res.StatusCode != 200 {
		t.Fatalf("create: %d %s", res.StatusCode, body)
	}
	alice, err := join(t, r1, "foo", token)
	if err != nil {
		t.Fatal(err)
	}
	alice.mustNext("you")
	bob, err := join(t, r2, "FOO", token)
	if err != nil {
		t.Fatal(err)
	}
	if s := bob.mustNext("sync"); s["name"] != "Foo" {
		t.Fatalf("bob's sync names %v", s["name"])
	}
	if alice.node == "" || alice.node != bob.node {
		t.Fatalf("alice on %q, bob on %q: want the same node", alice.node, bob.node)
	}
	bob.mustNext("you")
	bob.chat("hello alice")
	if m := alice.mustNext("chat"); m["text"] != "hello alice" {
		t.Fatalf("alice got %v", m)
	}
}

func TestJoinUnloadedRoom(t *testing.T) {
	c, srv := start(t, 3, 2, nil)
	// A permanent room in the database, loaded nowhere.
	srv.Client().HSet(context.Background(), otttest.RefDBKey, "archive",
		`{"name":"Archive","title":"old films","description":"","visibility":"public","queueMode":"manual"}`)
	token := grant(t, c.Routers[0].Addr)
	a, err := join(t, c.Routers[0].Addr, "archive", token)
	if err != nil {
		t.Fatal(err)
	}
	if s := a.mustNext("sync"); s["title"] != "old films" {
		t.Fatalf("sync %v, want the room from the database", s)
	}
	o, err := c.Registry.Owner(context.Background(), "archive")
	if err != nil || o.Node != a.node {
		t.Fatalf("owner %+v, %v; want the node that served the join, %s", o, err, a.node)
	}
	b, err := join(t, c.Routers[1].Addr, "Archive", token)
	if err != nil {
		t.Fatal(err)
	}
	b.mustNext("sync")
	if b.node != a.node {
		t.Fatalf("second join served by %s, first by %s", b.node, a.node)
	}
}

func TestGenerateRoom(t *testing.T) {
	c, _ := start(t, 3, 2, nil)
	res, body := do(t, c.Routers[0].Addr, "POST", "/api/room/generate", "")
	var g struct {
		Success bool
		Room    string
	}
	if res.StatusCode != 200 || json.Unmarshal([]byte(body), &g) != nil || g.Room == "" {
		t.Fatalf("generate: %d %s", res.StatusCode, body)
	}
	// The claim is in the registry before the answer reached the client.
	o, err := c.Registry.Owner(context.Background(), g.Room)
	if err != nil || o.Node != res.Header.Get("X-Roomlb-Node") {
		t.Fatalf("owner of the generated room %+v, %v; want %s at once", o, err, res.Header.Get("X-Roomlb-Node"))
	}
	a, err := join(t, c.Routers[1].Addr, g.Room, grant(t, c.Routers[1].Addr))
	if err != nil {
		t.Fatal(err)
	}
	a.mustNext("sync")
	if a.node != o.Node {
		t.Fatalf("join served by %s, room generated on %s", a.node, o.Node)
	}
}

func TestCreateNamedRoom(t *testing.T) {
	c, _ := start(t, 3, 2, nil)
	res, body := do(t, c.Routers[0].Addr, "POST", "/api/room/create", `{"name":"Premiere","isTemporary":true,"title":"first"}`)
	if res.StatusCode != 200 {
		t.Fatalf("create: %d %s", res.StatusCode, body)
	}
	o, err := c.Registry.Owner(context.Background(), "premiere")
	if err != nil || o.Node != res.Header.Get("X-Roomlb-Node") {
		t.Fatalf("owner %+v, %v; want the creating node at once", o, err)
	}
	// The same name again, through the other router: taken, wherever the
	// placement lands.
	for range 3 {
		res, body := do(t, c.Routers[1].Addr, "POST", "/api/room/create", `{"name":"premiere","isTemporary":true}`)
		if res.StatusCode != 400 || !strings.Contains(body, "RoomNameTakenException") {
			t.Fatalf("second create: %d %s, want 400 RoomNameTakenException", res.StatusCode, body)
		}
	}
	a, err := join(t, c.Routers[1].Addr, "premiere", grant(t, c.Routers[1].Addr))
	if err != nil {
		t.Fatal(err)
	}
	if s := a.mustNext("sync"); s["title"] != "first" || a.node != o.Node {
		t.Fatalf("join: title %v on %s, want first on %s", s["title"], a.node, o.Node)
	}
}

// TestThunderingJoins: 100 clients join one unloaded room through two
// routers at once: one owner, everyone on its node, in one room instance.
func TestThunderingJoins(t *testing.T) {
	c, srv := start(t, 3, 2, nil)
	srv.Client().HSet(context.Background(), otttest.RefDBKey, "stampede",
		`{"name":"Stampede","title":"","description":"","visibility":"public","queueMode":"manual"}`)
	token := grant(t, c.Routers[0].Addr)
	const n = 100
	var wg sync.WaitGroup
	nodes := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := join(t, c.Routers[i%2].Addr, "stampede", token)
			if err == nil {
				_, err = cl.next("you", 15*time.Second)
			}
			nodes[i], errs[i] = cl.nodeOr(err)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	o, err := c.Registry.Owner(context.Background(), "stampede")
	if err != nil {
		t.Fatal(err)
	}
	for i, node := range nodes {
		if node != o.Node {
			t.Fatalf("client %d on %s, owner is %s", i, node, o.Node)
		}
	}
	for _, nd := range c.Nodes {
		for _, r := range nd.Fake.Rooms() {
			if r.Name != "Stampede" {
				continue
			}
			if nd.ID != o.Node || r.Instances != 1 || r.Clients != n {
				t.Fatalf("monolith of %s holds Stampede %+v; want only the owner %s, one instance, %d clients", nd.ID, r, o.Node, n)
			}
		}
	}
}

func (c *client) nodeOr(err error) (string, error) {
	if err != nil {
		return "", err
	}
	return c.node, nil
}

// TestStaleCacheFollowsTheRoom: routers cached the room's owner; the room
// moves (its node drains); the next join still reaches the new owner.
func TestStaleCacheFollowsTheRoom(t *testing.T) {
	c, _ := start(t, 3, 2, nil)
	r := c.Routers[0].Addr
	token := grant(t, r)
	do(t, r, "POST", "/api/room/create", `{"name":"Nomad","isTemporary":true}`)
	a, err := join(t, r, "nomad", token)
	if err != nil {
		t.Fatal(err)
	}
	a.mustNext("you")
	a.send(map[string]any{"action": "req", "request": map[string]any{"type": 4, "value": 77.0}})
	a.mustNext("sync")
	var old *cluster.Node
	for _, n := range c.Nodes {
		if n.ID == a.node {
			old = n
		}
	}
	if err := old.Drain(); err != nil {
		t.Fatalf("drain: %v", err)
	}
	for _, rt := range c.Routers {
		b, err := join(t, rt.Addr, "nomad", token)
		if err != nil {
			t.Fatal(err)
		}
		s := b.mustNext("sync")
		if b.node == old.ID || s["playbackPosition"] != 77.0 {
			t.Fatalf("after the move: served by %s with position %v; want another node with 77", b.node, s["playbackPosition"])
		}
	}
}

// TestOwnerKilledFailover: a node dies without a word; the next join of its
// room is served by another node as soon as the dead node's heartbeat key
// is gone, without waiting for the room's lease.
func TestOwnerKilledFailover(t *testing.T) {
	c, _ := start(t, 3, 2, func(o *cluster.Options) {
		// Failover waits for the dead node's heartbeat to expire.
		base := o.Sidecar
		o.Sidecar = func(i int, sc *sidecar.Config) {
			base(i, sc)
			sc.HeartbeatTTL = 600 * time.Millisecond
		}
	})
	r := c.Routers[0].Addr
	token := grant(t, r)
	do(t, r, "POST", "/api/room/create", `{"name":"Phoenix","isTemporary":true}`)
	a, err := join(t, r, "phoenix", token)
	if err != nil {
		t.Fatal(err)
	}
	a.mustNext("you")
	time.Sleep(300 * time.Millisecond) // the room's state reaches Redis
	var victim *cluster.Node
	for _, n := range c.Nodes {
		if n.ID == a.node {
			victim = n
		}
	}
	killed := time.Now()
	victim.Kill()
	b, err := join(t, c.Routers[1].Addr, "phoenix", token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.next("sync", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	took := time.Since(killed)
	t.Logf("join served by %s %v after %s was killed", b.node, took, victim.ID)
	// The room's lease (3 s) has not run out: another node took it
	// because the dead owner's heartbeat key was gone.
	if b.node == victim.ID || took >= 3*time.Second {
		t.Fatalf("served by %s after %v; want another node before the lease (3s) ran out", b.node, took)
	}
}
