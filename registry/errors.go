package registry

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrBadRoom: the room name is not one roomlb accepts.
	ErrBadRoom = errors.New("registry: bad room name")
	// ErrBadNode: the node id is not one roomlb accepts.
	ErrBadNode = errors.New("registry: bad node id")
	// ErrBadSession: the heartbeat session id is not one roomlb accepts.
	ErrBadSession = errors.New("registry: bad session id")
	// ErrNotOwned: the room has no owner (or not the one the caller holds).
	ErrNotOwned = errors.New("registry: room not owned")
	// ErrOwned: the room is owned by another node (or at another epoch).
	ErrOwned = errors.New("registry: room owned elsewhere")
	// ErrStaleEpoch: a fenced write carried an epoch that is not the room's
	// current one.
	ErrStaleEpoch = errors.New("registry: stale epoch")
	// ErrOwnerAlive: a steal found the owner's node heartbeat still there.
	ErrOwnerAlive = errors.New("registry: owner node alive")
	// ErrNodeGone: the node has no heartbeat.
	ErrNodeGone = errors.New("registry: node not alive")
	// ErrNotReplicated: fewer replicas than Config.Replicas acknowledged a
	// write in time. Its effect may be in Redis, or may be lost by a
	// failover: the caller must not count on it.
	ErrNotReplicated = errors.New("registry: write not acknowledged by enough replicas")
	// ErrRecovering: Redis lost the registry a moment ago; until the
	// recovery window ends only the rooms' last owners may claim them.
	ErrRecovering = errors.New("registry: recovering from lost data")
)

// RecoveryError is a claim refused during a recovery window; Left is how
// long the window has left. It unwraps to ErrRecovering.
type RecoveryError struct {
	Room string
	Left time.Duration
}

func (e *RecoveryError) Error() string {
	return fmt.Sprintf("%v: %s may be claimed in %v", ErrRecovering, e.Room, e.Left)
}

func (e *RecoveryError) Unwrap() error { return ErrRecovering }

// OwnerError says why an operation on a room was refused and who owns the
// room now (Owner is zero when nobody does). It unwraps to one of ErrNotOwned,
// ErrOwned, ErrStaleEpoch or ErrOwnerAlive.
type OwnerError struct {
	Room  string
	Owner Owner
	// Name is the room's canonical casing when known (set by Claim).
	Name string
	// Mark is the mark of the room's hash slot when known (set by Claim):
	// a node that adopts the room holds its lease under it (Lease.Mark).
	Mark string
	Err  error
}

func (e *OwnerError) Error() string {
	if e.Owner.Node == "" {
		return fmt.Sprintf("%v: %s has no owner", e.Err, e.Room)
	}
	return fmt.Sprintf("%v: %s is owned by %s at epoch %d", e.Err, e.Room, e.Owner.Node, e.Owner.Epoch)
}

func (e *OwnerError) Unwrap() error { return e.Err }

// refused builds the error of a script that answered with the current owner
// value (empty when unowned). want is the error for an owned room; an unowned
// room always gives ErrNotOwned.
func refused(room, value string, want error) error {
	if value == "" {
		return &OwnerError{Room: room, Err: ErrNotOwned}
	}
	o, err := parseOwner(value)
	if err != nil {
		return fmt.Errorf("room %s: %w", room, err)
	}
	return &OwnerError{Room: room, Owner: o, Err: want}
}
