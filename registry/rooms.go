package registry

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/lua"
)

// Owner is who owns a room: a node, in one session of its heartbeat key
// (registry.Node.Session), at a fencing epoch. The room is the node's for as
// long as that key lives with that session; once it is gone, the room is
// free to claim, whatever its value still says.
type Owner struct {
	Node    string
	Session string
	Epoch   int64
}

// parseOwner parses an owner value "node:session:epoch".
func parseOwner(v string) (Owner, error) {
	node, rest, ok1 := strings.Cut(v, ":")
	session, epoch, ok2 := strings.Cut(rest, ":")
	e, err := strconv.ParseInt(epoch, 10, 64)
	if !ok1 || !ok2 || node == "" || session == "" || err != nil {
		return Owner{}, fmt.Errorf("registry: malformed owner value %q", v)
	}
	return Owner{Node: node, Session: session, Epoch: e}, nil
}

func (o Owner) value() string {
	return o.Node + ":" + o.Session + ":" + strconv.FormatInt(o.Epoch, 10)
}

// Lease is a node's claim of a room, in one session of the node's heartbeat
// key, at an epoch. It needs no renewal: it lasts as long as the session.
// Room is the key form (lower case).
type Lease struct {
	Room    string
	Node    string
	Session string
	Epoch   int64
	// Name is the room's canonical casing as an owner last recorded it in
	// the metadata, "" when unknown (set by Claim). OpenTogetherTube keeps a
	// room's state under its exact casing, so a new owner must load it by it.
	Name string
	// Mark is the mark of the room's hash slot the lease was granted under
	// (set by Claim, Transfer and Reclaim): while the slot keeps it, its
	// shard has not lost the room's key (see BeatVerified). "" when unknown.
	Mark string
}

func (l Lease) epoch() string { return strconv.FormatInt(l.Epoch, 10) }

// check validates a lease that may have been built by hand (roomlb ctl).
func (l Lease) check() error {
	if k, err := RoomKey(l.Room); err != nil {
		return err
	} else if k != l.Room {
		return fmt.Errorf("%w: lease room %q is not in key form %q", ErrBadRoom, l.Room, k)
	}
	if err := ValidNode(l.Node); err != nil {
		return err
	}
	return validSession(l.Session)
}

// ClaimEpochTTL is how long a claim keeps the room's epoch counter: a room
// that gets loaded has it kept for EpochTTL by its first metadata write; one
// that was only looked up (a request for a room that does not exist, released
// at once) leaves it behind for no longer than this. Epochs stay monotonic
// without the counter: they are seeded from the Redis clock.
const ClaimEpochTTL = time.Minute

// Claim takes room for node's heartbeat session if the room has no live
// owner: no value, or one whose session's heartbeat key is gone. On success
// the lease carries a new epoch, above every earlier one of the room, and
// the canonical name. If the room is owned, the error is an *OwnerError
// (ErrOwned) naming the owner, its epoch and the canonical name, even when
// the owner is node itself in session (a router stole or moved the room to
// it): the caller decides whether it may adopt that lease.
//
// While the registry recovers from lost data (see Reclaim), a room without a
// live owner may be taken only by the node that served it: Claim waits until
// the recovery window ends, or returns a *RecoveryError (ErrRecovering) at
// once when ctx would end first.
func (r *Registry) Claim(ctx context.Context, room, node, session string) (Lease, error) {
	room, err := RoomKey(room)
	if err != nil {
		return Lease{}, err
	}
	if err := ValidNode(node); err != nil {
		return Lease{}, err
	}
	if err := validSession(session); err != nil {
		return Lease{}, err
	}
	return r.take(ctx, room, "", node, session)
}

