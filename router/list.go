package router

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/roomlb/roomlb/registry"
)

// roomList answers /api/room/list from the registry's room metadata. An
// answer is reused for ListCacheTTL, and concurrent requests share one
// refresh, so a burst costs one SCAN.
type roomList struct {
	r *Router

	mu   sync.Mutex // held while refreshing
	body []byte
	at   time.Time
}

// get returns the current list as JSON; a stale one when Redis fails.
func (l *roomList) get(ctx context.Context) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.body != nil && time.Since(l.at) < l.r.cfg.ListCacheTTL {
		return l.body, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*l.r.cfg.RedisTimeout)
	defer cancel()
	rooms, err := l.r.reg.Rooms(ctx)
	if err != nil {
		if l.body != nil {
			return l.body, nil
		}
		return nil, err
	}
	l.body = listJSON(rooms)
	l.at = time.Now()
	return l.body, nil
}

// listJSON renders the public rooms as a JSON array of their RoomMetadata
// objects, most users first, then by name, like the monolith's own list.
func listJSON(rooms []registry.Room) []byte {
	public := rooms[:0:0]
	for _, rm := range rooms {
		if rm.Meta.Visibility == "public" {
			public = append(public, rm)
		}
	}
	name := func(rm registry.Room) string { return cmp.Or(rm.Meta.Name, rm.Room) }
	slices.SortFunc(public, func(a, b registry.Room) int {
		return cmp.Or(cmp.Compare(b.Meta.Users, a.Meta.Users), cmp.Compare(name(a), name(b)))
	})
	out := []byte{'['}
	for i, rm := range public {
		if i > 0 {
			out = append(out, ',')
		}
		if len(rm.Meta.Metadata) > 0 && json.Valid(rm.Meta.Metadata) {
			out = append(out, rm.Meta.Metadata...)
			continue
		}
		// An owner that wrote no RoomMetadata: what the registry knows.
		b, _ := json.Marshal(struct {
			Name       string `json:"name"`
			Visibility string `json:"visibility"`
			Users      int    `json:"users"`
		}{name(rm), rm.Meta.Visibility, rm.Meta.Users})
		out = append(out, b...)
	}
	return append(out, ']')
}
