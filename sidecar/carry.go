package sidecar

import (
	"time"
)

// Clients carried over. When a room moves, the routers carry its clients
// over to the new owner without closing them (router/carry.go): each
// handshake here says so (contract.HeaderCarried) with the number of
// clients the room had on its previous owner, when that owner said (0 when
// it could not: a crash). They come back one by one, each through its own
// router, within moments of each other; a chat one of them sends meanwhile
// (or one its router replays) must reach the others too. So from the first
// carried client's join the room's client messages are held, in the order
// they came, and passed on once every client expected is back, or at the
// latest carryHold after that first join (carryHoldUnknown when the count
// is not known, or maxHeldMsgs messages). A client is back when the
// monolith has completed its join (its "you": joins are asynchronous
// there). Joins are not held.
const (
	carryHold        = 2 * time.Second
	carryHoldUnknown = 500 * time.Millisecond
	maxHeldMsgs      = 4096
)

// heldMsg is a client_msg held while a room's clients come back.
type heldMsg struct {
	l  *link
	bp *[]byte
}

// carriedJoin notes the join of a carried client, which expects the room
// to have had expect clients (0: unknown), and holds the room's client
// messages from the first one on.
func (s locked) carriedJoin(rm *room, expect int) {
	if rm.moving || rm.gone {
		return
	}
	rm.carriedExpect = max(rm.carriedExpect, expect)
	if !rm.carryWave {
		rm.carryWave = true
		hold := carryHoldUnknown
		if rm.carriedExpect > 0 {
			hold = carryHold
		}
		rm.heldMu.Lock()
		rm.holding.Store(true)
		rm.heldMu.Unlock()
		rm.holdTimer = &timer{time.AfterFunc(hold, func() {
			lk := s.Sidecar.lock() // the timer runs without the lock
			defer lk.unlock()
			lk.releaseHeld(rm)
		})}
	}
}

// carriedBack counts carried client c back: the monolith has completed its
// join (its "you"; the join is asynchronous there, and a message passed on
// before it completes would not reach it), or it is gone. The room's held
// messages go on once every client expected is back.
func (s locked) carriedBack(c *client) {
	if !c.carried {
		return
	}
	c.carried = false
	rm := c.rm
	delete(rm.carried, c.id)
	rm.carriedBack++
	if rm.carriedExpect > 0 && rm.carriedBack >= rm.carriedExpect {
		s.releaseHeld(rm)
	}
}

// hold keeps the client message in bp while c's room's clients come back;
// false when the room holds nothing (any more). c.mu is held.
func (c *client) hold(bp *[]byte) bool {
	rm := c.rm
	rm.heldMu.Lock()
	defer rm.heldMu.Unlock()
	if !rm.holding.Load() {
		return false
	}
	rm.held = append(rm.held, heldMsg{c.link, bp})
	if len(rm.held) >= maxHeldMsgs {
		rm.flushHeldLocked(false)
	}
	return true
}

// releaseHeld passes on what rm held, in order, and holds no more: before
// the unload of a room that begins moving too (its clients counted what
// was held as passed on); a room that is gone drops it.
func (s locked) releaseHeld(rm *room) {
	if rm.holdTimer != nil {
		rm.holdTimer.t.Stop()
		rm.holdTimer = nil
	}
	rm.heldMu.Lock()
	defer rm.heldMu.Unlock()
	rm.flushHeldLocked(rm.gone)
}

// flushHeldLocked passes on (or drops) what rm held and ends the hold.
// rm.heldMu is held.
func (rm *room) flushHeldLocked(drop bool) {
	rm.holding.Store(false)
	for _, m := range rm.held {
		if drop {
			*m.bp = (*m.bp)[:0]
			frameBufs.Put(m.bp)
			continue
		}
		m.l.sendPooled(m.bp, rm)
	}
	clear(rm.held)
	rm.held = nil
}
