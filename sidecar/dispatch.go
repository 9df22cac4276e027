package sidecar

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/ott"
	"github.com/roomlb/roomlb/registry"
)

// linkUp makes l the current link: the node takes placements again.
func (s *Sidecar) linkUp(l *link) {
	lk := s.lock()
	s.link = l
	lk.unlock()
	s.metrics.link.Set(1)
	s.log.Info("sidecar: monolith link up", "monolith", l.monolithID, "http", l.httpAddr, "balancer_id", l.id)
}

// linkDown forgets everything the link carried: the monolith has dropped
// this link's clients, and this node releases every room at once and takes
// no placements until the link is back. When the monolith closed the link
// for its own shutdown (1001), it writes every room to Redis in the next
// moments, so the rooms are released only after ShutdownFlush, held as
// moving meanwhile, and offered to the other nodes.
func (s *Sidecar) linkDown(l *link, err error) {
	shutdown := websocket.IsCloseError(err, websocket.CloseGoingAway)
	lk := s.lock()
	if s.link != l {
		lk.unlock()
		return
	}
	s.link = nil
	s.metrics.link.Set(0)
	clear(s.unloading)
	if s.isKilled() {
		lk.unlock()
		return // a crash releases nothing
	}
	rooms := make([]*room, 0, len(s.rooms))
	for _, rm := range s.rooms {
		rm.cost = len(rm.clients) + len(rm.waiting)
		lk.closeRoomClients(rm, contract.CloseServiceRestart, "monolith link lost")
		rm.loaded = false // the monolith's rooms are out of reach
		rm.moving = true
		rooms = append(rooms, rm)
	}
	lk.unlock()
	if len(rooms) > 0 || !errors.Is(err, errLinkClosed) {
		s.log.Warn("sidecar: monolith link lost: releasing rooms", "rooms", len(rooms), "monolith_shutdown", shutdown, "err", err)
	}

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var h *handoffs
		if shutdown {
			time.Sleep(s.cfg.ShutdownFlush)
			ctx, cancel := s.cfg.redisCtx(context.Background())
			h = s.newHandoffs(ctx)
			cancel()
		}
		for _, rm := range rooms {
			lk := s.lock()
			lease, name, gone, cost := rm.lease, rm.name, rm.gone, rm.cost
			lk.removeRoom(rm)
			lk.unlock()
			if gone || lease.Epoch == 0 {
				continue
			}
			ctx, cancel := s.cfg.redisCtx(context.Background())
			s.flushMeta(ctx, rm)
			if released, err := s.release(ctx, lease); err != nil {
				s.log.Debug("sidecar: release", "room", lease.Room, "err", err)
			} else if released && h != nil {
				h.offer(ctx, lease, name, cost)
			}
			cancel()
		}
	}()
}

// dispatch handles one message from the monolith. A gossip takes the
// table's lock room by room; every other message is handled under it.
func (s *Sidecar) dispatch(m *ott.M2B) {
	switch m.Type {
	case ott.TypeGossip:
		s.onGossip(&m.Gossip)
		return
	case ott.TypeInit:
		// A second init: the monolith restarted its side of the link.
		s.log.Warn("sidecar: monolith sent init again", "monolith", m.Init.ID)
		return
	}
	lk := s.lock()
	defer lk.unlock()
	switch m.Type {
	case ott.TypeRoomMsg:
		lk.onRoomMsg(&m.RoomMsg)
	case ott.TypeKick:
		lk.onKick(&m.Kick)
	case ott.TypeLoaded:
		lk.onLoaded(&m.Loaded.Room)
	case ott.TypeUnloaded:
		lk.onUnloaded(&m.Unloaded)
	}
}

