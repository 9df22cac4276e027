package sidecar

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
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

// drainParallel is how many rooms a drain hands over at once.
const drainParallel = 128

// Drain hands every room of this node to the other nodes and stops the
// sidecar: the node turns draining (no new placements), then each room
// closes its clients with a code they reconnect on, waits until the
// monolith has written the room's last change to Redis, is unloaded, released
// and offered to the other nodes, which claim it with a new epoch and load
// it from Redis. Routers hold the room's joins while it moves. Then the node
// deregisters. Rooms not handed over when ctx ends are released as they are.
// Run returns after Drain.
func (s *Sidecar) Drain(ctx context.Context) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		select {
		case <-s.drained:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.draining = true
	rooms := make([]*room, 0, len(s.rooms))
	for _, rm := range s.rooms {
		rooms = append(rooms, rm)
		// Every room stops changing now, not when its turn comes: the
		// waits for the monolith's state writes then run side by side.
		s.startMoving(rm)
	}
	s.mu.Unlock()
	defer s.drainOnce.Do(func() { close(s.drained) })
	start := time.Now()
	s.log.Info("sidecar: draining", "rooms", len(rooms))

	// Tell the routers first, so no new room is placed here.
	hctx, cancel := s.redisCtx(ctx)
	s.beat(hctx)
	cancel()

	h := s.newHandoffs(ctx)
	sem := make(chan struct{}, drainParallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, rm := range rooms {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := s.drainRoom(ctx, rm, h); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	// Rooms that arrived during the drain, or whose handover failed.
	s.mu.Lock()
	for _, rm := range s.rooms {
		s.closeRoomClients(rm, closeServiceRestart, "node draining")
		s.sendUnload(rm)
		s.releaseRoom(rm)
	}
	s.mu.Unlock()

	s.deregistered.Store(true)
	dctx, cancel := s.redisCtx(context.Background())
	// Rooms other drains offered this node meanwhile go on to others.
	if _, err := s.reg.MoveHandoffs(dctx, s.cfg.NodeID); err != nil {
		s.log.Warn("sidecar: move handoffs offered to this node", "err", err)
	}
	if err := s.deregister(dctx); err != nil {
		errs = append(errs, fmt.Errorf("deregister: %w", err))
	}
	cancel()
	s.log.Info("sidecar: drained", "rooms", len(rooms), "took", time.Since(start), "errors", len(errs))
	if ctx.Err() != nil {
		return fmt.Errorf("sidecar: drain not finished in time: %w", ctx.Err())
	}
	return errors.Join(errs...)
}

// drainSettle is how long a drain waits, before it decides a room has
// nothing pending, for the monolith's answer to what was forwarded last;
// drainMargin is added to the monolith's state debounce for its write to
// land: the debounce starts when the monolith handles the change, a little
// after the sidecar saw it, and a busy event loop fires the timer late
// (CI saw a write land after 250 ms more; the reference monolith then
// drops it at the unload, the real one writes it after the next owner
// loaded the room).
const (
	drainSettle = 100 * time.Millisecond
	drainMargin = time.Second
)

// drainRoom hands one room over.
func (s *Sidecar) drainRoom(ctx context.Context, rm *room, h *handoffs) error {
	s.mu.Lock()
	if rm.gone {
		s.mu.Unlock()
		return nil
	}
	s.startMoving(rm)
	blind := rm.blindAt
	loading := !rm.loaded && (rm.loader != nil || rm.loadSent)
	s.mu.Unlock()

	// The monolith writes a room StateDebounce after its last storable
	// change, and the next owner must not load it before that write has
	// landed (ott-protocol.md §3.6, §8). A room with nothing pending moves
	// at once: chats, user updates and the like are not written.
	if loading {
		s.waitLoaded(ctx, rm)
	}
	// A sync answering a request forwarded just before the move may still
	// be on its way.
	settle := min(drainSettle, s.cfg.StateDebounce)
	for wait := settle; wait > 0; {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			wait = 0
			continue
		}
		last := max(rm.lastChange.Load(), blind)
		wait = time.Duration(last+int64(s.cfg.StateDebounce)-s.now()) + drainMargin
	}

	s.mu.Lock()
	wasLoaded := rm.loaded && s.link != nil
	s.sendUnload(rm)
	s.mu.Unlock()
	if wasLoaded {
		select {
		case <-rm.unloaded:
		case <-time.After(3 * time.Second):
			s.log.Warn("sidecar: no unloaded from the monolith", "room", rm.key)
		case <-ctx.Done():
		}
	}

	fctx, cancel := s.redisCtx(context.Background())
	s.flushMeta(fctx, rm) // the next owner loads the room by the name in it
	cancel()
	s.mu.Lock()
	lease, name, cost, valid := rm.lease, rm.name, rm.cost, rm.valid(s.now())
	s.removeRoom(rm)
	s.mu.Unlock()
	if !valid || lease.Epoch == 0 {
		return nil // fenced meanwhile: the lease is someone else's
	}
	rctx, cancel := s.redisCtx(context.Background())
	defer cancel()
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

// startMoving holds rm's new clients and closes its clients; they
// reconnect through the routers, which hold them until the room has its
// new owner. s.mu is held.
func (s *Sidecar) startMoving(rm *room) {
	if rm.moving {
		return
	}
	rm.moving = true
	rm.movingNow.Store(true)
	rm.cost = len(rm.clients) + len(rm.waiting)
	// Changes of a room reach this node only while it has clients here:
	// the room is blind from the last moment it had none (now, when it has
	// none), and whatever changed then may still be written.
	rm.blindAt = rm.seenSince
	if len(rm.clients) == 0 || rm.blindAt == 0 {
		rm.blindAt = s.now()
	}
	s.closeRoomClients(rm, closeServiceRestart, "room moving")
}

// waitLoaded waits until a room whose load is under way is loaded (or the
// load failed), so that it can be unloaded safely.
func (s *Sidecar) waitLoaded(ctx context.Context, rm *room) {
	deadline := time.Now().Add(s.cfg.LoadTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		s.mu.Lock()
		done := rm.loaded || rm.gone || (rm.loader == nil && !rm.loadSent)
		s.mu.Unlock()
		if done {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
