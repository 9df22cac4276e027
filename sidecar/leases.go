package sidecar

import (
	"context"
	"time"

	"github.com/roomlb/roomlb/registry"
)

// renewLoop renews every lease each third of the lease TTL, in one batch.
func (s *Sidecar) renewLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.renewNow:
		}
		s.renew(ctx)
	}
}

// renew renews all leases once; lost ones are fenced at once.
func (s *Sidecar) renew(ctx context.Context) {
	now := s.now()
	s.mu.Lock()
	leases := make([]registry.Lease, 0, len(s.rooms))
	held := make([]*room, 0, len(s.rooms))
	for _, rm := range s.rooms {
		if rm.valid(now) {
			leases = append(leases, rm.lease)
			held = append(held, rm)
		}
	}
	s.mu.Unlock()
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
	until := s.at(res.Sent) + s.leaseMargin()
	lost := make(map[string]bool, len(res.Lost))
	for _, l := range res.Lost {
		lost[l.Lease.Room] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, rm := range held {
		if rm.gone || rm.lease != leases[i] {
			continue
		}
		if lost[rm.key] {
			s.fence(rm, "lost")
			continue
		}
		// Only extend a lease that is still valid: one that ran out while
		// the renewal was in flight has been fenced already.
		if rm.valid(s.now()) {
			rm.until.Store(until)
		}
	}
}

// fenceLoop stops serving rooms whose lease could not be renewed in time.
// The hot path checks the deadline itself too; this makes sure the room is
// unloaded and its clients closed even when nothing happens in it.
func (s *Sidecar) fenceLoop(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.now()
		s.mu.Lock()
		for _, rm := range s.rooms {
			if rm.until.Load() != 0 && !rm.valid(now) {
				s.fence(rm, rm.invalidReason(now))
			}
		}
		s.mu.Unlock()
	}
}
