package registry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Handoff is a room a draining node let go of, offered to one other node:
// that node claims it and loads it on its monolith before the room's
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
	// Cost is how much of the taker's capacity the room will use (its
	// clients, at least 1).
	Cost int
}

// Each node has its own handoff stream, roomlb:{fleet}:handoff:N, read through a
// consumer group so that an entry taken but not acknowledged (the node died
// while taking it) can be found and offered again.
const handoffGroup = "takers"

// handoffMaxLen caps a stream (approximately); entries are acknowledged and
// deleted within seconds, so only a stuck node gets near it.
const handoffMaxLen = 100000

func (r *Registry) handoffKey(node string) string { return r.fleetKey("handoff:" + node) }

// handoffsKey is the set of the nodes that have a handoff stream, so that
// housekeeping finds the streams without scanning the keyspace.
func (r *Registry) handoffsKey() string { return r.fleetKey("handoffs") }

// OfferHandoff offers a released room to node to.
func (r *Registry) OfferHandoff(ctx context.Context, to string, h Handoff) error {
	if err := ValidNode(to); err != nil {
		return err
	}
	room, err := RoomKey(h.Room)
	if err != nil {
		return err
	}
	if _, err := RoomKey(h.Name); err != nil {
		return err
	}
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, r.handoffsKey(), to)
		p.XAdd(ctx, &redis.XAddArgs{
			Stream: r.handoffKey(to),
			MaxLen: handoffMaxLen,
			Approx: true,
			Values: []any{"room", room, "name", h.Name, "from", h.From,
				"epoch", strconv.FormatInt(h.Epoch, 10), "cost", strconv.Itoa(max(1, h.Cost))},
		})
		return nil
	})
	if err != nil {
		return fmt.Errorf("offer handoff %s to %s: %w", room, to, err)
	}
	return nil
}

// TakeHandoffs reads up to count rooms offered to node, waiting up to block
// for the first. An entry stays pending until AckHandoff; housekeeping
// offers it again if it stays pending too long. Nothing within block gives
// an empty slice.
func (r *Registry) TakeHandoffs(ctx context.Context, node string, count int, block time.Duration) ([]Handoff, error) {
	if err := ValidNode(node); err != nil {
		return nil, err
	}
	args := &redis.XReadGroupArgs{
		Group:    handoffGroup,
		Consumer: node,
		Streams:  []string{r.handoffKey(node), ">"},
		Count:    int64(max(1, count)),
		Block:    block,
	}
	res, err := r.rdb.XReadGroup(ctx, args).Result()
	if err != nil && redis.HasErrorPrefix(err, "NOGROUP") {
		// First use, or Redis lost its data: make the group and read again.
		err = r.rdb.XGroupCreateMkStream(ctx, r.handoffKey(node), handoffGroup, "0").Err()
		if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
			return nil, fmt.Errorf("handoff group of %s: %w", node, err)
		}
		res, err = r.rdb.XReadGroup(ctx, args).Result()
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("take handoffs of %s: %w", node, err)
	}
	var out []Handoff
	for _, s := range res {
		for _, m := range s.Messages {
			out = append(out, parseHandoff(m))
		}
	}
	return out, nil
}

// AckHandoff marks an entry node took as done (claimed, or owned already)
// and deletes it.
func (r *Registry) AckHandoff(ctx context.Context, node, id string) error {
	if err := ValidNode(node); err != nil {
		return err
	}
	pipe := r.rdb.TxPipeline()
	pipe.XAck(ctx, r.handoffKey(node), handoffGroup, id)
	pipe.XDel(ctx, r.handoffKey(node), id)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("ack handoff %s of %s: %w", id, node, err)
	}
	return nil
}

// MoveHandoffs offers every room still waiting in node's stream (taken or
// not) to other live nodes instead, by spare capacity, and returns how
// many. A draining node calls it for itself; housekeeping for dead nodes.
func (r *Registry) MoveHandoffs(ctx context.Context, node string) (int, error) {
	if err := ValidNode(node); err != nil {
		return 0, err
	}
	key := r.handoffKey(node)
	msgs, err := r.rdb.XRange(ctx, key, "-", "+").Result()
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	nodes, err := r.Nodes(ctx)
	if err != nil {
		return 0, err
	}
	p := NewPicker(nodes, node)
	n := 0
	for _, m := range msgs {
		h := parseHandoff(m)
		to, ok := p.Pick(h.Cost)
		if !ok {
			return n, fmt.Errorf("move handoffs of %s: no live active node to take them", node)
		}
		if err := r.OfferHandoff(ctx, to.ID, h); err != nil {
			return n, err
		}
		if err := r.rdb.XDel(ctx, key, m.ID).Err(); err != nil {
			return n, fmt.Errorf("move handoffs of %s: %w", node, err)
		}
		n++
	}
	return n, nil
}

// RequeueHandoffs is housekeeping for handoffs: the streams of nodes that
// are gone are moved to live nodes, and entries a live node took more than
// idle ago without acknowledging them are offered to it again. It returns
// how many entries it moved or offered again.
func (r *Registry) RequeueHandoffs(ctx context.Context, idle time.Duration) (int, error) {
	nodes, err := r.rdb.SMembers(ctx, r.handoffsKey()).Result()
	if err != nil {
		return 0, fmt.Errorf("requeue handoffs: %w", err)
	}
	total := 0
	for _, node := range nodes {
		if ValidNode(node) != nil {
			r.rdb.SRem(ctx, r.handoffsKey(), node)
			continue
		}
		key := r.handoffKey(node)
		alive, err := r.Alive(ctx, node)
		if err != nil {
			return total, err
		}
		if !alive {
			n, err := r.MoveHandoffs(ctx, node)
			total += n
			if err != nil {
				return total, err
			}
			if n > 0 || r.rdb.XLen(ctx, key).Val() == 0 {
				// An offer made meanwhile adds the node again.
				r.rdb.SRem(ctx, r.handoffsKey(), node)
				r.rdb.Del(ctx, key)
			}
			continue
		}
		pending, err := r.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: key, Group: handoffGroup, Idle: idle, Start: "-", End: "+", Count: 1000,
		}).Result()
		if err != nil {
			if redis.HasErrorPrefix(err, "NOGROUP") {
				continue
			}
			return total, fmt.Errorf("requeue handoffs of %s: %w", node, err)
		}
		for _, p := range pending {
			msgs, err := r.rdb.XRange(ctx, key, p.ID, p.ID).Result()
			if err != nil || len(msgs) == 0 {
				continue
			}
			if err := r.OfferHandoff(ctx, node, parseHandoff(msgs[0])); err != nil {
				return total, err
			}
			r.AckHandoff(ctx, node, p.ID)
			total++
		}
	}
	return total, nil
}

func parseHandoff(m redis.XMessage) Handoff {
	h := Handoff{ID: m.ID}
	h.Room, _ = m.Values["room"].(string)
	h.Name, _ = m.Values["name"].(string)
	h.From, _ = m.Values["from"].(string)
	e, _ := m.Values["epoch"].(string)
	h.Epoch, _ = strconv.ParseInt(e, 10, 64)
	c, _ := m.Values["cost"].(string)
	h.Cost, _ = strconv.Atoi(c)
	h.Cost = max(1, h.Cost)
	return h
}
