package router

import (
	"bytes"
	"time"

	"github.com/valyala/fasthttp"
)

// Carrying a client over (README "Invisible moves"). A room's owner lets
// the room go with a close frame CloseServiceRestart to each client (a
// drain, a move, a fence, a lost monolith), or its sidecar dies and the
// connection ends without a close frame, or the router sees a newer owner
// (supersede). The relay then does not pass anything on to the client: it
// stops reading the client (what the client sends waits in the socket),
// opens the client's own handshake at the room's next owner as a held join
// would (waiting out the move, stealing from a dead owner, within
// HoldTimeout), with X-Roomlb-Carried: 1, sends the client's auth frame as
// the client sent it, then the part of a frame the old owner got only
// half of (or what a failed write left), and relays on. The client sees a
// pause and the room's join sequence (a full sync, its new id), which the
// OpenTogetherTube web client takes as it takes a first join; the new
// owner's sidecar keeps the join event from the room.
//
// A client that cannot be carried is closed with 1012 and reconnects, as
// it would through a router without carry-overs: when its auth frame was
// not kept (larger than maxAuthFrame, or fragmented), it already sent a
// close, a frame it was sending (or what it sent after a failed write) is
// larger than kept, the sidecar's frame to it was cut, the room has no
// next owner within HoldTimeout, or the router is shutting down. So is a
// client whose room moved maxQuickCarries times running within
// quickCarry each.
const (
	maxQuickCarries = 3
	quickCarry      = time.Second
)

// carryable reports whether the client can go on at another node; the
// client-to-sidecar pump has stopped.
func (rl *relay) carryable() bool {
	if rl.hs == nil || !rl.in.resumable() || !rl.out.atBoundary() || rl.r.draining.Load() || rl.stopping.Load() {
		return false
	}
	if !rl.lastCarry.IsZero() && time.Since(rl.lastCarry) < quickCarry {
		rl.carries++
	} else {
		rl.carries = 0
	}
	return rl.carries < maxQuickCarries
}

// carry opens the relay's WebSocket at the room's next owner and replays
// the client's auth frame and what it had half sent; false when it failed,
// the client then closed with 1012.
func (rl *relay) carry() bool {
	start := time.Now()
	// The messages the old owner did not pass on, then the part of a frame
	// it got only half of.
	var msgs []byte
	if rl.got >= 0 {
		var lost int
		msgs, lost = rl.in.since(rl.got)
		if lost > 0 {
			rl.r.metrics.carryLost.Add(float64(lost))
		}
	}
	replay := rl.in.takeReplay()
	rl.out = outFilter{}
	up, ok := rl.r.redial(rl)
	if ok && rl.stopping.Load() {
		up.conn.Close()
		putUpgradeReader(up.br)
		ok = false
	}
	if !ok {
		rl.r.metrics.carries[carryClosed].Inc()
		rl.client.SetWriteDeadline(time.Now().Add(closeWait))
		rl.client.Write(closeServiceRestart)
		rl.endIn(closeWait)
		// The client's answer to the close goes nowhere: drain it.
		rl.client.SetReadDeadline(time.Now().Add(closeWait))
		var b [256]byte
		for {
			if _, err := rl.client.Read(b[:]); err != nil {
				break
			}
		}
		return false
	}
	if n := up.br.Buffered(); n > 0 {
		b, _ := up.br.Peek(n)
		rl.early = bytes.Clone(b)
	}
	putUpgradeReader(up.br)
	rl.setUp(up.conn)
	rl.r.retarget(rl, up.node, up.epoch)
	rl.moveReq.Store(false)
	rl.upFailed.Store(false)
	rl.switching.Store(false)
	rl.client.SetReadDeadline(time.Time{})
	// An owner newer than the one just reached may have been announced
	// meanwhile.
	rl.r.supersededAlready(rl)
	err := rl.toUp(rl.in.auth)
	if err == nil && len(msgs) > 0 {
		err = rl.in.filter(msgs, rl.toUp)
	}
	if err == nil && len(replay) > 0 {
		err = rl.in.filter(replay, rl.toUp)
	}
	if err != nil {
		// The new owner's connection failed at once: carry again.
		rl.upFailed.Store(true)
	}
	rl.lastCarry = time.Now()
	rl.r.metrics.carries[carryCarried].Inc()
	rl.r.metrics.carryPause.Observe(time.Since(start).Seconds())
	return true
}

// redial opens the relay's WebSocket handshake at its room's owner as a
// held join does, within HoldTimeout.
func (r *Router) redial(rl *relay) (*upgrade, bool) {
	var ctx fasthttp.RequestCtx
	c := r.getCall(&ctx)
	defer c.release()
	c.route = routeRoom
	c.key.set([]byte(rl.room))
	c.ws = true
	c.hs = rl.hs
	c.carried = true
	c.expect = rl.expect
	c.deadline = time.Now().Add(r.cfg.HoldTimeout)
	c.backoff = firstBackoff
	if c.attempts() != outcomeOK || c.up == nil {
		if c.up != nil {
			c.up.conn.Close()
			putUpgradeReader(c.up.br)
		}
		return nil, false
	}
	c.up.conn.SetDeadline(time.Time{})
	return c.up, true
}

// retarget records that rl now relays to node at epoch.
func (r *Router) retarget(rl *relay, node string, epoch int64) {
	r.relayMu.Lock()
	rl.node = node
	r.relayMu.Unlock()
	rl.epoch.Store(epoch)
}
