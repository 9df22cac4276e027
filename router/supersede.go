package router

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/roomlb/roomlb/registry"
)

// checkRetry is how long the owner checks wait after Redis failed them.
const checkRetry = time.Second

// Superseded relays (DESIGN.md, Flows): a relay is routed to one owner of
// its room, a node at an epoch. When the room's owner changes to a higher
// epoch on another node (a claim after the lease ran out, a move, a steal
// from a node whose heartbeat is gone), the old owner is not serving the
// room any more, and if it is frozen or cut off it will not close its
// clients either: the router ends the relay with 1012 so that the client
// reconnects and is routed to the new owner. A new epoch on the same node
// (it re-claimed its own room after Redis lost its data) keeps the relay;
// so does a release, after which the owner closes its own clients.
//
// Relays are found by room (Router.relayRooms) on events only. A relay
// whose room was placed does not know its epoch: for it an event of another
// node is only a reason to read the owner from Redis, since an old event can
// arrive after the relay to the new owner began. So does a resync, after
// which events may have been missed for any room.

// supersede ends the relays of room to owners older than node at epoch, an
// owner an event or the cache named, and has the owner read from Redis for
// relays that do not know their epoch.
func (r *Router) supersede(room, node string, epoch int64) {
	r.relayMu.Lock()
	var ended int
	check := false
	for rl := range r.relayRooms[room] {
		switch end, unsure := rl.supersededBy(node, epoch); {
		case end:
			rl.move()
			ended++
		case unsure:
			check = true
		}
	}
	r.relayMu.Unlock()
	if check {
		r.checks.add(room)
	}
	if ended > 0 {
		r.log.Info("router: the room's owner changed; carrying its clients relayed to the old owner over",
			logRoom, room, logNode, node, logEpoch, epoch, logCount, ended)
	}
}

// supersededBy reports whether node owning rl's room at epoch means rl's
// owner was replaced (end), or, when rl does not know its epoch, that only
// the room's current owner can tell (unsure).
func (rl *relay) supersededBy(node string, epoch int64) (end, unsure bool) {
	if node == rl.node {
		return false, false
	}
	e := rl.epoch.Load()
	if e == 0 {
		return false, true
	}
	return epoch > e, false
}

// supersededAlready applies what the cache knows to a relay that has just
// been tracked: an event that replaced its owner may have been applied
// while its handshake was under way, before supersede could find it.
func (r *Router) supersededAlready(rl *relay) {
	if rl.room == "" {
		return
	}
	o, ok := r.cache.get([]byte(rl.room))
	if !ok || o.placed {
		return
	}
	r.relayMu.Lock()
	end, unsure := rl.supersededBy(o.node, o.epoch)
	r.relayMu.Unlock()
	switch {
	case end:
		rl.move()
		r.log.Info("router: the room's owner changed; carrying its clients relayed to the old owner over",
			logRoom, rl.room, logNode, o.node, logEpoch, o.epoch, logCount, 1)
	case unsure:
		r.checks.add(rl.room)
	}
}

// relayedRooms returns the rooms this router relays WebSockets of.
func (r *Router) relayedRooms() []string {
	r.relayMu.Lock()
	defer r.relayMu.Unlock()
	rooms := make([]string, 0, len(r.relayRooms))
	for room := range r.relayRooms {
		rooms = append(rooms, room)
	}
	return rooms
}

// relaysOf returns the relays of room.
func (r *Router) relaysOf(room string) []*relay {
	r.relayMu.Lock()
	defer r.relayMu.Unlock()
	set := r.relayRooms[room]
	if len(set) == 0 {
		return nil
	}
	list := make([]*relay, 0, len(set))
	for rl := range set {
		list = append(list, rl)
	}
	return list
}

// ownerChecks are the rooms whose owner runChecks must read from Redis to
// find superseded relays. A room is listed once however often it is added,
// so the work is bounded by the rooms with relays.
type ownerChecks struct {
	mu    sync.Mutex
	rooms map[string]struct{}
	kick  chan struct{}
}

func newOwnerChecks() *ownerChecks {
	return &ownerChecks{rooms: map[string]struct{}{}, kick: make(chan struct{}, 1)}
}

// add lists rooms and wakes runChecks.
func (oc *ownerChecks) add(rooms ...string) {
	if len(rooms) == 0 {
		return
	}
	oc.mu.Lock()
	for _, room := range rooms {
		oc.rooms[room] = struct{}{}
	}
	oc.mu.Unlock()
	select {
	case oc.kick <- struct{}{}:
	default:
	}
}

// take returns the listed rooms and empties the list.
func (oc *ownerChecks) take() []string {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	rooms := make([]string, 0, len(oc.rooms))
	for room := range oc.rooms {
		rooms = append(rooms, room)
	}
	clear(oc.rooms)
	return rooms
}

// runChecks reads the owners of the rooms listed in r.checks, one at a
// time (a resync does not send Redis a burst), and ends the relays they
// supersede, until ctx ends. When Redis fails it lists the rest again and
// waits checkRetry.
func (r *Router) runChecks(ctx context.Context) {
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.checks.kick:
		}
		rooms := r.checks.take()
		for i, room := range rooms {
			err := r.checkRelays(ctx, room)
			if err == nil {
				if failing {
					r.log.Info("router: reading the owners of relayed rooms again")
					failing = false
				}
				continue
			}
			if ctx.Err() != nil {
				return
			}
			if !failing {
				r.log.Warn("router: reading the owner of a relayed room; retrying", logRoom, room, logErr, err)
				failing = true
			}
			r.checks.add(rooms[i:]...)
			select {
			case <-ctx.Done():
				return
			case <-time.After(checkRetry):
			}
			break
		}
	}
}

// checkRelays reads room's owner and ends the relays of room, begun before
// the read, that it supersedes. A relay to the owner's node that does not
// know its epoch learns it.
func (r *Router) checkRelays(ctx context.Context, room string) error {
	held := r.relaysOf(room)
	if len(held) == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, r.cfg.RedisTimeout)
	o, err := r.reg.Owner(rctx, room)
	cancel()
	switch {
	case errors.Is(err, registry.ErrNotOwned):
		// Released (its owner closes its clients) or a lease that ran out
		// with nobody claiming yet: the next claim's event comes here.
		return nil
	case err != nil:
		return err
	}
	ended := 0
	r.relayMu.Lock()
	for _, rl := range held {
		if rl.node == o.Node {
			rl.epoch.CompareAndSwap(0, o.Epoch)
			continue
		}
		// The relay began before the read, so an owner it does not know
		// the epoch of was replaced by the one read.
		if e := rl.epoch.Load(); e == 0 || e < o.Epoch {
			rl.move()
			ended++
		}
	}
	r.relayMu.Unlock()
	if ended > 0 {
		r.log.Info("router: the room's owner changed; carrying its clients relayed to the old owner over",
			logRoom, room, logNode, o.Node, logEpoch, o.Epoch, logCount, ended)
	}
	return nil
}

// endRelaysTo ends every relay to node: its heartbeat has been gone for a
// recovery window, so it serves nothing (a live owner fences itself before
// its heartbeat key can expire). This frees the clients of a frozen or cut
// off node even when nobody's request makes a router steal their room.
func (r *Router) endRelaysTo(node string) {
	r.relayMu.Lock()
	ended := 0
	for _, set := range r.relayRooms {
		for rl := range set {
			if rl.node == node {
				rl.move()
				ended++
			}
		}
	}
	r.relayMu.Unlock()
	if ended > 0 {
		r.log.Info("router: the node's heartbeat is gone; carrying its clients over", logNode, node, logCount, ended)
	}
}