// onRoomMsg delivers a room message: to one client, or to every client of
// the room (the monolith sent one message for all of them).
//
// The lease is checked with the time taken once the table is locked: a time
// taken before could be from before a wait on the lock (or a descheduling)
// of any length, and would let a message out after the lease ended.
func (s locked) onRoomMsg(m *ott.RoomMsg) {
	now := s.now()
	if m.ClientID != "" {
		c := s.clients[m.ClientID]
		if c != nil && c.rm.valid(now) {
			if c.rm.loader == c && !c.rm.loaded {
				// The first unicast of a join is its full sync: the room
				// is loaded even if no loaded came (it was loaded already).
				s.roomLoaded(c.rm)
			}
			c.synced = true
			c.send(m.Payload)
			if c.carried && ott.IsYou(m.Payload) {
				// The last message of its join sequence.
				s.carriedBack(c)
			}
			if s.serves != nil {
				c.rm.served(s.wall(now))
			}
		}
		return
	}
	key, err := registry.RoomKey(m.Room)
	if err != nil {
		return
	}
	rm := s.rooms[key]
	if rm == nil || !rm.valid(now) {
		return
	}
	// Recorded with no clients left too: a moving room's clients are
	// closed without a leave, so the monolith sends its changes here until
	// the unload.
	if ott.BroadcastChangesState(m.Payload) {
		rm.lastChange.Store(now)
		rm.lastSync.Store(now)
	}
	if len(rm.clients) == 0 {
		return
	}
	if len(rm.carried) > 0 {
		if id, ok := ott.JoinEventClient(m.Payload); ok {
			if _, carried := rm.carried[id]; carried {
				// A client a router carried over from the room's last
				// owner: to the room, it never left.
				delete(rm.carried, id)
				return
			}
		}
	}
	if s.serves != nil {
		rm.served(s.wall(now))
	}
	// The link reads each message into a slice of its own
	// (websocket.Conn.ReadMessage), so its clients can share it as it is.
	for c := range rm.clients {
		if c.synced {
			c.send(m.Payload)
		}
	}
}

// onKick closes a client the monolith has dropped.
func (s locked) onKick(k *ott.Kick) {
	c := s.clients[k.ClientID]
	if c == nil {
		// The loader of a room may have left before its join was
		// answered: its kick still says whether the room loads.
		if rm := s.orphanLoads[k.ClientID]; rm != nil {
			delete(s.orphanLoads, k.ClientID)
			if !rm.gone && !rm.loaded && rm.loader == nil && rm.loadSent {
				rm.loadSent = false
				s.loadFailed(rm, k.Reason)
			}
		}
		return
	}
	c.kicked = true
	rm := c.rm
	s.carriedBack(c) // its join failed: not waited for
	if rm.moving && rm.unloadSent && k.Reason == ott.CloseAway {
		// The unload's kick (the monolith has handled what the client
		// sent before it): the room continues elsewhere.
		delete(rm.clients, c)
		c.closeMoved("room moving", rm.movedClients)
		return
	}
	delete(rm.clients, c)
	c.close(ott.SanitizeCloseCode(k.Reason), "")
	if rm.loader != c || rm.loaded {
		return
	}
	rm.loader = nil
	s.loadFailed(rm, k.Reason)
}

// loadFailed: the join that was loading rm was kicked with reason.
func (s locked) loadFailed(rm *room, reason int) {
	rm.loadTimer.stop()
	rm.loadStuck = false
	if reason == ott.CloseRoomNotFound {
		// The room does not exist: nobody waiting for it can join.
		for _, w := range rm.waiting {
			w.close(ott.CloseRoomNotFound, "")
		}
		rm.waiting = nil
		s.releaseRoom(rm)
		return
	}
	// A bad token, say: the next waiting client loads the room.
	s.startLoad(rm)
}

// onLoaded records that the monolith holds a room, claiming it first if it
// loaded it on its own (an HTTP request); a room another node owns is
// unloaded again.
func (s locked) onLoaded(meta *ott.RoomMetadata) {
	key, err := registry.RoomKey(meta.Name)
	if err != nil {
		s.log.Warn("sidecar: monolith loaded a room with a name roomlb cannot route", "room", meta.Name)
		return
	}
	rm := s.rooms[key]
	if rm == nil {
		if s.unloading[key] {
			return // a report from before our unload: it is going away
		}
		rm = s.newRoom(key, meta.Name)
		rm.loaded = true
		rm.meta = meta
		if s.draining {
			// A node on its way out takes no room: the monolith holds it,
			// so it may be unloaded; it is loaded elsewhere on its next join.
			s.sendUnload(rm)
			return
		}
		s.rooms[key] = rm
		s.wg.Add(1)
		go func() {
			s := s.Sidecar // runs without the lock
			defer s.wg.Done()
			s.finishClaim(context.Background(), rm)
		}()
		return
	}
	rm.name = meta.Name
	s.roomLoaded(rm)
	s.writeMetaLocked(rm, meta)
}

// roomLoaded marks rm loaded and lets its waiting clients join.
func (s locked) roomLoaded(rm *room) {
	if s.orphanLoads[rm.loaderID] == rm {
		// Its loader left meanwhile: it leaves now.
		if s.link != nil {
			s.link.send(ott.Leave{Client: rm.loaderID}.Append(nil))
		}
	}
	delete(s.orphanLoads, rm.loaderID)
	rm.loaded = true
	rm.loadSent = false
	rm.loadStuck = false
	rm.loader = nil
	rm.loadTimer.stop()
	waiting := rm.waiting
	rm.waiting = nil
	for _, c := range waiting {
		s.sendJoin(rm, c)
	}
	if rm.moving && rm.gone {
		s.sendUnload(rm)
	}
}

