package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// EventKind says what an event is about.
type EventKind string

// Event kinds. The first six are published by the scripts; Resync is made by
// Watch itself.
const (
	EventClaim    EventKind = "claim"   // Node claimed Room at Epoch
	EventRelease  EventKind = "release" // Node released Room (it has no owner now)
	EventMove     EventKind = "move"    // Room moved to Node at Epoch (transfer)
	EventSteal    EventKind = "steal"   // Node took Room from a dead node at Epoch
	EventNodeUp   EventKind = "node_up"
	EventNodeDown EventKind = "node_down"
	// EventNodeActive and EventNodeDraining: a live node changed state.
	EventNodeActive   EventKind = "node_active"
	EventNodeDraining EventKind = "node_draining"
	// EventResync: the subscription was (re)established; events may have been
	// missed before it, so every cached owner must be dropped.
	EventResync EventKind = "resync"
)

// Event is a hint that ownership or a node changed. Events are delivered at
// most once (Redis pub/sub): they invalidate caches, they never replace a
// registry lookup.
type Event struct {
	Kind  EventKind `json:"kind"`
	Room  string    `json:"room,omitempty"`
	Node  string    `json:"node,omitempty"`
	Epoch int64     `json:"epoch,omitempty"`
}

// Watch subscribes to the registry's events and calls fn for each, in order,
// until ctx ends; then it returns nil. fn runs on Watch's goroutine and must
// not block for long. Every time the subscription is established, first or
// after a lost connection (go-redis reconnects by itself), fn gets an
// EventResync. Malformed messages are logged and skipped.
func (r *Registry) Watch(ctx context.Context, fn func(Event)) error {
	ps := r.rdb.Subscribe(ctx, r.Channel())
	defer ps.Close()
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	for {
		msg, err := ps.Receive(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, redis.ErrClosed) {
				return nil
			}
			// go-redis redials and resubscribes on the next Receive; back
			// off a little so a Redis that is down is not hammered.
			r.log.Warn("registry: events subscription", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				fn(Event{Kind: EventResync})
			}
		case *redis.Message:
			var e Event
			if err := json.Unmarshal([]byte(m.Payload), &e); err != nil || e.Kind == "" {
				r.log.Warn("registry: malformed event", "payload", m.Payload, "err", err)
				continue
			}
			fn(e)
		case *redis.Pong:
		default:
			r.log.Warn("registry: unexpected pub/sub message", "type", fmt.Sprintf("%T", msg))
		}
	}
}
