package registry

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"
)

func TestHandoff(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()

	// Nothing offered: an empty read after the block time, not an error.
	got, err := r.TakeHandoffs(ctx, "node-b", 10, 10*time.Millisecond)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty take = %v, %v", got, err)
	}
	for i := range 6 {
		name := fmt.Sprintf("Room-%d", i)
		if err := r.OfferHandoff(ctx, "node-b", Handoff{Room: name, Name: name, From: "node-a", Epoch: int64(100 + i), Cost: 3}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := r.TakeHandoffs(ctx, "node-b", 4, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 4 {
		t.Fatalf("node-b took %d, want 4", len(b))
	}
	if h := b[0]; h.Room != "room-0" || h.Name != "Room-0" || h.From != "node-a" || h.Epoch != 100 || h.Cost != 3 {
		t.Fatalf("first handoff = %+v", h)
	}
	for _, h := range b[:2] {
		if err := r.AckHandoff(ctx, "node-b", h.ID); err != nil {
			t.Fatal(err)
		}
	}
	// node-b took rooms 2 and 3 without acknowledging them, and 4 and 5
	// are still waiting. A live node gets its stuck entries again.
	r.Heartbeat(ctx, Node{ID: "node-b"}, time.Minute)
	if n, err := r.RequeueHandoffs(ctx, 0); err != nil || n != 2 {
		t.Fatalf("requeued %d, %v; want 2", n, err)
	}
	again, _ := r.TakeHandoffs(ctx, "node-b", 10, time.Second)
	if rooms := handoffRooms(again); rooms != "[room-2 room-3 room-4 room-5]" {
		t.Fatalf("node-b took %v after the requeue, want rooms 2 to 5", rooms)
	}

	// node-b dies with all four unacknowledged: they move to live nodes,
	// most to the one with the most spare capacity.
	r.Deregister(ctx, "node-b")
	r.Heartbeat(ctx, Node{ID: "node-c", Capacity: 10}, time.Minute)
	r.Heartbeat(ctx, Node{ID: "node-d", Capacity: 100}, time.Minute)
	r.Heartbeat(ctx, Node{ID: "node-e", Capacity: 1000, State: StateDraining}, time.Minute)
	if n, err := r.RequeueHandoffs(ctx, time.Hour); err != nil || n != 4 {
		t.Fatalf("moved %d from a dead node, %v; want 4", n, err)
	}
	d, _ := r.TakeHandoffs(ctx, "node-d", 10, time.Second)
	c, _ := r.TakeHandoffs(ctx, "node-c", 10, time.Second)
	e, _ := r.TakeHandoffs(ctx, "node-e", 10, 10*time.Millisecond)
	if len(d) != 4 || len(c) != 0 || len(e) != 0 {
		t.Fatalf("moved to d %d, c %d, draining e %d; want all 4 on d (most spare)", len(d), len(c), len(e))
	}
	if n := r.Client().Exists(ctx, r.handoffKey("node-b")).Val(); n != 0 {
		t.Fatal("dead node's stream left behind")
	}

	// A draining node moves its own stream away.
	r.OfferHandoff(ctx, "node-d", Handoff{Room: "late", Name: "Late", From: "node-x", Cost: 1})
	if n, err := r.MoveHandoffs(ctx, "node-d"); err != nil || n != 5 {
		t.Fatalf("moved %d of node-d's, %v; want 5 (4 taken, 1 waiting)", n, err)
	}
	if c, _ := r.TakeHandoffs(ctx, "node-c", 10, time.Second); len(c) != 5 {
		t.Fatalf("node-c got %d, want 5", len(c))
	}

	// After Redis lost its data the group is made again.
	flushAll(t, r)
	r.OfferHandoff(ctx, "node-b", Handoff{Room: "again", Name: "again", From: "node-a", Epoch: 1})
	if got, err := r.TakeHandoffs(ctx, "node-b", 10, time.Second); err != nil || handoffRooms(got) != "[again]" {
		t.Fatalf("after FLUSHALL took %v, %v; want the room offered", got, err)
	}
}

func handoffRooms(hs []Handoff) string {
	var rooms []string
	for _, h := range hs {
		rooms = append(rooms, h.Room)
	}
	sort.Strings(rooms)
	return fmt.Sprint(rooms)
}

func TestPicker(t *testing.T) {
	p := NewPicker([]Node{
		{ID: "a", State: StateActive, Capacity: 100, Clients: 90},
		{ID: "b", State: StateActive, Capacity: 100},
		{ID: "c", State: StateDraining, Capacity: 1000},
		{ID: "self", State: StateActive, Capacity: 1000},
	}, "self")
	count := map[string]int{}
	for range 50 {
		n, ok := p.Pick(2)
		if !ok {
			t.Fatal("no pick")
		}
		count[n.ID]++
	}
	// b has 100 spare, a 10: b takes rooms until both have the same spare,
	// then they alternate. 50 rooms of 2: b 45 (90), a 5 (10)... spare even.
	if count["c"] != 0 || count["self"] != 0 || count["a"]+count["b"] != 50 || count["b"] < 4*count["a"] {
		t.Fatalf("picks %v: want none on the draining node or self, and b far above a", count)
	}
	if _, ok := NewPicker(nil, "").Pick(1); ok {
		t.Fatal("pick from no nodes succeeded")
	}
}
