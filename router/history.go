package router

import (
	"sync"
	"time"

	"github.com/roomlb/roomlb/registry"
)

// The dashboard charts each node's clients and rooms over the last
// minutes. The router samples them from its own readings of the live nodes
// (once a second, for routing): no extra Redis reads, and a chart already
// full when a page opens.
const (
	historySpan = 5 * time.Minute
	historyStep = 5 * time.Second
)

// historyPoint is one sample: unix ms, clients, rooms.
type historyPoint [3]int64

// nodeHistory keeps the samples of each live node.
type nodeHistory struct {
	mu    sync.Mutex
	last  time.Time
	nodes map[string][]historyPoint
}

// record samples list at now, at most once per historyStep; nodes no longer
// live are forgotten.
func (h *nodeHistory) record(list []registry.Node, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.last) < historyStep {
		return
	}
	h.last = now
	if h.nodes == nil {
		h.nodes = map[string][]historyPoint{}
	}
	live := make(map[string]bool, len(list))
	cut := now.Add(-historySpan).UnixMilli()
	for _, n := range list {
		live[n.ID] = true
		pts := append(h.nodes[n.ID], historyPoint{now.UnixMilli(), int64(n.Clients), int64(n.Rooms)})
		i := 0
		for i < len(pts) && pts[i][0] < cut {
			i++
		}
		h.nodes[n.ID] = pts[i:]
	}
	for id := range h.nodes {
		if !live[id] {
			delete(h.nodes, id)
		}
	}
}

// points returns a copy of id's samples, oldest first.
func (h *nodeHistory) points(id string) []historyPoint {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]historyPoint{}, h.nodes[id]...)
}
