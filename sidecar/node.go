package sidecar

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/roomlb/roomlb/ott"
	"github.com/roomlb/roomlb/registry"
)

// heartbeatLoop announces the node every third of the heartbeat TTL while
// the monolith link is up, and takes it out of the registry while it is
// down, so routers place nothing here.
func (s *Sidecar) heartbeatLoop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	registered := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.deregistered.Load() {
			return
		}
		hctx, cancel := s.redisCtx(ctx)
		up, err := s.beat(hctx)
		switch {
		case up:
			registered = err == nil
		case registered:
			err = s.deregister(hctx)
			registered = err != nil
		default:
			err = s.reg.Client().Ping(hctx).Err()
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		s.redisOK.Store(err == nil)
		next := s.cfg.HeartbeatTTL / 3
		if err != nil {
			s.log.Warn("sidecar: heartbeat", "err", err)
			// Try again soon: the rooms stop being served when the
			// heartbeat is not refreshed in time.
			next = s.cfg.HeartbeatTTL / 10
		}
		t.Reset(next)
	}
}

// beat sends one heartbeat when the monolith link is up (up reports
// whether it was) and moves heartbeatUntil on when it succeeds.
func (s *Sidecar) beat(ctx context.Context) (up bool, err error) {
	s.beatMu.Lock()
	defer s.beatMu.Unlock()
	n, up := s.nodeInfo()
	if !up || s.deregistered.Load() {
		return false, nil
	}
	sent := time.Now()
	res, err := s.reg.Beat(ctx, n, s.cfg.HeartbeatTTL)
	if err != nil {
		return true, err
	}
	switch {
	case s.generation != "" && res.Generation != s.generation:
		// Redis lost the registry (a restart without persistence, a
		// flush): the rooms' keys are gone. Until each room is re-claimed
		// it may be served only as long as the last heartbeat of the old
		// generation allows, which other nodes' claims wait out.
		s.log.Warn("sidecar: Redis lost the registry: re-claiming every room", "generation", res.Generation, "recovery", res.Recovery)
		s.registryLost(s.heartbeatUntil.Load())
	case res.Fresh && s.heartbeatUntil.Load() > s.at(sent):
		// The node's key was there a moment ago and is gone (deleted by
		// hand?): the renewal tells which rooms are still ours.
		s.log.Warn("sidecar: the node's heartbeat key was gone from Redis; renewing every lease now")
		select {
		case s.renewNow <- struct{}{}:
		default:
		}
	}
	s.generation = res.Generation
	until := s.at(sent) + int64(s.cfg.HeartbeatTTL-s.cfg.HeartbeatTTL/10)
	for {
		cur := s.heartbeatUntil.Load()
		if until <= cur || s.heartbeatUntil.CompareAndSwap(cur, until) {
			return true, nil
		}
	}
}

// deregister takes the node out of the registry; from then on no room is
// served.
func (s *Sidecar) deregister(ctx context.Context) error {
	s.beatMu.Lock()
	defer s.beatMu.Unlock()
	s.heartbeatUntil.Store(0)
	return s.reg.Deregister(ctx, s.cfg.NodeID)
}

// ensureHeartbeat makes sure the heartbeat outlives the next lease
// renewal before a room is claimed: a room claimed by a node without a
// heartbeat key could be stolen at once.
func (s *Sidecar) ensureHeartbeat(ctx context.Context) error {
	if s.heartbeatUntil.Load()-s.now() > int64(s.cfg.HeartbeatTTL/2) {
		return nil
	}
	up, err := s.beat(ctx)
	if err == nil && !up {
		err = errors.New("sidecar: monolith link down")
	}
	return err
}

// nodeInfo is what the heartbeat says; up is false while the link is down
// and no room is held any more.
func (s *Sidecar) nodeInfo() (registry.Node, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := registry.Node{
		ID:       s.cfg.NodeID,
		Addr:     s.cfg.Advertise,
		Region:   s.cfg.Region,
		State:    registry.StateActive,
		Rooms:    len(s.rooms),
		Clients:  len(s.clients),
		Capacity: s.cfg.Capacity,
		Version:  Version,
		Started:  s.started,
	}
	if s.draining || s.link == nil {
		n.State = registry.StateDraining
	}
	n.Load = load(n.Clients, n.Rooms, n.Capacity)
	// Without the link the node stays registered, as draining, while it
	// still holds rooms (their release waits for the monolith's shutdown
	// flush): without a heartbeat they could be stolen before it.
	return n, s.link != nil || len(s.rooms) > 0
}

// load is the placement score: the share of capacity in use, counting a
// room as one client (an empty loaded room still costs the monolith), as
// registry.Node.Spare does.
func load(clients, rooms, capacity int) float64 {
	if capacity <= 0 {
		capacity = registry.DefaultCapacity
	}
	return float64(clients+rooms) / float64(capacity)
}

