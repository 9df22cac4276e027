package router

import (
	"testing"
	"time"

	"github.com/roomlb/roomlb/registry"
)

// TestNodeHistory: one sample per step, the last historySpan kept, nodes
// that left forgotten.
func TestNodeHistory(t *testing.T) {
	var h nodeHistory
	t0 := time.Unix(1_800_000_000, 0)
	a := registry.Node{ID: "a", Clients: 1, Rooms: 1}
	b := registry.Node{ID: "b", Clients: 7, Rooms: 2}
	for i := range 200 { // a reading a second, as the router's refresh
		a.Clients = i
		h.record([]registry.Node{a, b}, t0.Add(time.Duration(i)*time.Second))
	}
	pts := h.points("a")
	if len(pts) != 40 {
		t.Fatalf("%d samples after 200 s, want 40 (one per %v)", len(pts), historyStep)
	}
	if pts[0][1] != 0 || pts[len(pts)-1][1] != 195 {
		t.Fatalf("samples %v ... %v, want clients 0 first and 195 last", pts[0], pts[len(pts)-1])
	}
	for i := 200; i < 700; i++ {
		h.record([]registry.Node{a}, t0.Add(time.Duration(i)*time.Second))
	}
	pts = h.points("a")
	if first, last := time.UnixMilli(pts[0][0]), time.UnixMilli(pts[len(pts)-1][0]); last.Sub(first) > historySpan || len(pts) != int(historySpan/historyStep)+1 {
		t.Fatalf("%d samples from %v to %v kept, want the last %v", len(pts), first, last, historySpan)
	}
	if len(h.points("b")) != 0 {
		t.Fatalf("node b left but its samples are kept")
	}
}
