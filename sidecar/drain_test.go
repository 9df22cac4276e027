package sidecar

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/internal/nodemonolith"
	"github.com/roomlb/roomlb/internal/roomlbtest"
	"github.com/roomlb/roomlb/ott/otttest"
	"github.com/roomlb/roomlb/registry"
)

// monolith is what the drain test needs of a monolith.
type monolith struct {
	name         string
	balancerAddr string
}

// testDrain drains node a, with 200 rooms and 1,000 clients, onto b and c:
// every room is claimed elsewhere with a higher epoch and loads the state a
// last had, no room is served by two nodes at once (serve logs), a's sidecar exits 0 within
// its timeout, and b (more spare capacity) takes more rooms than c.
func testDrain(t *testing.T, reg *registry.Registry, monos [3]monolith, rooms, perRoom int) {
	obs := newObserver()
	for _, m := range monos {
		obs.watch(t, m.name, m.balancerAddr)
	}
	var served roomlbtest.Buffer
	a := startSidecar(t, reg, "node-a", monos[0].balancerAddr, func(c *Config) { c.ServeLog = &served })
	b := startSidecar(t, reg, "node-b", monos[1].balancerAddr, func(c *Config) { c.Capacity, c.ServeLog = 1200, &served })
	c := startSidecar(t, reg, "node-c", monos[2].balancerAddr, func(c *Config) { c.Capacity, c.ServeLog = 600, &served })
	ctx := context.Background()

	token := grant(t, a.Addr())
	epochs := map[string]int64{}
	var clients []*wsClient
	for i := range rooms {
		name := fmt.Sprintf("Drain-%03d", i)
		createRoom(t, a.Addr(), name)
		o, err := reg.Owner(ctx, name)
		if err != nil || o.Node != "node-a" {
			t.Fatalf("room %s owner %+v, %v", name, o, err)
		}
		epochs[strings.ToLower(name)] = o.Epoch
		for j := range perRoom {
			cl, _, err := dial(t, a.Addr(), name, token)
			if err != nil {
				t.Fatalf("dial %s: %v", name, err)
			}
			cl.next("you", 10*time.Second)
			if j == 0 {
				// The room's last change before the drain: seek to a
				// position only this room has.
				cl.sendJSON(map[string]any{"action": "req", "request": map[string]any{"type": 4, "value": float64(1000 + i)}})
			}
			clients = append(clients, cl)
		}
	}
	// Every seek has reached the monolith (it echoes the new position).
	for i := 0; i < len(clients); i += perRoom {
		for {
			m := clients[i].next("sync", 10*time.Second)
			if _, ok := m["playbackPosition"]; ok && m["playbackPosition"] == float64(1000+i/perRoom) {
				break
			}
		}
	}

	start := time.Now()
	a.cancel() // SIGTERM: drain
	select {
	case <-a.done:
	case <-time.After(a.cfg.DrainTimeout + 5*time.Second):
		t.Fatal("drained sidecar did not exit")
	}
	took := time.Since(start)
	if err := a.err; err != nil {
		t.Fatalf("drained sidecar exited with %v, want nil (exit 0)", err)
	}
	if took > a.cfg.DrainTimeout {
		t.Fatalf("drain took %v, more than its timeout %v", took, a.cfg.DrainTimeout)
	}
	t.Logf("drained %d rooms with %d clients in %v", rooms, len(clients), took)
	for _, cl := range clients {
		if code := cl.closeCode(5 * time.Second); code != contract.CloseServiceRestart {
			t.Fatalf("client closed with %d, want %d (reconnect)", code, contract.CloseServiceRestart)
		}
	}

	// Every room is owned by b or c, at a higher epoch, loaded there.
	per := map[string]int{}
	var missing []string
	waitFor(t, 10*time.Second, "every room claimed elsewhere", func() bool {
		missing = missing[:0]
		for key := range epochs {
			if o, err := reg.Owner(ctx, key); err != nil || o.Node == "node-a" {
				missing = append(missing, fmt.Sprintf("%s (%+v, %v)", key, o, err))
			}
		}
		if len(missing) > 0 && len(missing) < 5 {
			t.Logf("not moved yet: %v", missing)
			for _, m := range missing {
				k, _, _ := strings.Cut(m, " ")
				obs.mu.Lock()
				t.Logf("trace %s: %v", k, obs.trace[k])
				obs.mu.Unlock()
			}
		}
		return len(missing) == 0
	})
	for key, old := range epochs {
		o, _ := reg.Owner(ctx, key)
		if o.Epoch <= old {
			t.Errorf("room %s moved to %s at epoch %d, not above %d", key, o.Node, o.Epoch, old)
		}
		per[o.Node]++
	}
	t.Logf("rooms per node after the drain: %v", per)
	if per["node-b"] <= per["node-c"] {
		t.Errorf("node-b (capacity 1200) took %d rooms, node-c (capacity 600) %d: want more on b", per["node-b"], per["node-c"])
	}
	if alive, _ := reg.Alive(ctx, "node-a"); alive {
		t.Error("drained node still registered")
	}

	// A client rejoining each room gets the state a last had.
	for i := range rooms {
		name := fmt.Sprintf("drain-%03d", i)
		o, _ := reg.Owner(ctx, name)
		addr := b.Addr()
		if o.Node == "node-c" {
			addr = c.Addr()
		}
		cl, _, err := dial(t, addr, name, token)
		if err != nil {
			t.Fatalf("rejoin %s on %s: %v", name, o.Node, err)
		}
		sync := cl.next("sync", 10*time.Second)
		if got := sync["playbackPosition"]; got != float64(1000+i) {
			stored := reg.Client().Get(ctx, "room:"+fmt.Sprintf("Drain-%03d", i)).Val()
			t.Logf("stored state of %s: %.300s", name, stored)
			t.Logf("sync: %v", sync)
			t.Fatalf("room %s on %s loaded with playbackPosition %v, want %d (the state before the drain)", name, o.Node, got, 1000+i)
		}
		cl.Conn.Close()
	}
	b.flushServeLog()
	c.flushServeLog()
	if faults := CheckServeLog(serveRecords(t, &served)); len(faults) > 0 {
		t.Errorf("serve logs: %+v", faults)
	}
}

