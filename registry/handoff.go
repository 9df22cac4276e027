package registry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Handoff is a room a draining node let go of, offered to the other nodes:
// one of them claims it and loads it on its monolith before the room's
// clients come back. It is only a head start: a room that nobody takes is
// placed by the routers on its next join all the same.
type Handoff struct {
	// ID is the stream entry id (set when taken).
	ID string
	// Room is the key form; Name the canonical casing to load it with.
	Room string
	Name string
	// From is the node that released it, at Epoch.
	From  string
	Epoch int64
}

const handoffGroup = "takers"

// handoffMaxLen caps the stream (approximately); entries are acknowledged
// and forgotten within seconds, so only a stuck cluster gets near it.
const handoffMaxLen = 100000

func (r *Registry) handoffKey() string { return r.prefix + "handoff" }

// OfferHandoff puts a released room on the handoff stream.
func (r *Registry) OfferHandoff(ctx context.Context, h Handoff) error {
	room, err := RoomKey(h.Room)
	if err != nil {
		return err
	}
	if _, err := RoomKey(h.Name); err != nil {
		return err
	}
	err = r.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: r.handoffKey(),
		MaxLen: handoffMaxLen,
		Approx: true,
		Values: []any{"room", room, "name", h.Name, "from", h.From, "epoch", strconv.FormatInt(h.Epoch, 10)},
	}).Err()
	if err != nil {
		return fmt.Errorf("offer handoff %s: %w", room, err)
	}
	return nil
}

// TakeHandoffs reads up to count offered rooms for consumer (a node id),
// waiting up to block for the first. Every entry goes to one consumer; it
// stays pending until AckHandoff, and housekeeping offers it again if the
// consumer dies first. No entry within block gives an empty slice.
func (r *Registry) TakeHandoffs(ctx context.Context, consumer string, count int, block time.Duration) ([]Handoff, error) {
	if err := ValidNode(consumer); err != nil {
		return nil, err
	}
	if count < 1 {
		count = 1
	}
	args := &redis.XReadGroupArgs{
		Group:    handoffGroup,
		Consumer: consumer,
		Streams:  []string{r.handoffKey(), ">"},
		Count:    int64(count),
		Block:    block,
	}
	res, err := r.rdb.XReadGroup(ctx, args).Result()
	if err != nil && redis.HasErrorPrefix(err, "NOGROUP") {
		// First use, or Redis lost its data: make the group and read again.
		if err := r.ensureHandoffGroup(ctx); err != nil {
			return nil, err
		}
		res, err = r.rdb.XReadGroup(ctx, args).Result()
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("take handoffs: %w", err)
	}
	var out []Handoff
	for _, s := range res {
		for _, m := range s.Messages {
			out = append(out, parseHandoff(m))
		}
	}
	return out, nil
}

// AckHandoff marks a taken entry done (claimed, or found owned already).
func (r *Registry) AckHandoff(ctx context.Context, id string) error {
	pipe := r.rdb.TxPipeline()
	pipe.XAck(ctx, r.handoffKey(), handoffGroup, id)
	pipe.XDel(ctx, r.handoffKey(), id)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("ack handoff %s: %w", id, err)
	}
	return nil
}

func (r *Registry) ensureHandoffGroup(ctx context.Context) error {
	err := r.rdb.XGroupCreateMkStream(ctx, r.handoffKey(), handoffGroup, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return fmt.Errorf("handoff group: %w", err)
	}
	return nil
}

// RequeueHandoffs offers again every entry that a consumer took more than
// idle ago without acknowledging it (the taker died), and returns how many.
// Housekeeping runs it.
func (r *Registry) RequeueHandoffs(ctx context.Context, idle time.Duration) (int, error) {
	n := 0
	start := "0-0"
	for {
		msgs, next, err := r.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream:   r.handoffKey(),
			Group:    handoffGroup,
			Consumer: "housekeeper",
			MinIdle:  idle,
			Start:    start,
			Count:    100,
		}).Result()
		if err != nil {
			if redis.HasErrorPrefix(err, "NOGROUP") || errors.Is(err, redis.Nil) {
				return n, nil
			}
			return n, fmt.Errorf("requeue handoffs: %w", err)
		}
		for _, m := range msgs {
			h := parseHandoff(m)
			if err := r.OfferHandoff(ctx, h); err != nil {
				return n, err
			}
			if err := r.AckHandoff(ctx, m.ID); err != nil {
				return n, err
			}
			n++
		}
		if next == "0-0" || len(msgs) == 0 {
			return n, nil
		}
		start = next
	}
}

func parseHandoff(m redis.XMessage) Handoff {
	h := Handoff{ID: m.ID}
	h.Room, _ = m.Values["room"].(string)
	h.Name, _ = m.Values["name"].(string)
	h.From, _ = m.Values["from"].(string)
	e, _ := m.Values["epoch"].(string)
	h.Epoch, _ = strconv.ParseInt(e, 10, 64)
	return h
}
