package sidecar

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/roomlbtest"
	"github.com/roomlb/roomlb/ott"
	"github.com/roomlb/roomlb/ott/otttest"
)

// TestGossipCrossingUnloadDoesNotCrash: a room is fenced (its key names
// another node) and unloaded while a gossip the monolith sent earlier still lists it; the
// sidecar must not claim it from that gossip and unload it a second time,
// which kills the real monolith.
func TestGossipCrossingUnloadDoesNotCrash(t *testing.T) {
	reg, srv := newTestRegistry(t)
	mono, err := otttest.New(otttest.Config{
		Redis: srv.Client(), GossipInterval: 10 * time.Millisecond, Logger: testLogger(t).With("monolith", "fake"),
		OnReceive: func(_ string, m ott.B2M, _ error) {
			if m.Type == ott.TypeUnload {
				time.Sleep(100 * time.Millisecond) // a busy event loop
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mono.Close() })
	sc := startSidecar(t, reg, "node-a", mono.BalancerAddr(), nil)
	createRoom(t, sc.Addr(), "Xroom")
	time.Sleep(300 * time.Millisecond)
	// The room's key is changed by hand to another node; a client joins,
	// and the metadata write that follows is refused: the room is lost.
	srv.Client().Set(context.Background(), "roomlb:room:{xroom}", "node-z:gone:99999999999999999", time.Minute)
	if _, _, err := dial(t, sc.Addr(), "xroom", grant(t, sc.Addr())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the room unloaded", func() bool {
		for _, r := range mono.Rooms() {
			if r.Name == "Xroom" {
				return false
			}
		}
		return true
	})
	time.Sleep(300 * time.Millisecond)
	if mono.Crashed() {
		t.Fatal("the monolith crashed: the room was unloaded twice")
	}
}

// TestHTTPRequestsLoadOnce: an HTTP request for an unloaded room loads it
// on the monolith; a join at the same time must wait for that load rather
// than load it a second time, and a request in another casing must load the
// room by the casing its state is stored under.
func TestHTTPRequestsLoadOnce(t *testing.T) {
	sc2, mono := startStoredRoom(t, "Crowd")
	token := grant(t, sc2.Addr())

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if code, _, body := call(t, sc2.Addr(), "GET", "/api/room/crowd", ""); code != 200 {
			t.Errorf("GET /api/room/crowd = %d %s, want the room (stored as Crowd)", code, body)
		}
	}()
	go func() {
		defer wg.Done()
		time.Sleep(20 * time.Millisecond)
		c, _, err := dial(t, sc2.Addr(), "CROWD", token)
		if err != nil {
			t.Error(err)
			return
		}
		c.next("sync", 5*time.Second)
	}()
	wg.Wait()
	for _, r := range mono.Rooms() {
		if r.Name == "Crowd" && r.Instances != 1 {
			t.Fatalf("the monolith holds %d instances of Crowd, want 1", r.Instances)
		}
	}
}

// TestRequestsForMissingRoomsHoldNothing: requests for rooms that do not
// exist leave no claim behind.
func TestRequestsForMissingRoomsHoldNothing(t *testing.T) {
	reg, srv := newTestRegistry(t)
	mono := startFake(t, srv)
	sc := startSidecar(t, reg, "node-a", mono.BalancerAddr(), nil)
	for i := range 20 {
		if code, _, _ := call(t, sc.Addr(), "GET", fmt.Sprintf("/api/room/nosuch%d", i), ""); code != 404 {
			t.Fatalf("GET of a missing room = %d, want the monolith's 404", code)
		}
	}
	c, _, err := dial(t, sc.Addr(), "nosuch-ws", "")
	if err != nil {
		t.Fatal(err)
	}
	c.Conn.WriteMessage(1, []byte("not an auth frame"))
	c.closeCode(5 * time.Second)
	waitFor(t, 2*time.Second, "no room held", func() bool {
		rooms, _ := reg.Rooms(context.Background())
		lk := sc.lock()
		n := len(sc.rooms)
		lk.unlock()
		return len(rooms) == 0 && n == 0
	})
}

// TestLoaderLeavingEarlyStillLoads: the client whose join loads a room
// leaves before the monolith has looked its session up (a slow Redis). The
// monolith drops a join whose client has left, without a word, so the
// sidecar holds the leave until the room has loaded: the next client is
// served at once, not after LoadTimeout.
func TestLoaderLeavingEarlyStillLoads(t *testing.T) {
	reg, srv := newTestRegistry(t)
	mono, err := otttest.New(otttest.Config{Redis: srv.Client(), SessionDelay: 300 * time.Millisecond, StateDebounce: 200 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mono.Close() })
	sc := startSidecar(t, reg, "node-a", mono.BalancerAddr(), func(c *Config) { c.LoadTimeout = 5 * time.Second })
	createRoom(t, sc.Addr(), "Early")
	waitFor(t, 5*time.Second, "state written", func() bool {
		return srv.Client().Exists(context.Background(), "room:Early").Val() == 1
	})
	call(t, sc.Addr(), "POST", "/admin/drain", "")
	<-sc.done
	sc2 := startSidecar(t, reg, "node-a2", mono.BalancerAddr(), func(c *Config) { c.LoadTimeout = 5 * time.Second })
	token := grant(t, sc2.Addr())
	first, _, err := dial(t, sc2.Addr(), "early", token)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // its join is out, the session lookup not done
	first.Conn.Close()
	second, _, err := dial(t, sc2.Addr(), "early", token)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := second.Next("sync", 4*time.Second); err != nil {
		t.Fatalf("the next client was not served: %v (the room did not load: its loader's leave reached the monolith first)", err)
	}
	t.Logf("served %v after it joined", time.Since(start))
}

// A room's key deleted by hand (or lost by Redis without the rest of the
// registry): the owner's next metadata write is refused with no owner named,
// and the owner takes the room back (a reclaim) instead of dropping it, at
// once, without waiting for a heartbeat to tell it anything.
func TestLostKeyIsReclaimed(t *testing.T) {
	reg, srv := newTestRegistry(t)
	mono := startFake(t, srv)
	sc := startSidecar(t, reg, "node-a", mono.BalancerAddr(), nil)
	createRoom(t, sc.Addr(), "Keel")
	ctx := context.Background()
	before, err := reg.Owner(ctx, "keel")
	if err != nil {
		t.Fatal(err)
	}
	srv.Client().Del(ctx, "roomlb:room:{keel}")
	cl, _, err := dial(t, sc.Addr(), "keel", grant(t, sc.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	cl.next("you", 5*time.Second)
	waitFor(t, 5*time.Second, "the room re-claimed", func() bool {
		o, err := reg.Owner(ctx, "keel")
		return err == nil && o.Node == "node-a" && o.Epoch > before.Epoch
	})
	if got := roomlbtest.Counter(t, sc.Sidecar.Gatherer(), `roomlb_sidecar_reclaims_total`); got != 1 {
		t.Errorf("reclaims = %v, want 1: the room is still this node's to take back, not lost", got)
	}
	cl.Chat("still here")
	if m := cl.next("chat", 5*time.Second); m["text"] != "still here" {
		t.Fatalf("chat after the re-claim: %v", m)
	}
}
