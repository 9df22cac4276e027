package router

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"
)

const (
	// linger is how long the other direction of a relay may go on after one
	// direction has ended cleanly (the peers' closing handshake).
	linger = 5 * time.Second
	// closeWait is how long a client closed with 1012 has to answer the
	// close frame before its connection is dropped.
	closeWait = time.Second
)

// closeServiceRestart is a WebSocket close frame (server to client,
// unmasked) with code 1012 "service restart": OpenTogetherTube clients
// reconnect on codes below 4000.
var closeServiceRestart = append([]byte{0x88, 2 + 15, 0x03, 0xf4}, "service restart"...)

// relay copies bytes between a client and a sidecar after a WebSocket
// handshake, without looking at frames.
type relay struct {
	client net.Conn // the hijacked client connection: reads (fasthttp may have buffered bytes)
	raw    net.Conn // the client's own connection: writes, so TCP to TCP copies can splice
	up     net.Conn // the sidecar connection
	idle   time.Duration
	start  time.Time

	stopping atomic.Bool  // Shutdown: close the client with 1012
	ending   atomic.Int64 // once one direction ended: when the other must end (unix ns)
	zero     [2]atomic.Int64
	upDone   chan struct{}
}

// relay runs the relay of a hijacked client connection; fasthttp calls it on
// a goroutine of its own and closes client when it returns.
func (r *Router) relay(client net.Conn, up *upgrade) {
	if !up.timer.Stop() {
		return // the timer closed the sidecar connection: too late
	}
	raw := client
	if u, ok := client.(interface{ UnsafeConn() net.Conn }); ok {
		raw = u.UnsafeConn()
	}
	rl := &relay{client: client, raw: raw, up: up.conn, idle: r.cfg.WSIdleTimeout, upDone: make(chan struct{})}
	defer up.conn.Close()
	defer raw.Close()

	raw.SetWriteDeadline(time.Now().Add(r.cfg.WriteTimeout))
	_, err := raw.Write(up.head)
	if n := up.br.Buffered(); err == nil && n > 0 {
		// The sidecar's first frames came with its 101.
		b, _ := up.br.Peek(n)
		_, err = raw.Write(b)
	}
	raw.SetWriteDeadline(time.Time{})
	if err != nil {
		return
	}
	if !r.track(rl) {
		// Shutdown began while the handshake was under way.
		raw.SetWriteDeadline(time.Now().Add(closeWait))
		raw.Write(closeServiceRestart)
		return
	}
	defer r.untrack(rl)
	r.metrics.wsConns.Inc()
	defer r.metrics.wsConns.Dec()
	rl.run()
}

func (rl *relay) run() {
	rl.start = time.Now()
	go func() {
		defer close(rl.upDone)
		if eof, _ := rl.pump(0, rl.up, rl.client); eof {
			// The client is done sending: tell the sidecar, let it finish.
			closeWrite(rl.up)
			rl.endIn(linger)
		} else if !rl.stopping.Load() {
			rl.abort()
		}
	}()
	eof, _ := rl.pump(1, rl.raw, rl.up)
	switch {
	case rl.stopping.Load():
		rl.raw.SetWriteDeadline(time.Now().Add(closeWait))
		rl.raw.Write(closeServiceRestart)
		rl.up.Close() // the sidecar sees its client leave
		rl.endIn(closeWait)
	case eof:
		closeWrite(rl.raw)
		rl.endIn(linger)
	default:
		rl.abort()
	}
	<-rl.upDone
}

// pump copies src to dst until src ends (eof), an error, the relay goes
// idle, or it is stopped or ending. dir is 0 for client to sidecar, 1 for
// sidecar to client. Idleness is judged in periods of rl.idle counted from
// the start, the same for both directions: a period in which neither
// direction moved a byte makes the relay idle. Deadlines are the only way to
// learn about time inside io.Copy, which splices TCP to TCP on Linux.
func (rl *relay) pump(dir int, dst, src net.Conn) (eof bool, err error) {
	var moved int64
	var k int64
	for {
		rl.arm(dir, src, k)
		n, err := io.Copy(dst, src)
		moved += n
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return false, err
		}
		if dir == 1 && rl.stopping.Load() {
			return false, err
		}
		if e := rl.ending.Load(); e != 0 && time.Now().UnixNano() >= e {
			return false, err
		}
		if rl.idle <= 0 {
			continue
		}
		el := time.Since(rl.start)
		if el < time.Duration(k+1)*rl.idle {
			continue // woken early (a new deadline), same period
		}
		if moved == 0 {
			rl.zero[dir].Store(k + 1)
			if rl.zero[1-dir].Load() == k+1 {
				rl.abort() // both directions silent for a whole period
				return false, err
			}
		}
		moved = 0
		k = int64(el / rl.idle)
	}
}

// arm sets src's read deadline for period k, minding stop and end. Stop and
// end store their flag before they set deadlines themselves, so reading the
// flags after setting closes the race with them.
func (rl *relay) arm(dir int, src net.Conn, k int64) {
	src.SetReadDeadline(rl.deadline(dir, k))
	if rl.stopping.Load() || rl.ending.Load() != 0 {
		src.SetReadDeadline(rl.deadline(dir, k))
	}
}

// deadline is the read deadline of direction dir in period k. A stop ends
// the sidecar-to-client direction at once, so that the close frame follows
// whole chunks of what the sidecar sent.
func (rl *relay) deadline(dir int, k int64) time.Time {
	if dir == 1 && rl.stopping.Load() {
		return time.Unix(1, 0)
	}
	var d time.Time
	if rl.idle > 0 {
		d = rl.start.Add(time.Duration(k+1) * rl.idle)
	}
	if e := rl.ending.Load(); e != 0 {
		if ed := time.Unix(0, e); d.IsZero() || ed.Before(d) {
			d = ed
		}
	}
	return d
}

// endIn gives the relay d to finish (once: the first call wins).
func (rl *relay) endIn(d time.Duration) {
	e := time.Now().Add(d)
	if rl.ending.CompareAndSwap(0, e.UnixNano()) {
		rl.client.SetReadDeadline(e)
		rl.up.SetReadDeadline(e)
	}
}

// stop makes the relay close its client with 1012 (Shutdown).
func (rl *relay) stop() {
	rl.stopping.Store(true)
	rl.up.SetReadDeadline(time.Unix(1, 0))
}

// abort drops both connections.
func (rl *relay) abort() {
	rl.raw.Close()
	rl.up.Close()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// track registers a relay for Shutdown; false once Shutdown has begun.
func (r *Router) track(rl *relay) bool {
	r.relayMu.Lock()
	defer r.relayMu.Unlock()
	if r.relaysClosed {
		return false
	}
	r.relays[rl] = struct{}{}
	r.relayWG.Add(1)
	return true
}

func (r *Router) untrack(rl *relay) {
	r.relayMu.Lock()
	delete(r.relays, rl)
	r.relayMu.Unlock()
	r.relayWG.Done()
}

// closeRelays closes every relayed WebSocket with 1012 and waits for them;
// when ctx ends first it drops the rest.
func (r *Router) closeRelays(ctx context.Context) error {
	r.relayMu.Lock()
	r.relaysClosed = true
	for rl := range r.relays {
		rl.stop()
	}
	r.relayMu.Unlock()
	done := make(chan struct{})
	go func() {
		r.relayWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	r.relayMu.Lock()
	for rl := range r.relays {
		rl.abort()
	}
	r.relayMu.Unlock()
	<-done
	return ctx.Err()
}
