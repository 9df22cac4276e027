package sidecar

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/redistest"
	"github.com/roomlb/roomlb/ott/otttest"
)

// startFake starts a Go fake monolith on srv, with a short state debounce.
func startFake(t testing.TB, srv *redistest.Server) *otttest.Monolith {
	t.Helper()
	m, err := otttest.New(otttest.Config{
		Redis:         srv.Client(),
		StateDebounce: 300 * time.Millisecond,
		Logger:        testLogger(t).With("monolith", "fake"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestJoinBroadcastFake: a chat request reaches every client of the room,
// while the monolith sent one room_msg for it, counted on the monolith.
func TestJoinBroadcastFake(t *testing.T) {
	reg, srv := newTestRegistry(t)
	mono := startFake(t, srv)
	sc := startSidecar(t, reg, "node-a", mono.BalancerAddr(), nil)
	addr := sc.Addr()
	createRoom(t, addr, "Lounge")
	token := grant(t, addr)
	const n = 20
	clients := make([]*wsClient, n)
	for i := range clients {
		c, _, err := dial(t, addr, "LOUNGE", token)
		if err != nil {
			t.Fatal(err)
		}
		if sync := c.next("sync", 5*time.Second); sync["name"] != "Lounge" {
			t.Fatalf("sync names %v, want the canonical Lounge", sync["name"])
		}
		c.next("you", 5*time.Second)
		clients[i] = c
	}
	time.Sleep(200 * time.Millisecond)
	before := mono.Sent("room_msg")
	clients[7].sendJSON(map[string]any{"action": "req", "request": map[string]any{"type": 11, "text": "one for all"}})
	for i, c := range clients {
		if m := c.next("chat", 5*time.Second); m["text"] != "one for all" {
			t.Fatalf("client %d: %v", i, m)
		}
	}
	if got := mono.Sent("room_msg") - before; got != 1 {
		t.Fatalf("monolith sent %d room_msgs for one chat to %d clients, want 1", got, n)
	}
	if mono.Crashed() {
		t.Fatal("monolith crashed")
	}
}

func TestDrainFake(t *testing.T) {
	reg, srv := newTestRegistry(t)
	var monos [3]monolith
	fakes := make([]*otttest.Monolith, 3)
	for i, name := range []string{"a", "b", "c"} {
		fakes[i] = startFake(t, srv)
		monos[i] = monolith{name: name, balancerAddr: fakes[i].BalancerAddr()}
	}
	testDrain(t, reg, monos, drainRooms, 5)
	for i, f := range fakes {
		if f.Crashed() {
			t.Errorf("monolith %d crashed", i)
		}
		for _, r := range f.Rooms() {
			if r.Instances > 1 {
				t.Errorf("monolith %d holds %d instances of %s", i, r.Instances, r.Name)
			}
		}
	}
}

// TestConcurrentJoinsOneLoad: many clients joining one unloaded room at once
// make the monolith load it once (a second join or load before loaded
// would create a duplicate instance, ott/PROTOCOL.md §8 item 4).
func TestConcurrentJoinsOneLoad(t *testing.T) {
	sc2, mono := startStoredRoom(t, "Crowd")
	token := grant(t, sc2.Addr())
	const n = 30
	errs := make(chan error, n)
	for i := range n {
		go func() {
			c, _, err := dial(t, sc2.Addr(), "crowd", token)
			if err != nil {
				errs <- err
				return
			}
			select {
			case <-time.After(10 * time.Second):
				errs <- fmt.Errorf("client %d: no sync", i)
			case m := <-c.Msgs:
				if m["action"] != "sync" {
					errs <- fmt.Errorf("client %d: first message %v", i, m["action"])
					return
				}
				errs <- nil
			}
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range mono.Rooms() {
		if r.Name == "Crowd" && r.Instances != 1 {
			t.Fatalf("monolith holds %d instances of Crowd, want 1", r.Instances)
		}
	}
	if mono.Crashed() {
		t.Fatal("monolith crashed")
	}
}

// startStoredRoom creates room on a node-a over the Go fake monolith (slow
// to load), drains node-a once the room's state is in Redis, and returns a
// new node-a2 on the same monolith: room is stored but loaded nowhere.
func startStoredRoom(t *testing.T, room string) (*running, *otttest.Monolith) {
	t.Helper()
	reg, srv := newTestRegistry(t)
	mono, err := otttest.New(otttest.Config{Redis: srv.Client(), LoadDelay: 200 * time.Millisecond, StateDebounce: 200 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mono.Close() })
	sc := startSidecar(t, reg, "node-a", mono.BalancerAddr(), nil)
	createRoom(t, sc.Addr(), room)
	waitFor(t, 5*time.Second, "state written", func() bool {
		return srv.Client().Exists(context.Background(), "room:"+room).Val() == 1
	})
	if code, _, _ := call(t, sc.Addr(), "POST", "/admin/drain", ""); code != 202 {
		t.Fatalf("drain = %d", code)
	}
	<-sc.done
	return startSidecar(t, reg, "node-a2", mono.BalancerAddr(), nil), mono
}
