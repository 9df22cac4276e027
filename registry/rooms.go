package registry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/lua"
)

// Owner is who owns a room: a node at a fencing epoch, for TTL more.
type Owner struct {
	Node  string
	Epoch int64
	// TTL is the lease time left when it was read; zero where unknown.
	TTL time.Duration
}

// parseOwner parses an owner value "node:epoch".
func parseOwner(v string) (Owner, error) {
	i := strings.LastIndexByte(v, ':')
	if i <= 0 {
		return Owner{}, fmt.Errorf("registry: malformed owner value %q", v)
	}
	e, err := strconv.ParseInt(v[i+1:], 10, 64)
	if err != nil {
		return Owner{}, fmt.Errorf("registry: malformed owner value %q", v)
	}
	return Owner{Node: v[:i], Epoch: e}, nil
}

// Lease is a node's claim of a room at an epoch. Room is the key form (lower
// case).
type Lease struct {
	Room  string
	Node  string
	Epoch int64
	// Name is the room's canonical casing as an owner last recorded it in
	// the metadata, "" when unknown (set by Claim). OpenTogetherTube keeps a
	// room's state under its exact casing, so a new owner must load it by it.
	Name string
}

func (l Lease) epoch() string { return strconv.FormatInt(l.Epoch, 10) }

// check validates a lease that may have been built by hand (roomlb ctl).
func (l Lease) check() error {
	if k, err := RoomKey(l.Room); err != nil {
		return err
	} else if k != l.Room {
		return fmt.Errorf("%w: lease room %q is not in key form %q", ErrBadRoom, l.Room, k)
	}
	return ValidNode(l.Node)
}

// Claim takes room for node with a lease of ttl, if nobody owns it. On
// success the lease carries a new epoch, above every earlier one of the
// room, and the canonical name. If the room is owned, the error is an
// *OwnerError (ErrOwned) naming the owner, its epoch and the canonical name,
// even when the owner is node itself (a router stole or moved the room to
// it): the caller decides whether it may adopt that lease.
//
// While the registry recovers from lost data (see Reclaim), an unowned room
// may be taken only by the node that served it: Claim waits until the
// recovery window ends, or returns a *RecoveryError (ErrRecovering) at once
// when ctx would end first.
func (r *Registry) Claim(ctx context.Context, room, node string, ttl time.Duration) (Lease, error) {
	room, err := RoomKey(room)
	if err != nil {
		return Lease{}, err
	}
	if err := ValidNode(node); err != nil {
		return Lease{}, err
	}
	for {
		a, err := toReply(lua.Claim.Run(ctx, r.rdb,
			[]string{r.ownerKey(room), r.epochKey(room), r.metaKey(room), r.generationKey(), r.recoveryKey()},
			node, ms(ttl), r.claimEpochTTL(ttl), r.Channel(), room, ms(r.recovery)).Result())
		if err != nil {
			return Lease{}, fmt.Errorf("claim %s: %w", room, err)
		}
		switch a.int(0) {
		case 1:
			return Lease{Room: room, Node: node, Epoch: a.int(1), Name: a.str(2)}, nil
		case -1:
			if err := waitRecovery(ctx, room, a.int(1)); err != nil {
				return Lease{}, err
			}
			continue
		}
		o, err := parseOwner(a.str(1))
		if err != nil {
			return Lease{}, fmt.Errorf("claim %s: %w", room, err)
		}
		o.TTL = time.Duration(a.int(2)) * time.Millisecond
		return Lease{}, &OwnerError{Room: room, Name: a.str(3), Owner: o, Err: ErrOwned}
	}
}

// claimEpochTTL is how long a claim keeps the room's epoch counter: one
// lease. A room that gets loaded has it kept for EpochTTL by its first
// metadata write; one that was only looked up (a request for a room that
// does not exist) leaves nothing behind once its lease is over. Epochs stay
// monotonic without the counter: they are seeded from the Redis clock.
func (r *Registry) claimEpochTTL(lease time.Duration) string {
	return ms(min(lease, r.epochTTL))
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
		l.Node, l.epoch(), r.Channel(), l.Room).Result())
	if err != nil {
		return fmt.Errorf("release %s: %w", l.Room, err)
	}
	if a.int(0) == 1 {
		return nil
	}
	return refused(l.Room, a.str(1), ErrOwned)
}

// Transfer moves the room from the lease's owner to node to, with a new
// epoch and a lease of ttl. Only the owner at the lease's epoch can.
func (r *Registry) Transfer(ctx context.Context, l Lease, to string, ttl time.Duration) (Lease, error) {
	if err := l.check(); err != nil {
		return Lease{}, err
	}
	if err := ValidNode(to); err != nil {
		return Lease{}, err
	}
	a, err := toReply(lua.Transfer.Run(ctx, r.rdb,
		[]string{r.ownerKey(l.Room), r.epochKey(l.Room)},
		l.Node, l.epoch(), to, ms(ttl), r.claimEpochTTL(ttl), r.Channel(), l.Room).Result())
	if err != nil {
		return Lease{}, fmt.Errorf("transfer %s: %w", l.Room, err)
	}
	if a.int(0) == 1 {
		return Lease{Room: l.Room, Node: to, Epoch: a.int(1)}, nil
	}
	return Lease{}, refused(l.Room, a.str(1), ErrOwned)
}

// Steal takes room for node when its owner is dead: the owner must be node
// victim and victim's heartbeat key must be gone (an unowned room is simply
// claimed). This lets a router fail a room over at once instead of waiting
// for the lease to run out. Errors: *OwnerError with ErrOwnerAlive when
// victim still heartbeats, ErrOwned when another node owns the room now. An
// unowned room is claimed as Claim does, waiting out a recovery window.
func (r *Registry) Steal(ctx context.Context, room, victim, node string, ttl time.Duration) (Lease, error) {
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
	for {
		a, err := toReply(lua.Steal.Run(ctx, r.rdb,
			[]string{r.ownerKey(room), r.epochKey(room), r.nodeKey(victim), r.generationKey(), r.recoveryKey()},
			victim, node, ms(ttl), r.claimEpochTTL(ttl), r.Channel(), room, ms(r.recovery)).Result())
		if err != nil {
			return Lease{}, fmt.Errorf("steal %s: %w", room, err)
		}
		switch a.int(0) {
		case 1:
			return Lease{Room: room, Node: node, Epoch: a.int(1)}, nil
		case -1:
			return Lease{}, refused(room, a.str(1), ErrOwnerAlive)
		case -2:
			if err := waitRecovery(ctx, room, a.int(1)); err != nil {
				return Lease{}, err
			}
		default:
			return Lease{}, refused(room, a.str(1), ErrOwned)
		}
	}
}

// Owner looks up who owns room. An unowned room gives an *OwnerError
// (ErrNotOwned).
func (r *Registry) Owner(ctx context.Context, room string) (Owner, error) {
	room, err := RoomKey(room)
	if err != nil {
		return Owner{}, err
	}
	key := r.ownerKey(room)
	var get *redis.StringCmd
	var pttl *redis.DurationCmd
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, key)
		pttl = p.PTTL(ctx, key)
		return nil
	})
	if errors.Is(err, redis.Nil) {
		return Owner{}, &OwnerError{Room: room, Err: ErrNotOwned}
	}
	if err != nil {
		return Owner{}, fmt.Errorf("owner %s: %w", room, err)
	}
	o, err := parseOwner(get.Val())
	if err != nil {
		return Owner{}, err
	}
	if d := pttl.Val(); d > 0 {
		o.TTL = d
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