// take claims room for node's session. The room may have no value, or one
// whose owner's session is gone; when victim is not "", an owner must be
// that node (Steal).
//
// A claim may take several scripts, since the fleet's keys (the heartbeat
// keys, the generation) and the room's are in different hash slots:
// admit.lua on the fleet's keys refuses during the fleet's recovery
// window, tells whether the room's slot is in use (if not, birth puts it in
// use first), and whether the owner found by the previous try still lives;
// claim.lua on the room's keys replaces only the value found dead. That is
// safe because a session never lives again: a heartbeat that finds its key
// gone starts a new session. A free room of a slot this process has seen
// in use (bornSlots) needs no admit: one round trip. The fleet's recovery
// window does not concern it: a room without a value is free unless its
// slot lost its data, which its mark tells.
func (r *Registry) take(ctx context.Context, room, victim, node, session string) (Lease, error) {
	slot := RoomSlot(room)
	keys := []string{r.ownerKey(room), r.epochKey(room), r.metaKey(room), r.slotMarkKey(slot), r.slotRecoveryKey(slot)}
	var (
		dead  string
		owned *OwnerError // the owner found by the previous try, whose session admit checks
		check Owner
	)
	for try := 0; ; try++ {
		if owned != nil || !r.born.has(slot) {
			check = Owner{}
			nodeKey := r.nodesKey()
			if owned != nil {
				check = owned.Owner
				nodeKey = r.nodeKey(check.Node)
			}
			a, err := toReply(r.durable(ctx, lua.Admit,
				[]string{r.generationKey(), r.recoveryKey(), r.slotsKey(), nodeKey},
				ms(r.recovery), slot, check.Session).Result())
			if err != nil {
				return Lease{}, fmt.Errorf("claim %s: admit: %w", room, err)
			}
			if a.int(0) == -1 {
				if err := waitRecovery(ctx, room, a.int(1)); err != nil {
					return Lease{}, err
				}
				continue
			}
			if a.int(1) == 0 {
				if err := r.birth(ctx, slot); err != nil {
					return Lease{}, fmt.Errorf("claim %s: %w", room, err)
				}
			}
			r.born.add(slot)
			if owned != nil {
				if a.int(2) == 1 {
					if victim != "" {
						owned.Err = ErrOwnerAlive
					}
					return Lease{}, owned
				}
				dead = check.value()
			}
		}
		a, err := toReply(r.durable(ctx, lua.Claim, keys,
			node, session, ms(ClaimEpochTTL), r.Channel(), room, ms(r.recovery), dead).Result())
		if err != nil {
			return Lease{}, fmt.Errorf("claim %s: %w", room, err)
		}
		name, mark := a.str(2), a.str(3)
		switch a.int(0) {
		case 1:
			return Lease{Room: room, Node: node, Session: session, Epoch: a.int(1), Name: name, Mark: mark}, nil
		case -1:
			if err := waitRecovery(ctx, room, a.int(1)); err != nil {
				return Lease{}, err
			}
			owned = nil
			continue
		}
		o, err := parseOwner(a.str(1))
		if err != nil {
			return Lease{}, fmt.Errorf("claim %s: %w", room, err)
		}
		owned = &OwnerError{Room: room, Name: name, Mark: mark, Owner: o, Err: ErrOwned}
		if victim != "" && o.Node != victim || o.Node == node && o.Session == session {
			return Lease{}, owned
		}
		if try >= 3 {
			// The value changes faster than it can be checked: others
			// are claiming it too.
			return Lease{}, owned
		}
	}
}

// birth puts a slot in use: its first mark (unless it has one), then its
// bit in the fleet's slot bitmap, in that order (see admit.lua).
func (r *Registry) birth(ctx context.Context, slot int) error {
	if err := r.durable(ctx, lua.Birth, []string{r.slotMarkKey(slot)}, rand.Text()).Err(); err != nil {
		return fmt.Errorf("mark slot %d: %w", slot, err)
	}
	if err := r.durable(ctx, lua.Mark, []string{r.generationKey(), r.recoveryKey(), r.slotsKey()}, ms(r.recovery), slot).Err(); err != nil {
		return fmt.Errorf("put slot %d in use: %w", slot, err)
	}
	return nil
}

// sessionAlive reports whether o's node heartbeats in o's session.
func (r *Registry) sessionAlive(ctx context.Context, o Owner) (bool, error) {
	s, err := r.rdb.HGet(ctx, r.nodeKey(o.Node), "session").Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return s == o.Session, nil
}

// waitRecovery sleeps out a recovery window with leftMS to go, unless ctx
// would end first: then it returns a *RecoveryError at once.
func waitRecovery(ctx context.Context, room string, leftMS int64) error {
	left := time.Duration(leftMS) * time.Millisecond
	if d, ok := ctx.Deadline(); ok && time.Until(d) < left {
		return &RecoveryError{Room: room, Left: left}
	}
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return &RecoveryError{Room: room, Left: left}
	}
}

