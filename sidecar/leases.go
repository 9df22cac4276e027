package sidecar

import (
	"context"
	"time"

	"github.com/roomlb/roomlb/registry"
)

// renewLoop renews every lease each third of the lease TTL, in one batch,
// and re-claims the rooms whose keys Redis lost as soon as that is known.
func (s *Sidecar) renewLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.renew(ctx)
		case <-s.reclaimNow:
		}
		s.reclaim(ctx)
	}
}

// renew renews all leases once; lost ones are fenced at once, and the
// rooms whose keys are gone (Redis lost them) are marked for reclaim.
func (s *Sidecar) renew(ctx context.Context) {
	now := s.now()
	lk := s.lock()
	seq := s.genSeq
	leases := make([]registry.Lease, 0, len(s.rooms))
	held := make([]*room, 0, len(s.rooms))
	for _, rm := range s.rooms {
		if rm.valid(now) {
			leases = append(leases, rm.lease)
			held = append(held, rm)
		}
	}
	lk.unlock()
	if len(leases) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.LeaseTTL/3)
	res, err := s.reg.Renew(rctx, s.cfg.NodeID, leases, s.cfg.LeaseTTL)
	cancel()
	if err != nil {
		// Leases keep their old deadline: fenceLoop stops serving them
		// when it passes, unless a later renewal succeeds.
		s.log.Warn("sidecar: renew", "rooms", len(leases), "err", err)
		return
	}
	s.metrics.renewSeconds.Observe(time.Since(res.Sent).Seconds())
	until := s.at(res.Sent) + s.cfg.leaseMargin()
	lost := make(map[string]registry.Owner, len(res.Lost))
	for _, l := range res.Lost {
		lost[l.Lease.Room] = l.Owner
	}
	lk = s.lock()
	defer lk.unlock()
	for i, rm := range held {
		if rm.gone || rm.lease != leases[i] {
			continue
		}
		if o, ok := lost[rm.key]; ok {
			if o.Node != "" {
				lk.fence(rm, "lost")
			} else {
				// Unowned: Redis lost the key. The room is still ours
				// to take back; the reclaim decides.
				rm.stale = true
			}
			continue
		}
		// Only extend a lease that is still valid (one that ran out while
		// the renewal was in flight has been fenced already), and not
		// across a loss of the registry found meanwhile: the renewal may
		// have run before it.
		if rm.valid(s.now()) && !rm.stale && s.genSeq == seq {
			rm.until.Store(until)
		}
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

// signalReclaim asks renewLoop for a reclaim now.
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
	if len(leases) == 0 {
		return
	}
	rctx, cancel := s.cfg.redisCtx(ctx)
	res, err := s.reg.Reclaim(rctx, s.cfg.NodeID, leases, s.cfg.LeaseTTL)
	cancel()
	if err != nil {
		// Try again soon: the rooms are fenced at their capped deadline
		// unless a reclaim gets through before it.
		s.log.Warn("sidecar: reclaim", "rooms", len(leases), "err", err)
		t := time.AfterFunc(s.cfg.HeartbeatTTL/10, s.signalReclaim)
		context.AfterFunc(ctx, func() { t.Stop() })
		return
	}
	until := s.at(res.Sent) + s.cfg.leaseMargin()
	lk = s.lock()
	defer lk.unlock()
	kept := 0
	for i, rm := range held {
		got := res.Leases[i]
		switch {
		case rm.gone || rm.lease != leases[i] || s.genSeq != seq:
			// Dropped or changed meanwhile, or the registry was lost
			// again: a new epoch taken for nothing goes back.
			if got.Epoch != 0 && got.Epoch != leases[i].Epoch && rm.lease.Epoch != got.Epoch {
				lk.releaseLease(got)
			}
		case got.Epoch == 0:
			lk.fence(rm, "lost")
		default:
			if got.Epoch != rm.lease.Epoch {
				lk.endSpan(rm)
			}
			rm.lease = got
			rm.stale = false
			rm.metaDirty = true // the metadata went with the rest
			if rm.valid(s.now()) {
				rm.until.Store(until)
				kept++
			}
		}
	}
	s.log.Info("sidecar: rooms re-claimed", "rooms", kept, "of", len(leases), "generation", res.Generation)
	s.metrics.reclaims.Add(float64(kept))
}

// fenceLoop stops serving rooms whose lease could not be renewed in time.
// The hot path checks the deadline itself too; this makes sure the room is
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
