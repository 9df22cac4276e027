package sidecar

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/registry"
)

// drainInBackground starts a drain bounded by DrainTimeout, as SIGTERM's
// is (the admin endpoint, roomlb ctl drain).
func (s *Sidecar) drainInBackground() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
		defer cancel()
		if err := s.Drain(ctx); err != nil {
			s.log.Warn("sidecar: drain", "err", err)
		}
	}()
}

// How many rooms a drain hands over at once. A room whose monolith write
// may still be due stops at the drain's start, so that the waits for those
// writes run side by side (drainParallel of them). Any other room goes on
// being served until its turn, and then moves at once: at most drainWindow
// clients' rooms move together, so that each move is quick and the pause
// its clients see short (a room of more clients moves alone). Moving them
// all at once only made every client wait for the last one; fewer at a time
// shortened each move without lengthening the drain (bench figure 7: p99
// pause 193-355 ms at 32 clients' rooms, 139-207 ms at 8, and 1,000 idle
// rooms drained in about 1 s either way).
const (
	drainParallel = 128
	drainWindow   = 8
)

// Drain hands every room of this node to the other nodes and stops the
// sidecar: the node turns draining (no new placements), then each room
// closes its clients with a code they reconnect on, waits until the
// monolith has written the room's last change to Redis, is unloaded, released
// and offered to the other nodes, which claim it with a new epoch and load
// it from Redis. Routers hold the room's joins while it moves. Then the node
// deregisters. Rooms not handed over when ctx ends are released as they are.
// Run returns after Drain.
func (s *Sidecar) Drain(ctx context.Context) error {
	lk := s.lock()
	if s.draining {
		lk.unlock()
		select {
		case <-s.drained:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.draining = true
	var rooms, waits []*room
	now := s.now()
	for _, rm := range s.rooms {
		if lk.writeDue(rm, now) {
			// It stops changing now: its wait for the monolith's state
			// write runs beside the others'.
			lk.startMoving(rm)
			waits = append(waits, rm)
		} else {
			rooms = append(rooms, rm)
		}
	}
	lk.unlock()
	defer s.drainOnce.Do(func() { close(s.drained) })
	start := time.Now()
	s.log.Info("sidecar: draining", "rooms", len(rooms)+len(waits), "waiting_for_writes", len(waits))

	// Tell the routers first, so no new room is placed here.
	hctx, cancel := s.cfg.redisCtx(ctx)
	s.presence.beat(hctx)
	cancel()

	h := s.newHandoffs(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	move := func(rm *room, done func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer done()
			if err := s.drainRoom(ctx, rm, h); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	sem := make(chan struct{}, drainParallel)
	for _, rm := range waits {
		sem <- struct{}{}
		move(rm, func() { <-sem })
	}
	window := semaphore.NewWeighted(drainWindow)
	for _, rm := range rooms {
		lk := s.lock()
		n := int64(min(max(len(rm.clients)+len(rm.waiting), 1), drainWindow))
		lk.unlock()
		if window.Acquire(ctx, n) != nil {
			break // out of time: the rest are released below
		}
		move(rm, func() { window.Release(n) })
	}
	wg.Wait()

	// Rooms that arrived during the drain, or whose handover failed.
	lk = s.lock()
	for _, rm := range s.rooms {
		lk.closeRoomClients(rm, contract.CloseServiceRestart, "node draining")
		lk.sendUnload(rm)
		lk.releaseRoom(rm)
	}
	lk.unlock()

	s.presence.deregistered.Store(true)
	dctx, cancel := s.cfg.redisCtx(context.Background())
	// Rooms other drains offered this node meanwhile go on to others.
	if _, err := s.reg.MoveHandoffs(dctx, s.cfg.NodeID); err != nil {
		s.log.Warn("sidecar: move handoffs offered to this node", "err", err)
	}
	if err := s.presence.deregister(dctx); err != nil {
		errs = append(errs, fmt.Errorf("deregister: %w", err))
	}
	cancel()
	s.log.Info("sidecar: drained", "rooms", len(rooms), "took", time.Since(start), "errors", len(errs))
	if ctx.Err() != nil {
		return fmt.Errorf("sidecar: drain not finished in time: %w", ctx.Err())
	}
	return errors.Join(errs...)
}

// How a drain knows that the monolith's write of a room's last change has
// landed. The monolith writes a room (room:NAME) StateDebounce after its
// last change of a storable property, and keeps that write pending when a
// balancer unloads the room (ott/PROTOCOL.md §4.6, §7); the next owner must
// not load the room before it lands. So a moving room is unloaded at once
// (it stops changing), and the drain then waits:
//
//   - for a write it sees land: room:NAME's TTL (every write sets one)
//     rising, or the key appearing, after the monolith confirmed the
//     unload. A write after the unload follows every change, so it is the
//     last.
//   - or, when no write comes, until StateDebounce and drainMargin after
//     the last thing that may have changed the room: a request, an HTTP
//     write, a sync carrying a storable property; for a room whose changes
//     may have gone unseen (it had no clients, or they came less than
//     StateDebounce ago), the unload. Nothing pending: no wait at all.
//   - but where a sync showed a change whose write is still due after the
//     unload, that write is surely coming: the drain waits for it up to
//     writeLate past its due time (a loaded machine fires timers late).
//
// drainPoll is how often room:NAME's TTL is read meanwhile; writeSlack is
// how much earlier than StateDebounce after its sync a write may land.
const (
	drainMargin = time.Second
	writeLate   = 3 * time.Second
	writeSlack  = 250 * time.Millisecond
	drainPoll   = 100 * time.Millisecond
)

// drainRoom hands one room over.
func (s *Sidecar) drainRoom(ctx context.Context, rm *room, h *handoffs) error {
	lk := s.lock()
	if rm.gone {
		lk.unlock()
		return nil
	}
	lk.startMoving(rm)
	loading := !rm.loaded && (rm.loader != nil || rm.loadSent)
	lk.unlock()
	if loading {
		s.waitLoaded(ctx, rm)
		lk := s.lock()
		if lk.sendUnload(rm) {
			rm.unloadSent = true
		}
		lk.unlock()
	}
	lk = s.lock()
	unloaded := rm.unloadSent
	lk.unlock()
	if unloaded {
		select {
		case <-rm.unloaded:
		case <-time.After(3 * time.Second):
			s.log.Warn("sidecar: no unloaded from the monolith", "room", rm.key)
		case <-ctx.Done():
		}
		lk := s.lock()
		lk.closeRoomClients(rm, contract.CloseServiceRestart, "room moving")
		lk.unlock()
	}
	s.metrics.moveWaits.WithLabelValues(s.awaitStateWrite(ctx, rm, unloaded)).Inc()

	fctx, cancel := s.cfg.redisCtx(context.Background())
	s.flushMeta(fctx, rm) // the next owner loads the room by the name in it
	cancel()
	lk = s.lock()
	lease, name, cost, valid := rm.lease, rm.name, rm.cost, rm.valid(s.now())
	lk.removeRoom(rm)
	lk.unlock()
	if !valid || lease.Epoch == 0 {
		return nil // fenced meanwhile: the lease is someone else's
	}
	rctx, cancel := s.cfg.redisCtx(context.Background())
	defer cancel()
	if h.to != "" {
		// A move to a given node: the room goes to it in one step, so a
		// join held meanwhile cannot place it anywhere else (this node
		// included). The target adopts the lease when it takes the offer.
		// The room goes to the target's session as it is now: if that
		// ends before the target takes the room, the room is free again.
		to, err := s.reg.Node(rctx, h.to)
		if err == nil {
			lk := s.lock()
			lk.retire(lease)
			lk.unlock()
			_, err = s.reg.Transfer(rctx, lease, to.ID, to.Session)
		}
		var oe *registry.OwnerError
		switch {
		case errors.Is(err, registry.ErrNodeGone):
			// The target is gone: give the room back as a drain does.
		case err == nil:
			s.forgotten(lease)
			h.offer(rctx, lease, name, cost)
			return nil
		case errors.As(err, &oe):
			s.forgotten(lease)
			return nil // someone else's by now
		}
		// Unknown outcome: give it back as a drain does.
	}
	released, err := s.release(rctx, lease)
	if err != nil {
		return fmt.Errorf("release %s: %w", lease.Room, err)
	}
	if !released {
		return nil // someone else's by now
	}
	h.offer(rctx, lease, name, cost)
	return nil
}

// writeWait is until when a drain waits for the monolith's write of rm's
// last change (see drainMargin), seen at now; due says a sync showed a
// change whose write is surely still to come. seenFrom is the moment since
// which every change of the room has been seen here (0: some may have gone
// unseen up to now); unloaded says the monolith held the room up to now.
func (s *Sidecar) writeWait(rm *room, now, seenFrom int64, unloaded bool) (deadline int64, due bool) {
	last := rm.lastChange.Load()
	if seenFrom != 0 {
		last = max(last, seenFrom)
	} else if unloaded {
		last = now // what changed before the unload went unseen
	}
	debounce := int64(s.cfg.StateDebounce)
	if debounce == 0 {
		return 0, false
	}
	deadline = last + debounce + int64(drainMargin)
	synced := rm.lastSync.Load()
	due = synced != 0 && synced+debounce-int64(writeSlack) > now
	if due {
		deadline = max(deadline, synced+debounce+int64(writeLate))
	}
	return deadline, due
}

// writeDue reports whether a move of rm starting now would wait for a
// monolith write (see startMoving for seenFrom).
func (s locked) writeDue(rm *room, now int64) bool {
	var seenFrom int64
	if len(rm.clients) > 0 {
		seenFrom = rm.seenSince
	}
	deadline, _ := s.writeWait(rm, now, seenFrom, true)
	return now < deadline
}

// awaitStateWrite waits until the monolith's write of rm's last change has
// landed (see drainMargin). unloaded says the monolith held the room up to
// now, when it has confirmed the unload (or failed to in time). It says
// how the wait ended: none (nothing pending), written, unseen or cancelled
// (roomlb_sidecar_move_waits_total).
func (s *Sidecar) awaitStateWrite(ctx context.Context, rm *room, unloaded bool) string {
	now := s.now()
	deadline, due := s.writeWait(rm, now, rm.seenFrom, unloaded)
	if now >= deadline {
		return "none"
	}
	key := "room:" + rm.name
	ttl := func() (time.Duration, bool) {
		rctx, cancel := s.cfg.redisCtx(ctx)
		defer cancel()
		d, err := s.monolithRedis.PTTL(rctx, key).Result()
		return d, err == nil
	}
	before, ok := ttl()
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	for s.now() < deadline {
		select {
		case <-t.C:
		case <-ctx.Done():
			return "cancelled"
		}
		after, ok2 := ttl()
		// PTTL: -2 no key, -1 no TTL, else what is left; every write of
		// the monolith sets a new TTL.
		if ok && ok2 && ((before == -2 && after != -2) || (before >= 0 && after > before)) {
			s.log.Debug("sidecar: the monolith wrote the moving room", "room", rm.key, "waited", time.Duration(s.now()-now))
			return "written"
		}
		before, ok = after, ok2
	}
	s.log.Debug("sidecar: no write of the moving room seen", "room", rm.key, "waited", time.Duration(s.now()-now), "due", due)
	if due {
		s.log.Warn("sidecar: the monolith's state write was not seen; moving the room anyway (is --monolith-redis-url the monolith's Redis?)", "room", rm.key, "key", key)
	}
	return "unseen"
}

// startMoving holds rm's new clients, stops its clients' frames and
// unloads it from the monolith, so that it stops changing. Its clients are
// closed (CloseServiceRestart) once the monolith has unloaded it: what the
// monolith sends until then, the broadcasts of their last messages among
// it, still reaches them. Routers carry them over to the room's new owner,
// with what the monolith did not get (or they reconnect).
func (s locked) startMoving(rm *room) {
	if rm.moving {
		return
	}
	rm.moving = true
	rm.movingNow.Store(true)
	s.releaseHeld(rm)
	rm.cost = len(rm.clients) + len(rm.waiting)
	rm.movedClients = rm.cost
	if rm.loader != nil {
		rm.movedClients++
	}
	// The monolith sends a room's changes here only while it has clients
	// here: a room that had none since some moment less than a debounce
	// ago may have changed unseen before then; one that has none now, at
	// any moment up to the unload.
	rm.seenFrom = 0
	if len(rm.clients) > 0 {
		rm.seenFrom = rm.seenSince
	}
	for c := range rm.clients {
		c.gate()
	}
	// At once, in the same critical section: the clients are still the
	// monolith's room members (no leave is sent for them once the unload
	// is out), so their room's changes keep coming until the unload.
	rm.unloadSent = s.sendUnload(rm)
	if !rm.unloadSent {
		s.closeRoomClients(rm, contract.CloseServiceRestart, "room moving")
		return
	}
	// Clients waiting for the room's load have sent nothing yet.
	clients := rm.clients
	rm.clients = nil
	s.closeRoomClients(rm, contract.CloseServiceRestart, "room moving")
	rm.clients = clients
}

// waitLoaded waits until a room whose load is under way is loaded (or the
// load failed), so that it can be unloaded safely.
func (s *Sidecar) waitLoaded(ctx context.Context, rm *room) {
	deadline := time.Now().Add(s.cfg.LoadTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		lk := s.lock()
		done := rm.loaded || rm.gone || (rm.loader == nil && !rm.loadSent)
		lk.unlock()
		if done {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
