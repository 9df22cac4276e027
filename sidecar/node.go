package sidecar

import (
	"context"
	"crypto/rand"
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
		start := time.Now()
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
		// Every third of the TTL from one heartbeat's start to the next:
		// over a slow link, a third of the TTL after the answer would let
		// the heartbeat's deadline (0.9 TTL from its start) pass before
		// the next answer, and the node would stop serving for nothing.
		next := max(s.cfg.HeartbeatTTL/3-time.Since(start), s.cfg.HeartbeatTTL/20)
		if err != nil {
			s.log.Warn("sidecar: heartbeat", "err", err)
			// Try again soon: the rooms stop being served when the
			// heartbeat is not refreshed in time.
			next = s.cfg.HeartbeatTTL / 10
		}
		t.Reset(next)
	}
}

// heartbeat is one life of the node's heartbeat key in Redis as this node
// knows it. Values are never changed once stored in Sidecar.hb.
type heartbeat struct {
	// life counts the lives of the key this node has seen end; rooms are
	// bound to the one they were claimed in (room.life).
	life uint64
	// session is the key's session (registry.Node.Session); "" before the
	// first heartbeat and after a deregistration.
	session string
	// until is the lease clock time until which the key surely exists:
	// the last successful heartbeat's send time plus its TTL less a tenth;
	// 0 when there is none. Past it a router may steal this node's rooms,
	// so no room is served then.
	until int64
}

// beat sends one heartbeat when the monolith link is up (up reports
// whether it was) and moves the heartbeat's deadline on when it succeeds.
//
// A heartbeat sent before the deadline may reach Redis after the key
// expired (a slow link): it creates the key again, and in between a router
// may have stolen any of the node's rooms. So the deadline moves on only
// within one life of the key, told by its session: a heartbeat that finds
// another session starts a new life, and the rooms of the old one are
// fenced, never served again. (After a loss of the whole registry the
// generation changes too; then the rooms are re-claimed instead, see
// registryLost.)
func (s *Sidecar) beat(ctx context.Context) (up bool, err error) {
	s.beatMu.Lock()
	defer s.beatMu.Unlock()
	n, up := s.nodeInfo()
	if !up || s.deregistered.Load() {
		return false, nil
	}
	prev := s.hb.Load()
	n.Session = rand.Text()
	sent := time.Now()
	res, err := s.reg.Beat(ctx, n, s.cfg.HeartbeatTTL)
	if err != nil {
		return true, err
	}
	next := heartbeat{life: prev.life, session: res.Session, until: prev.until}
	switch {
	case s.generation != "" && res.Generation != s.generation:
		// Redis lost the registry (a restart without persistence, a
		// flush): the rooms' keys are gone. Until each room is re-claimed
		// it may be served only as long as the last heartbeat of the old
		// generation allows, which other nodes' claims wait out.
		s.log.Warn("sidecar: Redis lost the registry: re-claiming every room", "generation", res.Generation, "recovery", res.Recovery)
		s.registryLost(prev.until)
	case prev.session != "" && res.Session != prev.session:
		next.life++
		next.until = 0
	}
	s.generation = res.Generation
	next.until = max(next.until, s.at(sent)+int64(s.cfg.HeartbeatTTL-s.cfg.HeartbeatTTL/10))
	// Stored before the old life's rooms are fenced: from here on none of
	// them is valid, nor is a claim that was sent in the old life.
	s.hb.Store(&next)
	if next.life != prev.life {
		s.heartbeatLapsed(next.life)
	}
	return true, nil
}

// heartbeatLapsed fences every room held in a life of the heartbeat key
// before life: the key was gone from Redis for a moment (it expired while
// a heartbeat was on its way, or someone deleted it), and a router may
// have stolen any of them then. beatMu is held.
func (s *Sidecar) heartbeatLapsed(life uint64) {
	lk := s.lock()
	defer lk.unlock()
	fenced := 0
	for _, rm := range s.rooms {
		if rm.until.Load() != 0 && rm.life.Load() < life {
			lk.fence(rm, "heartbeat")
			fenced++
		}
	}
	s.log.Warn("sidecar: the node's heartbeat key lapsed in Redis: its rooms may have been taken meanwhile", "fenced", fenced)
}

// deregister takes the node out of the registry; from then on no room is
// served.
func (s *Sidecar) deregister(ctx context.Context) error {
	s.beatMu.Lock()
	defer s.beatMu.Unlock()
	s.hb.Store(&heartbeat{life: s.hb.Load().life + 1})
	return s.reg.Deregister(ctx, s.cfg.NodeID)
}

// ensureHeartbeat makes sure the heartbeat outlives the next lease
// renewal before a room is claimed: a room claimed by a node without a
// heartbeat key could be stolen at once.
func (s *Sidecar) ensureHeartbeat(ctx context.Context) error {
	if s.hb.Load().until-s.now() > int64(s.cfg.HeartbeatTTL/2) {
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
	lk := s.lock()
	defer lk.unlock()
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
		lk := s.lock()
		ok := s.link != nil && !s.draining
		lk.unlock()
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
			lk := s.lock()
			draining := s.draining
			lk.unlock()
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
	lk := s.lock()
	defer lk.unlock()
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
		lk := s.lock()
		for _, c := range s.clients {
			c.send(payload)
		}
		lk.unlock()
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
		lk := s.lock()
		var batch []registry.LeaseMeta
		var rooms []*room
		for _, rm := range s.rooms {
			if rm.lease.Epoch == 0 || rm.metaName == "" || rm.gone {
				continue
			}
			if !rm.metaDirty && rm.metaUsers == len(rm.clients) {
				continue
			}
			batch = append(batch, lk.takeMetaLocked(rm))
			rooms = append(rooms, rm)
		}
		lk.unlock()
		if len(batch) == 0 {
			continue
		}
		wctx, cancel := s.redisCtx(ctx)
		errs, err := s.reg.WriteMetas(wctx, batch)
		cancel()
		if err != nil {
			// Try again next time.
			lk := s.lock()
			for _, rm := range rooms {
				rm.metaDirty = true
			}
			lk.unlock()
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