var drainRooms = 200

func TestDrainNode(t *testing.T) {
	reg, srv := newTestRegistry(t)
	var monos [3]monolith
	for i, name := range []string{"a", "b", "c"} {
		p := nodemonolith.Start(t, srv.URL(), "STATE_DEBOUNCE_MS=300")
		monos[i] = monolith{name: name, balancerAddr: p.BalancerAddr}
	}
	testDrain(t, reg, monos, drainRooms, 5)
}

// TestDrainWaitsForALateWrite: the monolith's write of a room's last change
// lands 2 s later than its debounce says (a loaded machine fires timers
// late); the drain hands the room over only after it has landed, seen in
// Redis, so the next owner loads the change. A drain that only trusted the
// debounce (and its 1 s margin) would hand over the state before.
func TestDrainWaitsForALateWrite(t *testing.T) {
	reg, srv := newTestRegistry(t)
	var monos [2]*otttest.Monolith
	for i := range monos {
		m, err := otttest.New(otttest.Config{
			Redis:         srv.Client(),
			StateDebounce: 300 * time.Millisecond,
			WriteLate:     2 * time.Second,
			Logger:        testLogger(t).With("monolith", i),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		monos[i] = m
	}
	a := startSidecar(t, reg, "node-a", monos[0].BalancerAddr(), nil)
	b := startSidecar(t, reg, "node-b", monos[1].BalancerAddr(), nil)
	createRoom(t, a.Addr(), "Late")
	token := grant(t, a.Addr())
	c, _, err := dial(t, a.Addr(), "late", token)
	if err != nil {
		t.Fatal(err)
	}
	c.next("you", 5*time.Second)
	time.Sleep(3 * time.Second) // the room's first write
	c.sendJSON(map[string]any{"action": "req", "request": map[string]any{"type": 5, "video": map[string]any{"service": "direct", "id": "late"}}})
	for {
		if q, _ := c.next("sync", 5*time.Second)["queue"].([]any); len(q) == 1 {
			break
		}
	}
	start := time.Now()
	a.cancel() // SIGTERM: drain
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		t.Fatal("drained sidecar did not exit")
	}
	took := time.Since(start)
	d, _, err := dial(t, b.Addr(), "late", token)
	if err != nil {
		t.Fatal(err)
	}
	s := d.next("sync", 5*time.Second)
	q, _ := s["queue"].([]any)
	if len(q) != 1 && s["currentSource"] == nil {
		t.Fatalf("the next owner loaded queue %v, currentSource %v: the late write of the change was not waited for (drain took %v)", s["queue"], s["currentSource"], took)
	}
	t.Logf("drain took %v", took)
}