// onUnloaded forgets a room the monolith has unloaded (its clients were
// kicked just before) and gives the lease back.
func (s locked) onUnloaded(u *ott.Unloaded) {
	key, err := registry.RoomKey(u.Name)
	if err != nil {
		return
	}
	delete(s.unloading, key)
	rm := s.rooms[key]
	if rm == nil {
		return
	}
	rm.loaded = false
	select {
	case <-rm.unloaded:
	default:
		close(rm.unloaded)
	}
	if rm.moving {
		// Clients the unload did not kick; the drain releases the room
		// after handing it over.
		s.closeRoomClients(rm, contract.CloseServiceRestart, "room moving")
		return
	}
	s.closeRoomClients(rm, contract.CloseServiceRestart, "room unloaded")
	s.releaseRoom(rm)
}

// onGossip reconciles the room table with the monolith's full list.
func (s *Sidecar) onGossip(g *ott.Gossip) {
	listed := make(map[string]bool, len(g.Rooms))
	for i := range g.Rooms {
		meta := &g.Rooms[i].Room
		key, err := registry.RoomKey(meta.Name)
		if err != nil || listed[key] {
			continue
		}
		listed[key] = true
		lk := s.lock()
		if rm := s.rooms[key]; rm == nil || !rm.loaded {
			lk.onLoaded(meta)
		} else {
			lk.writeMetaLocked(rm, meta)
		}
		lk.unlock()
	}
	lk := s.lock()
	defer lk.unlock()
	for key := range s.unloading {
		if !listed[key] {
			delete(s.unloading, key) // gone: a missed unloaded
		}
	}
	for key, rm := range s.rooms {
		if rm.loadStuck && !rm.loaded && !listed[key] {
			// The load that timed out came to nothing: the next waiting
			// client may load the room, or the claim goes back.
			rm.loadStuck = false
			rm.loadSent = false
			lk.startLoad(rm)
			continue
		}
		if rm.loaded && !listed[key] && !rm.moving {
			// Gone from the monolith without an unloaded we saw.
			rm.loaded = false
			lk.closeRoomClients(rm, contract.CloseServiceRestart, "room unloaded")
			lk.releaseRoom(rm)
		}
	}
}

// writeMetaLocked records the room's metadata for the registry, where the
// metadata loop writes it (fenced by the room's epoch) if it changed: the
// monolith repeats every room's metadata in each gossip, and rewriting
// 10,000 unchanged rooms every 20 s would be most of a node's Redis load.
func (s locked) writeMetaLocked(rm *room, meta *ott.RoomMetadata) {
	if meta == nil {
		return
	}
	if rm.lease.Epoch == 0 {
		rm.meta = meta // written when the claim succeeds
		return
	}
	if rm.metaName == meta.Name && rm.metaVisibility == meta.Visibility && bytes.Equal(rm.metaRaw, meta.Raw) {
		return
	}
	first := rm.metaName == ""
	rm.metaName, rm.metaVisibility = meta.Name, meta.Visibility
	rm.metaRaw = append(rm.metaRaw[:0], meta.Raw...)
	rm.metaDirty = true
	if first {
		// The first metadata carries the room's canonical casing, which
		// the next owner needs to load the room: write it at once.
		lm := s.takeMetaLocked(rm)
		s.wg.Add(1)
		go func() {
			s := s.Sidecar // runs without the lock
			defer s.wg.Done()
			ctx, cancel := s.cfg.redisCtx(context.Background())
			defer cancel()
			if err := s.reg.WriteMeta(ctx, lm.Lease, lm.Meta); err != nil {
				s.log.Debug("sidecar: write meta", "room", lm.Lease.Room, "err", err)
			}
		}()
	}
}

// takeMetaLocked returns rm's metadata write and marks it written.
func (s locked) takeMetaLocked(rm *room) registry.LeaseMeta {
	rm.metaDirty = false
	rm.metaUsers = len(rm.clients)
	return registry.LeaseMeta{Lease: rm.lease, Meta: registry.Meta{
		Name: rm.metaName, Visibility: rm.metaVisibility, Users: rm.metaUsers,
		Metadata: append([]byte(nil), rm.metaRaw...),
	}}
}