// Release gives the room up. Only the owner at the lease's epoch can; for
// anyone else nothing changes and the error is an *OwnerError.
func (r *Registry) Release(ctx context.Context, l Lease) error {
	if err := l.check(); err != nil {
		return err
	}
	a, err := toReply(lua.Release.Run(ctx, r.rdb,
		[]string{r.ownerKey(l.Room)},
		l.Node, l.Session, l.epoch(), r.Channel(), l.Room).Result())
	if err != nil {
		return fmt.Errorf("release %s: %w", l.Room, err)
	}
	if a.int(0) == 1 {
		return nil
	}
	return refused(l.Room, a.str(1), ErrOwned)
}

// Transfer moves the room from the lease's owner to the session toSession
// of node to, with a new epoch. Only the owner at the lease's session and
// epoch can. If that session of to has ended, the room is free to claim
// again at once, as every room of an ended session is.
func (r *Registry) Transfer(ctx context.Context, l Lease, to, toSession string) (Lease, error) {
	if err := l.check(); err != nil {
		return Lease{}, err
	}
	if err := ValidNode(to); err != nil {
		return Lease{}, err
	}
	if err := validSession(toSession); err != nil {
		return Lease{}, err
	}
	a, err := toReply(r.durable(ctx, lua.Transfer,
		[]string{r.ownerKey(l.Room), r.epochKey(l.Room), r.slotMarkKey(RoomSlot(l.Room))},
		l.Node, l.Session, l.epoch(), to, toSession, ms(ClaimEpochTTL), r.Channel(), l.Room).Result())
	if err != nil {
		return Lease{}, fmt.Errorf("transfer %s: %w", l.Room, err)
	}
	if a.int(0) == 1 {
		return Lease{Room: l.Room, Node: to, Session: toSession, Epoch: a.int(1), Mark: a.str(2)}, nil
	}
	return Lease{}, refused(l.Room, a.str(1), ErrOwned)
}

// Steal takes room for the session of node when its owner is dead: the
// owner must be node victim, and the session the room names must have
// ended (victim's heartbeat key is gone, or lives with another session). An
// unowned room is simply claimed. This lets a router fail a room over as
// soon as its owner's heartbeat key has run out. Errors: *OwnerError with
// ErrOwnerAlive when victim still heartbeats in that session, ErrOwned when
// another node owns the room now. A room without a live owner is claimed as
// Claim does, waiting out a recovery window.
func (r *Registry) Steal(ctx context.Context, room, victim, node, session string) (Lease, error) {
	room, err := RoomKey(room)
	if err != nil {
		return Lease{}, err
	}
	if err := ValidNode(victim); err != nil {
		return Lease{}, err
	}
	if err := ValidNode(node); err != nil {
		return Lease{}, err
	}
	if err := validSession(session); err != nil {
		return Lease{}, err
	}
	return r.take(ctx, room, victim, node, session)
}

// OwnerRecord reads the owner recorded for room, in one round trip, without
// checking that its session lives (Owner does). A room without a value gives
// an *OwnerError (ErrNotOwned). Routers route by it: a node asked for a room
// its ended session held claims it anew, and a node that is gone is found
// out from the node keys.
func (r *Registry) OwnerRecord(ctx context.Context, room string) (Owner, error) {
	room, err := RoomKey(room)
	if err != nil {
		return Owner{}, err
	}
	v, err := r.rdb.Get(ctx, r.ownerKey(room)).Result()
	if errors.Is(err, redis.Nil) {
		return Owner{}, &OwnerError{Room: room, Err: ErrNotOwned}
	}
	if err != nil {
		return Owner{}, fmt.Errorf("owner %s: %w", room, err)
	}
	return parseOwner(v)
}

// Owner looks up who owns room. A room without a value, or whose value names
// a session that has ended, gives an *OwnerError (ErrNotOwned).
func (r *Registry) Owner(ctx context.Context, room string) (Owner, error) {
	o, err := r.OwnerRecord(ctx, room)
	if err != nil {
		return Owner{}, err
	}
	alive, err := r.sessionAlive(ctx, o)
	if err != nil {
		return Owner{}, fmt.Errorf("owner %s: %w", room, err)
	}
	if !alive {
		return Owner{}, &OwnerError{Room: room, Err: ErrNotOwned}
	}
	return o, nil
}

// Epoch returns the last epoch handed out for room (0 when none is known).
func (r *Registry) Epoch(ctx context.Context, room string) (int64, error) {
	room, err := RoomKey(room)
	if err != nil {
		return 0, err
	}
	n, err := r.rdb.Get(ctx, r.epochKey(room)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}
