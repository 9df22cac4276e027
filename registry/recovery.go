package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/lua"
)

// Recovery from lost data.
//
// Redis may lose the registry: a restart without persistence, FLUSHALL, a
// failover to a replica that lagged. The owners still serve their rooms
// from their monoliths' memory, often the only copy left, and they notice
// the loss only at their next heartbeat. Two rules keep one owner per room
// and lose no room:
//
//   - The generation key (PREFIX generation, no TTL) is gone after a loss.
//     The first script that finds it gone starts a new generation and a
//     recovery window (PREFIX recovery, PX the window). During the window
//     Claim and Steal take no unowned room; only Reclaim, by the node that
//     serves it, does.
//   - An owner serves a room only while its own heartbeat is surely alive
//     (0.9 x TTL after it was sent). A heartbeat that reports a new
//     generation does not extend the rooms the node has not re-claimed
//     since: they stay bound to the last heartbeat of the old generation,
//     which was sent before the loss.
//
// So an owner that has not re-claimed a room stops serving it less than one
// heartbeat TTL after the loss, and the window (at least the longest
// heartbeat TTL) outlasts that: no claim can overlap it. An owner that
// re-claims in time keeps its rooms, at new epochs.

// Generation reads the registry's generation and what is left of its
// recovery window; an empty generation means none has started (a fresh
// Redis, or one that lost its data and that no script has touched since).
func (r *Registry) Generation(ctx context.Context) (gen string, recovery time.Duration, err error) {
	var g *redis.StringCmd
	var left *redis.DurationCmd
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		g = p.Get(ctx, r.generationKey())
		left = p.PTTL(ctx, r.recoveryKey())
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", 0, fmt.Errorf("generation: %w", err)
	}
	if d := left.Val(); d > 0 {
		recovery = d
	}
	return g.Val(), recovery, nil
}

// Lost is a lease that Reclaim found taken.
type Lost struct {
	Lease Lease
	Owner Owner // zero when the room is unowned
}

// Reclamation is the outcome of one Reclaim.
type Reclamation struct {
	// Sent is when the reclaim was sent, on this process's monotonic clock:
	// a reclaimed lease is valid until Sent + ttl at the latest.
	Sent time.Time
	// Generation is the registry's generation the leases belong to now.
	Generation string
	// Leases are the leases held now, in the order asked: the same epoch
	// when the room was still owned at it, a new one when its key was gone.
	// A lost room has Epoch 0.
	Leases []Lease
	// Lost are the rooms another node (or another epoch) owns now.
	Lost []Lost
}

// Reclaim takes back the rooms node serves after Redis lost their keys,
// also during a recovery window. Redis lost the node's heartbeat key with
// them, so the node heartbeats in a new session, session; each lease names
// the session it was held in. A room whose value names node at the lease's
// epoch (in that session or in session) is bound to session at that epoch,
// one without a value gets a new epoch for node, one owned by anyone else
// is reported lost. The caller must be serving every room validly on its own
// clock now: that is what makes it the only node that may take the room
// back during the window.
func (r *Registry) Reclaim(ctx context.Context, node, session string, leases []Lease) (Reclamation, error) {
	if err := ValidNode(node); err != nil {
		return Reclamation{}, err
	}
	if err := validSession(session); err != nil {
		return Reclamation{}, err
	}
	for _, l := range leases {
		if err := l.check(); err != nil {
			return Reclamation{}, err
		}
		if l.Node != node {
			return Reclamation{}, fmt.Errorf("reclaim: lease of %s at %d belongs to %s, not %s", l.Room, l.Epoch, l.Node, node)
		}
	}
	out := Reclamation{Sent: time.Now(), Leases: make([]Lease, len(leases))}
	if len(leases) == 0 {
		return out, nil
	}
	// The rooms of one hash slot go in one script call (a script touches
	// one slot), after mark.lua has set the slots' bits in the fleet's
	// bitmap: their rooms are served (see admit.lua).
	bySlot := map[int][]int{}
	var slots []int
	for i, l := range leases {
		s := RoomSlot(l.Room)
		if bySlot[s] == nil {
			slots = append(slots, s)
		}
		bySlot[s] = append(bySlot[s], i)
	}
	args := []any{ms(r.recovery)}
	for _, s := range slots {
		args = append(args, s)
	}
	gen, err := r.durable(ctx, lua.Mark, []string{r.generationKey(), r.recoveryKey(), r.slotsKey()}, args...).Text()
	if err != nil {
		return out, fmt.Errorf("reclaim %d rooms of %s: mark: %w", len(leases), node, err)
	}
	out.Generation = gen
	calls := make([]*scriptCall, len(slots))
	for j, s := range slots {
		keys := []string{r.slotMarkKey(s), r.slotRecoveryKey(s)}
		args := []any{node, session, ms(ClaimEpochTTL), r.Channel(), ms(r.recovery)}
		for _, i := range bySlot[s] {
			l := leases[i]
			keys = append(keys, r.ownerKey(l.Room), r.epochKey(l.Room))
			args = append(args, l.epoch(), l.Session, l.Room)
		}
		calls[j] = &scriptCall{keys: keys, args: args}
	}
	if err := r.send(ctx, lua.Reclaim, calls, r.replicas > 0); err != nil && !isScriptReplyError(err) {
		return out, fmt.Errorf("reclaim %d rooms of %s: %w", len(leases), node, err)
	}
	for j, s := range slots {
		a, err := toReply(calls[j].cmd.Result())
		if err != nil {
			return out, fmt.Errorf("reclaim %d rooms of %s: %w", len(leases), node, err)
		}
		idx := bySlot[s]
		if len(a) != 1+2*len(idx) {
			return out, fmt.Errorf("reclaim: script answered %d values for %d rooms", len(a), len(idx))
		}
		mark := a.str(0)
		for k, i := range idx {
			e, cur := a.int(1+2*k), a.str(2+2*k)
			l := leases[i]
			l.Epoch = e
			if e != 0 {
				l.Session = session
				l.Mark = mark
			}
			out.Leases[i] = l
			if e != 0 {
				continue
			}
			lost := Lost{Lease: leases[i]}
			if cur != "" {
				if lost.Owner, err = parseOwner(cur); err != nil {
					return out, err
				}
			}
			out.Lost = append(out.Lost, lost)
		}
	}
	return out, nil
}

// Bootstrap starts the registry's first generation with no recovery window,
// unless one exists. Only for a Redis that has never held this registry (a
// test's, `roomlb dev`'s): after a loss of data it would let a claim overlap
// an owner that has not noticed the loss yet. Without it, the first script
// to run starts the first generation with a recovery window, so a new
// deployment's first claims wait one window.
func (r *Registry) Bootstrap(ctx context.Context) error {
	t, err := r.rdb.Time(ctx).Result()
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	gen := fmt.Sprintf("%d%06d", t.Unix(), t.Nanosecond()/1000)
	if err := r.rdb.SetNX(ctx, r.generationKey(), gen, 0).Err(); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	return nil
}