// flushMeta writes rm's metadata now if the registry's copy is behind, so
// that it is there before the room is released.
func (s *Sidecar) flushMeta(ctx context.Context, rm *room) {
	lk := s.lock()
	if !rm.metaDirty || rm.lease.Epoch == 0 || rm.metaName == "" {
		lk.unlock()
		return
	}
	lm := lk.takeMetaLocked(rm)
	lk.unlock()
	if err := s.reg.WriteMeta(ctx, lm.Lease, lm.Meta); err != nil {
		s.log.Debug("sidecar: write meta", "room", lm.Lease.Room, "err", err)
	}
}

// addClient adds an authenticated client to its room: it joins at once if
// the room is loaded, loads the room with its join if nobody is loading it,
// or waits for the load. It reports false if the room is no longer served.
func (s locked) addClient(c *client, token string) bool {
	rm := c.rm
	if rm.gone || rm.moving || !rm.valid(s.now()) || s.link == nil {
		c.close(contract.CloseServiceRestart, "room moved")
		return false
	}
	c.link = s.link
	c.token = token
	s.clients[c.id] = c
	s.metrics.clients.Set(float64(len(s.clients)))
	switch {
	case rm.loaded:
		s.sendJoin(rm, c)
	case rm.loader != nil || rm.loadSent:
		rm.waiting = append(rm.waiting, c)
	default:
		rm.waiting = append(rm.waiting, c)
		s.startLoad(rm)
	}
	return true
}

// startLoad sends the join of the first waiting client, which loads the
// room: one join per unloaded room, or the monolith loads it twice (§8 item
// 4).
func (s locked) startLoad(rm *room) {
	if len(rm.waiting) == 0 {
		if len(rm.clients) == 0 && !rm.loaded && !rm.loadSent {
			s.releaseRoom(rm)
		}
		return
	}
	c := rm.waiting[0]
	rm.waiting = rm.waiting[1:]
	rm.loader = c
	rm.loaderID = c.id
	s.sendJoin(rm, c)
	s.armLoadTimer(rm)
}

// armLoadTimer gives the monolith LoadTimeout to load rm; then the clients
// waiting for it are told to come back later.
func (s locked) armLoadTimer(rm *room) {
	rm.loadTimer.stop()
	sc := s.Sidecar // the timer runs without the lock
	rm.loadTimer = &timer{time.AfterFunc(s.cfg.LoadTimeout, func() {
		s := sc
		lk := s.lock()
		defer lk.unlock()
		if rm.loaded || rm.gone {
			return
		}
		s.log.Warn("sidecar: room not loaded in time", "room", rm.key)
		lk.closeRoomClients(rm, contract.CloseTryAgain, "room not loaded")
		// The monolith may still be loading it: another join now would load
		// it twice. The load stays in flight (clients that come back wait
		// for it) until loaded arrives or a gossip shows the monolith does
		// not have the room.
		rm.loader = nil
		rm.loadSent = true
		rm.loadStuck = true
	})}
}

// sendJoin joins c to rm on the monolith.
func (s locked) sendJoin(rm *room, c *client) {
	if len(rm.clients) == 0 {
		rm.seenSince = s.now()
	}
	rm.clients[c] = struct{}{}
	if c.carried {
		if rm.carried == nil {
			rm.carried = map[string]struct{}{}
		}
		rm.carried[c.id] = struct{}{}
	}
	c.link.send(ott.Join{Room: rm.name, Client: c.id, Token: c.token}.Append(nil))
	s.joinServed(rm, c)
	if c.carried {
		s.carriedJoin(rm, c.expect)
	}
	c.token = ""
	c.markJoined()
}

// removeClient forgets a client whose connection ended, telling the
// monolith unless it dropped the client itself.
func (s locked) removeClient(c *client) {
	if s.clients[c.id] != c {
		return
	}
	delete(s.clients, c.id)
	s.metrics.clients.Set(float64(len(s.clients)))
	rm := c.rm
	_, joined := rm.clients[c]
	delete(rm.clients, c)
	if joined {
		s.carriedBack(c) // gone: not waited for
	}
	if len(rm.clients) == 0 {
		rm.seenSince = 0
	}
	for i, w := range rm.waiting {
		if w == c {
			rm.waiting = append(rm.waiting[:i], rm.waiting[i+1:]...)
			break
		}
	}
	loading := rm.loader == c && !rm.loaded
	if joined && !c.kicked && c.link == s.link && s.link != nil && !loading {
		s.link.send(ott.Leave{Client: c.id}.Append(nil))
	}
	if loading {
		// It left while its join was loading the room: the join is out,
		// so the load goes on; keep waiting for it (or for its kick). Its
		// leave waits for the load too: the monolith drops, without a
		// word, a join whose client left before it looked the room up,
		// and the room would then load for nobody.
		rm.loader = nil
		rm.loadSent = true
		s.orphanLoads[c.id] = rm
	}
	c.markJoined()
}
