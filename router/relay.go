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

	writeTimeout time.Duration

	stopping atomic.Bool  // Shutdown: close the client with 1012
	ending   atomic.Int64 // when the relay must end (unix ns): set once a direction ended, or by a stop
	zero     [2]atomic.Int64
	wfailed  [2]atomic.Bool // a write of the direction failed (timed out)
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
	rl := &relay{client: client, raw: raw, up: up.conn, idle: r.cfg.WSIdleTimeout, writeTimeout: r.cfg.WriteTimeout,
		upDone: make(chan struct{})}
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
		} else if !rl.stopping.Load() || rl.wfailed[0].Load() {
			rl.abort()
		}
	}()
	eof, _ := rl.pump(1, rl.raw, rl.up)
	switch {
	case rl.wfailed[1].Load():
		// The client does not read (or a stop cut a write short: no
		// close frame after part of a frame).
		rl.abort()
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
	w := relayWriter{rl: rl, dir: dir, c: dst}
	for {
		rl.arm(dir, src, k)
		n, err := io.Copy(w, src)
		moved += n
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) || rl.wfailed[dir].Load() {
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

// relayWriter writes one direction of a relay, each write bounded by the
// write timeout and by the relay's end.
type relayWriter struct {
	rl  *relay
	dir int
	c   net.Conn
}

func (w relayWriter) Write(p []byte) (int, error) {
	d := time.Now().Add(w.rl.writeTimeout)
	w.c.SetWriteDeadline(w.rl.cap(d))
	if e := w.rl.ending.Load(); e != 0 && e < d.UnixNano() {
		// endIn stores the end before it sets deadlines: set again in
		// case it ran between cap and the first set (see arm).
		w.c.SetWriteDeadline(time.Unix(0, e))
	}
	n, err := w.c.Write(p)
	if err != nil {
		w.rl.wfailed[w.dir].Store(true)
	}
	return n, err
}

// cap returns d, or the relay's end if that comes first.
func (rl *relay) cap(d time.Time) time.Time {
	if e := rl.ending.Load(); e != 0 && e < d.UnixNano() {
		return time.Unix(0, e)
	}
	return d
}

// endIn gives the relay d to finish: reads and writes in both directions
// end by then. A later call can only bring the end closer.
func (rl *relay) endIn(d time.Duration) {
	e := time.Now().Add(d).UnixNano()
	for {
		cur := rl.ending.Load()
		if cur != 0 && cur <= e {
			return
		}
		if rl.ending.CompareAndSwap(cur, e) {
			break
		}
	}
	t := time.Unix(0, e)
	rl.client.SetReadDeadline(t)
	if !rl.stopping.Load() {
		rl.up.SetReadDeadline(t)
	}
	rl.raw.SetWriteDeadline(t)
	rl.up.SetWriteDeadline(t)
}

// stop makes the relay close its client with 1012 (Shutdown), within
// closeWait even when a peer does not read.
func (rl *relay) stop() {
	rl.stopping.Store(true)
	rl.up.SetReadDeadline(time.Unix(1, 0))
	rl.endIn(closeWait)
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