// handoffLoop takes the rooms draining nodes offer this node, claims them
// and has the monolith load them from their state in Redis before their
// clients come back.
func (s *Sidecar) handoffLoop(ctx context.Context) {
	for ctx.Err() == nil {
		s.mu.Lock()
		ok := s.link != nil && !s.draining
		s.mu.Unlock()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		hs, err := s.reg.TakeHandoffs(ctx, s.cfg.NodeID, 64, time.Second)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Debug("sidecar: take handoffs", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		for _, h := range hs {
			s.mu.Lock()
			draining := s.draining
			s.mu.Unlock()
			if draining {
				break // left pending: the drain moves them on
			}
			s.takeHandoff(ctx, h)
		}
	}
}

// takeHandoff claims one offered room and loads it on the monolith.
func (s *Sidecar) takeHandoff(ctx context.Context, h registry.Handoff) {
	defer func() {
		actx, cancel := s.redisCtx(context.Background())
		s.reg.AckHandoff(actx, s.cfg.NodeID, h.ID)
		cancel()
	}()
	cctx, cancel := s.redisCtx(ctx)
	rm, err := s.claimRoom(cctx, h.Room, h.Name)
	cancel()
	if err != nil {
		// Taken by a router's placement already, or Redis trouble.
		s.log.Debug("sidecar: handoff not taken", "room", h.Room, "err", err)
		return
	}
	s.metrics.handoffs.WithLabelValues("in").Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	if rm.loaded || rm.loader != nil || rm.loadSent || s.link == nil {
		return
	}
	rm.name = h.Name
	rm.loadSent = true
	s.link.send(ott.Load{Room: h.Name}.Append(nil))
	s.armLoadTimer(rm)
}

// handoffs offers released rooms to the other nodes by spare capacity.
type handoffs struct {
	s  *Sidecar
	mu sync.Mutex
	p  *registry.Picker
	// to, when set, takes every room (an operator's move).
	to string
}

// newHandoffs reads the live nodes to offer rooms to.
func (s *Sidecar) newHandoffs(ctx context.Context) *handoffs {
	nodes, err := s.reg.Nodes(ctx)
	if err != nil {
		s.log.Warn("sidecar: no nodes to hand rooms to", "err", err)
	}
	return &handoffs{s: s, p: registry.NewPicker(nodes, s.cfg.NodeID)}
}

// offer offers a released room, which had cost clients, to the node with
// the most spare capacity.
func (h *handoffs) offer(ctx context.Context, l registry.Lease, name string, cost int) {
	to := registry.Node{ID: h.to}
	if to.ID == "" {
		h.mu.Lock()
		var ok bool
		to, ok = h.p.Pick(cost)
		h.mu.Unlock()
		if !ok {
			return // no other node: the room waits in Redis for its next join
		}
	}
	err := h.s.reg.OfferHandoff(ctx, to.ID, registry.Handoff{Room: l.Room, Name: name, From: l.Node, Epoch: l.Epoch, Cost: cost})
	if err != nil {
		h.s.log.Warn("sidecar: offer handoff", "room", l.Room, "to", to.ID, "err", err)
		return
	}
	h.s.metrics.handoffs.WithLabelValues("out").Inc()
}

// announceLoop relays OpenTogetherTube announcements (published on Redis)
// to this node's clients: the monolith does not relay them to balancer
// clients itself (ott/PROTOCOL.md §4.7).
func (s *Sidecar) announceLoop(ctx context.Context) {
	if s.cfg.AnnounceChannel == "-" {
		return
	}
	ps := s.monolithRedis.Subscribe(ctx, s.cfg.AnnounceChannel)
	defer ps.Close()
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	ch := ps.Channel()
	for msg := range ch {
		payload := []byte(msg.Payload)
		if !isJSONObject(payload) {
			s.log.Warn("sidecar: announcement is not a JSON object", "payload", truncate(payload, 200))
			continue
		}
		s.mu.Lock()
		for _, c := range s.clients {
			c.sendShared(payload)
		}
		s.mu.Unlock()
	}
}

// housekeepingLoop takes part in the registry's singleton housekeeping.
func (s *Sidecar) housekeepingLoop(ctx context.Context) {
	s.reg.NewHousekeeper(0).Run(ctx)
}

// metaInterval is how often changed room metadata is written.
const metaInterval = 500 * time.Millisecond

// metaLoop writes the metadata of the rooms whose metadata or client count
// changed, all in one round trip. The client count is this node's: the
// monolith's own count comes only with its 20-second gossip.
func (s *Sidecar) metaLoop(ctx context.Context) {
	t := time.NewTicker(metaInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		var batch []registry.LeaseMeta
		var rooms []*room
		for _, rm := range s.rooms {
			if rm.lease.Epoch == 0 || rm.metaName == "" || rm.gone {
				continue
			}
			if !rm.metaDirty && rm.metaUsers == len(rm.clients) {
				continue
			}
			batch = append(batch, s.takeMetaLocked(rm))
			rooms = append(rooms, rm)
		}
		s.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		wctx, cancel := s.redisCtx(ctx)
		errs, err := s.reg.WriteMetas(wctx, batch)
		cancel()
		if err != nil {
			// Try again next time.
			s.mu.Lock()
			for _, rm := range rooms {
				rm.metaDirty = true
			}
			s.mu.Unlock()
			s.log.Debug("sidecar: write metadata", "rooms", len(batch), "err", err)
			continue
		}
		for i, err := range errs {
			if err != nil {
				s.log.Debug("sidecar: write metadata", "room", batch[i].Lease.Room, "err", err)
			}
		}
	}
}
