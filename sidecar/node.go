package sidecar

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/roomlb/roomlb/ott"
	"github.com/roomlb/roomlb/registry"
)

// nodeInfo is what the heartbeat says; up is false while the link is down
// and no room is held any more.
func (s locked) nodeInfo() (registry.Node, bool) {
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

// heartbeatLapsed fences every room held in a life of the heartbeat key
// before life: the key was gone from Redis for a moment (it expired while
// a heartbeat was on its way, or someone deleted it), and a router may
// have stolen any of them then.
func (s locked) heartbeatLapsed(life uint64) {
	fenced := 0
	for _, rm := range s.rooms {
		if rm.until.Load() != 0 && rm.life.Load() < life {
			s.fence(rm, "heartbeat")
			fenced++
		}
	}
	s.log.Warn("sidecar: the node's heartbeat key lapsed in Redis: its rooms may have been taken meanwhile", "fenced", fenced)
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
		actx, cancel := s.cfg.redisCtx(context.Background())
		s.reg.AckHandoff(actx, s.cfg.NodeID, h.ID)
		cancel()
	}()
	cctx, cancel := s.cfg.redisCtx(ctx)
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
	lk.armLoadTimer(rm)
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
	every(ctx, metaInterval, func() { s.writeMetas(ctx) })
}

// writeMetas writes the changed metadata of every room at once.
func (s *Sidecar) writeMetas(ctx context.Context) {
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
		return
	}
	wctx, cancel := s.cfg.redisCtx(ctx)
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
		return
	}
	lk = s.lock()
	defer lk.unlock()
	reclaim := false
	for i, err := range errs {
		var oe *registry.OwnerError
		if !errors.As(err, &oe) {
			if err != nil {
				s.log.Debug("sidecar: write metadata", "room", batch[i].Lease.Room, "err", err)
			}
			continue
		}
		// The room's key no longer names this lease. Leases need no
		// renewal, so this is where a node learns it: nobody takes a
		// room from a live session, but Redis may lose the key, and an
		// operator may change it by hand.
		rm := rooms[i]
		if rm.gone || rm.lease != batch[i].Lease {
			continue
		}
		switch oe.Owner.Node {
		case "":
			// Unowned: Redis lost the key. The room is still ours to
			// take back; the reclaim decides.
			rm.stale = true
			reclaim = true
		case s.cfg.NodeID:
			// This node's at another epoch or session: a reclaim of its
			// own bound the room anew while the write was on its way,
			// and its answer has not been applied yet. Written again
			// with the lease it gives.
			rm.metaDirty = true
		default:
			lk.fence(rm, "lost")
		}
	}
	if reclaim {
		s.signalReclaim()
	}
}
