package sidecar

import (
	"cmp"
	"context"
	"math"
	"slices"
	"time"

	"github.com/roomlb/roomlb/registry"
)

// reclaimLoop re-claims the rooms whose keys Redis lost as soon as that is
// known. Leases need no renewal: a room is this node's for as long as the
// session of its heartbeat key lives (see presence).
func (s *Sidecar) reclaimLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.reclaimNow:
		}
		s.reclaim(ctx)
	}
}

// registryLost binds every room to the last heartbeat of the registry's old
// generation, hbUntil, and has them re-claimed: see registry.Reclaim for
// why no other node can claim them before they stop being served here.
func (s locked) registryLost(hbUntil int64) {
	s.genSeq++
	s.staleUntil = hbUntil
	for _, rm := range s.rooms {
		s.markStale(rm)
	}
	s.signalReclaim()
}

// shardLost has the rooms whose keys a shard of the registry may have lost
// (registry.Verifier) re-claimed, serving them until hbUntil, the last
// heartbeat before the loss was seen, at most. leases are the rooms' leases
// as they were checked: a room granted another lease since keeps it.
func (s locked) shardLost(leases []registry.Lease, hbUntil int64) {
	s.genSeq++
	s.staleUntil = hbUntil
	for _, l := range leases {
		if rm := s.rooms[l.Room]; rm != nil && rm.lease == l {
			s.markStale(rm)
		}
	}
	s.signalReclaim()
}

// setLease gives rm the lease l, granted now.
func (s locked) setLease(rm *room, l registry.Lease) {
	s.grants++
	rm.lease, rm.grant = l, s.grants
}

// heldLeases are the leases of the rooms held (claimed, not stale), the
// oldest grant first.
func (s locked) heldLeases() []registry.Lease {
	held := make([]*room, 0, len(s.rooms))
	for _, rm := range s.rooms {
		if rm.lease.Epoch != 0 && !rm.stale && !rm.gone {
			held = append(held, rm)
		}
	}
	slices.SortFunc(held, func(a, b *room) int { return cmp.Compare(a.grant, b.grant) })
	out := make([]registry.Lease, len(held))
	for i, rm := range held {
		out[i] = rm.lease
	}
	return out
}

// signalReclaim asks reclaimLoop for a reclaim now.
func (s *Sidecar) signalReclaim() {
	select {
	case s.reclaimNow <- struct{}{}:
	default:
	}
}

// markStale caps rm's lease at the old generation's last heartbeat, until
// it is re-claimed.
func (s locked) markStale(rm *room) {
	rm.stale = true
	for {
		u := rm.until.Load()
		if u == 0 || u <= s.staleUntil || rm.until.CompareAndSwap(u, s.staleUntil) {
			return
		}
	}
}

// reclaim takes back, in one call, the rooms whose keys Redis lost, while
// they are still valid here. A room another node holds now is fenced; one
// that could not be re-claimed in time is fenced by its deadline.
func (s *Sidecar) reclaim(ctx context.Context) {
	// The session the rooms are bound to: read under the presence's lock,
	// since a heartbeat that found the loss asks for this reclaim before it
	// stores the session it started (a new one after the loss), and the
	// rooms must not be bound to the ended one.
	s.presence.mu.Lock()
	session := s.presence.hb.Load().session
	s.presence.mu.Unlock()
	now := s.now()
	lk := s.lock()
	seq := s.genSeq
	var leases []registry.Lease
	var held []*room
	for _, rm := range s.rooms {
		if rm.stale && rm.lease.Epoch != 0 && rm.valid(now) {
			leases = append(leases, rm.lease)
			held = append(held, rm)
		}
	}
	lk.unlock()
	if len(leases) == 0 || session == "" {
		return
	}
	rctx, cancel := s.cfg.redisCtx(ctx)
	res, err := s.reg.Reclaim(rctx, s.cfg.NodeID, session, leases)
	cancel()
	if err != nil {
		// Try again soon: the rooms are fenced at their capped deadline
		// unless a reclaim gets through before it.
		s.log.Warn("sidecar: reclaim", "rooms", len(leases), "err", err)
		t := time.AfterFunc(s.cfg.HeartbeatTTL/10, s.signalReclaim)
		context.AfterFunc(ctx, func() { t.Stop() })
		return
	}
	lk = s.lock()
	defer lk.unlock()
	kept := 0
	for i, rm := range held {
		got := res.Leases[i]
		switch {
		case rm.gone || rm.lease != leases[i]:
			// Dropped or changed meanwhile: a new epoch taken for
			// nothing goes back.
			if got.Epoch != 0 && got.Epoch != leases[i].Epoch && rm.lease.Epoch != got.Epoch {
				lk.releaseLease(got)
			}
		case s.genSeq != seq:
			// A loss of the registry was found meanwhile (perhaps the
			// one this reclaim answered: a refused metadata write can
			// find a lost key before the heartbeat finds the new
			// generation). What was taken may be lost again, or may
			// be in Redis now: the room stays stale, and the next
			// reclaim, already asked for, compares Redis with it.
			if got.Epoch != 0 {
				if got.Epoch != rm.lease.Epoch {
					lk.endSpan(rm)
				}
				lk.setLease(rm, got)
			}
		case got.Epoch == 0:
			lk.fence(rm, "lost")
		default:
			if got.Epoch != rm.lease.Epoch {
				lk.endSpan(rm)
			}
			lk.setLease(rm, got)
			rm.stale = false
			rm.metaDirty = true // the metadata went with the rest
			if rm.valid(s.now()) {
				// Bound to the heartbeat's life alone again. (A room
				// whose stale deadline passed meanwhile has been
				// fenced; a session that ended since began a new life,
				// and valid is false for the old one's rooms.)
				rm.until.Store(math.MaxInt64)
				kept++
			}
		}
	}
	s.log.Info("sidecar: rooms re-claimed", "rooms", kept, "of", len(leases), "generation", res.Generation)
	s.metrics.reclaims.Add(float64(kept))
}

// fenceLoop stops serving rooms once the node's heartbeat was not refreshed
// in time (or a stale lease was not re-claimed in time). The hot path checks
// the deadline itself too; this makes sure the room is
// unloaded and its clients closed even when nothing happens in it.
func (s *Sidecar) fenceLoop(ctx context.Context) {
	every(ctx, 100*time.Millisecond, func() {
		now := s.now()
		lk := s.lock()
		defer lk.unlock()
		for _, rm := range s.rooms {
			if rm.until.Load() != 0 && !rm.valid(now) {
				lk.fence(rm, rm.invalidReason(now))
			}
		}
		lk.pruneRetired(now)
	})
}
