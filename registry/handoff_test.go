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
	for i := range 10 {
		name := fmt.Sprintf("Room-%d", i)
		if err := r.OfferHandoff(ctx, Handoff{Room: name, Name: name, From: "node-a", Epoch: int64(100 + i)}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := r.TakeHandoffs(ctx, "node-b", 4, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.TakeHandoffs(ctx, "node-c", 100, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 4 || len(c) != 6 {
		t.Fatalf("node-b took %d, node-c %d; want 4 and 6 (each entry once)", len(b), len(c))
	}
	if h := b[0]; h.Room != "room-0" || h.Name != "Room-0" || h.From != "node-a" || h.Epoch != 100 {
		t.Fatalf("first handoff = %+v", h)
	}
	for _, h := range b {
		if err := r.AckHandoff(ctx, h.ID); err != nil {
			t.Fatal(err)
		}
	}
	// node-c dies with its six unacknowledged: housekeeping offers them again.
	n, err := r.RequeueHandoffs(ctx, 0)
	if err != nil || n != 6 {
		t.Fatalf("requeued %d, %v; want 6", n, err)
	}
	d, err := r.TakeHandoffs(ctx, "node-d", 100, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var rooms []string
	for _, h := range d {
		rooms = append(rooms, h.Room)
		r.AckHandoff(ctx, h.ID)
	}
	sort.Strings(rooms)
	if fmt.Sprint(rooms) != "[room-4 room-5 room-6 room-7 room-8 room-9]" {
		t.Fatalf("node-d took %v, want rooms 4 to 9", rooms)
	}
	if n, _ := r.RequeueHandoffs(ctx, 0); n != 0 {
		t.Fatalf("requeued %d after all were acknowledged, want 0", n)
	}

	// After Redis lost its data the group is made again.
	r.Client().FlushAll(ctx)
	r.OfferHandoff(ctx, Handoff{Room: "again", Name: "again", From: "node-a", Epoch: 1})
	e, err := r.TakeHandoffs(ctx, "node-b", 10, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The group is created at "0" on first use, so the entry offered before
	// it existed is still delivered.
	if len(e) != 1 || e[0].Room != "again" {
		t.Fatalf("after FLUSHALL took %+v, want the room offered", e)
	}
}
