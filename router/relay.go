package router

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/roomlb/roomlb/contract"
)

const (
	// linger is how long the other direction of a relay may go on after one
	// direction has ended cleanly (the peers' closing handshake).
	linger = 5 * time.Second
	// closeWait is how long a client closed with 1012 has to answer the
	// close frame before its connection is dropped.
	closeWait = time.Second
	// relayBufSize is the size of the buffers relays copy through. A relay
	// holds one only while it moves bytes, never while it waits.
	relayBufSize = 16 << 10
)

// closeServiceRestart is a WebSocket close frame (server to client,
// unmasked) with code 1012 "service restart": OpenTogetherTube clients
// reconnect on codes below 4000.
var closeServiceRestart = append([]byte{0x88, 2 + 15, contract.CloseServiceRestart >> 8, contract.CloseServiceRestart & 0xff}, "service restart"...)

// closeTooBig is a close frame with code 1009: the client sent a message
// over the router's MaxFrame.
var closeTooBig = append([]byte{0x88, 2 + 15, contract.CloseTooBig >> 8, contract.CloseTooBig & 0xff}, "message too big"...)

var relayBufs = sync.Pool{New: func() any {
	b := make([]byte, relayBufSize)
	return &b
}}

// relay copies bytes between a client and a sidecar after a WebSocket
// handshake, following frame boundaries from their headers only (see
// frames.go). A relay loop copies them while nothing else happens (see
// loop_linux.go); otherwise each direction has a goroutine that reads its
// source into a pooled buffer it holds only while bytes move, never while
// it waits (see readChunk). An idle relay holds its two sockets, this
// struct and one parked goroutine in a loop, two out of one.
type relay struct {
	r      *Router
	client net.Conn // the client's own connection, fasthttp's reader drained
	// up is the sidecar connection; a carry-over replaces it. upMu guards
	// the change against other goroutines, as it guards lp and a relay
	// loop's taking and giving back both connections (the relay's own
	// goroutines read them without the lock).
	upMu sync.Mutex
	up   net.Conn
	// lp is the relay loop that relays the current turn (nil: the relay's
	// goroutines do), under upMu; lfd are the descriptors of the client's
	// and the sidecar's sockets meanwhile, lslot and lgen the relay's
	// place in it, and back where the loop hands the relay back (see
	// loop_linux.go).
	lp    *loop
	lfd   [2]int
	lslot uint32
	lgen  uint32
	back  chan *handback
	// crc and urc wait for client and up to be readable; nil for a
	// connection that is not a syscall.Conn, whose reads then wait holding
	// a buffer.
	crc, urc     syscall.RawConn
	idle         time.Duration
	writeTimeout time.Duration
	// room, node: the owner the relay was routed to (room "" for none);
	// epoch is its epoch, 0 until known for a placed room. See supersede.
	// node changes with a carry-over, under Router.relayMu.
	room  string
	node  string
	epoch atomic.Int64
	// hs is the client's handshake request up to the router's headers, to
	// open it again at the room's next owner (nil for a relay about no
	// room); early is what that owner sent right after its 101. See
	// carry.go.
	hs    []byte
	early []byte
	// moveReq: the owner was superseded; carry the client over.
	// switching: a carry-over stops the client-to-sidecar pump. upFailed:
	// writing to the sidecar failed (the frames not written are kept).
	moveReq   atomic.Bool
	switching atomic.Bool
	upFailed  atomic.Bool
	aborted   atomic.Bool // the relay dropped both connections itself
	carries   int         // carry-overs in quick succession
	lastCarry time.Time   // when the last one ended
	// expect is the number of clients the room had on the owner that let
	// it go, as its close said (0: unknown); got is how many of the
	// client's messages that owner passed on, -1 when it did not say.
	expect int
	got    int

	last     atomic.Int64 // when a byte was last read either way (unix ns), while idle > 0
	stopping atomic.Bool  // Shutdown or a superseded owner: close the client with 1012
	tooBig   atomic.Bool  // the client sent a message over MaxFrame: close it with 1009 instead
	ending   atomic.Int64 // when the relay must end (unix ns): set once a direction ended, or by a stop
	upDone   sync.WaitGroup
	// in follows the client's frames, out the sidecar's (see frames.go);
	// toUp writes to the current sidecar connection, toClient to the
	// client.
	in       frameFilter
	out      outFilter
	toUp     func([]byte) error
	toClient func([]byte) error
	// clientDeadline is the client's write deadline as write set it.
	clientDeadline int64
}

// relay takes over a hijacked client connection: it sends the client the
// sidecar's 101, passes on what either side sent early, and starts the
// relay's goroutines. fasthttp calls it on a goroutine of its own, which it
// lets go of (with the request's state and buffered reader) once relay
// returns; the router keeps hijacked connections (KeepHijackedConns) and
// closes them itself.
func (r *Router) relay(hj net.Conn, up *upgrade) {
	if !up.timer.Stop() {
		hj.Close() // the timer closed the sidecar connection: too late
		return
	}
	client := hj
	if u, ok := hj.(interface{ UnsafeConn() net.Conn }); ok {
		client = u.UnsafeConn()
	}
	rl := &relay{r: r, client: client, up: up.conn, idle: r.cfg.WSIdleTimeout, writeTimeout: r.cfg.WriteTimeout,
		room: up.room, node: up.node, hs: up.hs}
	rl.epoch.Store(up.epoch)
	if r.cfg.MaxFrame > 0 {
		rl.in.max = int64(r.cfg.MaxFrame)
	}
	rl.setUp(up.conn)
	rl.toClient = func(b []byte) error { return rl.write(rl.client, &rl.clientDeadline, b) }
	rl.crc = rawConn(client)
	if rl.idle > 0 {
		rl.last.Store(time.Now().UnixNano())
	}
	err := rl.handOver(hj, up)
	putUpgradeReader(up.br)
	up.br = nil
	if err == errTooBig {
		// A message over the bound right behind the handshake.
		r.metrics.tooBig.Inc()
		client.SetWriteDeadline(time.Now().Add(closeWait))
		client.Write(closeTooBig)
	}
	if err != nil {
		rl.closeBoth()
		r.releaseWS()
		return
	}
	if !r.track(rl) {
		// Shutdown began while the handshake was under way.
		client.SetWriteDeadline(time.Now().Add(closeWait))
		client.Write(closeServiceRestart)
		rl.closeBoth()
		r.releaseWS()
		return
	}
	r.metrics.wsConns.Inc()
	r.supersededAlready(rl)
	go func() {
		rl.run()
		rl.closeBoth()
		r.metrics.wsConns.Dec()
		r.untrack(rl)
		r.releaseWS()
	}()
}

// handOver writes the sidecar's 101, and what the sidecar sent right after
// it, to the client, then the bytes the client sent after its handshake
// that fasthttp's reader already holds to the sidecar. After it the client
// is read from its own connection only.
func (rl *relay) handOver(hj net.Conn, up *upgrade) error {
	rl.client.SetWriteDeadline(time.Now().Add(rl.writeTimeout))
	if _, err := rl.client.Write(up.head); err != nil {
		return err
	}
	if n := up.br.Buffered(); n > 0 {
		// Frames the sidecar sent right after its 101: the first session
		// passes them on, following their boundaries.
		b, _ := up.br.Peek(n)
		rl.early = bytes.Clone(b)
	}
	rl.client.SetWriteDeadline(time.Time{})
	// A read deadline in the past makes hj return what its reader holds,
	// and then the deadline's error without reading the connection.
	rl.client.SetReadDeadline(time.Unix(1, 0))
	defer rl.client.SetReadDeadline(time.Time{})
	bp := relayBufs.Get().(*[]byte)
	defer relayBufs.Put(bp)
	for {
		n, err := hj.Read(*bp)
		if n > 0 {
			if werr := rl.in.filter((*bp)[:n], rl.toUp); werr != nil {
				return werr
			}
		}
		if err != nil {
			return nil // the deadline's error, or the client's end: seen again by the relay
		}
	}
}

func rawConn(c net.Conn) syscall.RawConn {
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return rc
		}
	}
	return nil
}

// run relays until the WebSocket ends, carrying the client over to its
// room's next owner whenever its owner lets the room go (see carry.go).
// Each turn relays between the client and the current sidecar connection
// until one of them ends (turn, end).
func (rl *relay) run() {
	for {
		res, up := rl.turn()
		if !rl.end(res, up) || !rl.carry() {
			return
		}
	}
}

// turn relays between the client and the current sidecar connection, which
// it returns, until one of them ends. It first passes on what the sidecar
// sent right after its 101. A relay loop then relays for as long as
// nothing but bytes to pass on comes; the rest of the turn runs on two
// goroutines, one per direction: the idle relay's wait in pump, called
// from here, so that their stacks stay shallow (the runtime shrinks a
// parked stack only when a quarter of it is in use).
func (rl *relay) turn() (pumpResult, net.Conn) {
	if len(rl.early) > 0 {
		err := rl.out.filter(rl.early, rl.toClient)
		rl.early = nil
		switch {
		case errors.Is(err, errMoved):
			return pumpMoved, rl.up
		case err != nil:
			return pumpWriteFailed, rl.up
		}
	}
	var hb *handback
	if lp := rl.loop(); lp != nil {
		if rl.back == nil {
			rl.back = make(chan *handback, 1)
		}
		if lp.adopt(rl) {
			rl.r.metrics.looped.Inc()
			hb = <-rl.back
			rl.r.metrics.looped.Dec()
			rl.resume(hb)
		}
	}
	var back [2]*backDir
	if hb != nil {
		back = [2]*backDir{&hb.dir[0], &hb.dir[1]}
	}
	up := rl.up
	rl.upDone.Add(1)
	go rl.fromClient(up, back[0])
	return rl.pump(1, rl.client, up, rl.urc, back[1]), up
}

// loop is the relay loop for a new turn, nil for none.
func (rl *relay) loop() *loop {
	if rl.r.cfg.NoRelayLoops {
		return nil
	}
	return pickLoop()
}

// resume takes the relay's sockets back from its loop as connections.
func (rl *relay) resume(hb *handback) {
	c, cerr := fdConn(hb.fd[0])
	u, uerr := fdConn(hb.fd[1])
	rl.upMu.Lock()
	if cerr == nil {
		rl.client = withSocket(rl.client, c)
	}
	if uerr == nil {
		rl.up = u
	}
	rl.lp = nil
	rl.upMu.Unlock()
	rl.crc = rawConn(rl.client)
	rl.bindUp(rl.up)
	rl.clientDeadline = 0
	if cerr != nil || uerr != nil {
		// Out of descriptors: the old, closed connections fail at once.
		rl.abort()
	} else if rl.aborted.Load() {
		rl.closeBoth()
	}
}

// fromClient is a turn's client-to-sidecar pump, on a goroutine of its own.
func (rl *relay) fromClient(up net.Conn, back *backDir) {
	rl.clientEnded(rl.pump(0, up, rl.client, rl.crc, back), up)
	rl.upDone.Done()
}

// clientEnded acts on why the client-to-sidecar pump stopped.
func (rl *relay) clientEnded(res pumpResult, up net.Conn) {
	switch res {
	case pumpEOF:
		// The client is done sending: tell the sidecar, let it finish.
		// The end is set first: the sidecar's own end, which the half
		// close brings, must not look like a crash to carry over from.
		rl.endIn(linger)
		closeWrite(up)
	case pumpUpFailed:
		// The sidecar's end, which the other direction sees too: make
		// sure it looks now, and decides.
		up.SetReadDeadline(time.Unix(1, 0))
	case pumpTooBig:
		rl.refuse()
	case pumpStopped:
	default:
		if !rl.stopping.Load() && !rl.switching.Load() {
			rl.abort()
		}
	}
}

// end finishes a turn whose sidecar-to-client pump stopped with res. It
// reports true when the client is to be carried over to the room's next
// owner: the sidecar said the room continues elsewhere, the router saw its
// owner superseded, or the sidecar's connection ended without a close frame
// (a crash); and the client can be (see carryable). The old sidecar
// connection up is closed then.
func (rl *relay) end(res pumpResult, up net.Conn) (carry bool) {
	// Why the sidecar's connection ended: whether the room continues
	// elsewhere.
	moved := !rl.aborted.Load() && (res == pumpMoved || rl.moveReq.Load() ||
		((res == pumpEOF || res == pumpError || rl.upFailed.Load()) && !rl.out.closed && rl.ending.Load() == 0))
	switch {
	case res == pumpWriteFailed:
		// The client does not read (or a stop cut a write short: no
		// close frame after part of a frame).
		rl.abort()
	case rl.stopping.Load():
		rl.closeClient(up)
	case moved && rl.ending.Load() == 0:
		// Stop reading the client (its frames wait in the socket), then
		// see whether its stream can go on elsewhere.
		rl.switching.Store(true)
		rl.client.SetReadDeadline(time.Unix(1, 0))
		up.SetWriteDeadline(time.Unix(1, 0))
		rl.upDone.Wait()
		if rl.carryable() {
			up.Close()
			rl.expect, rl.got = 0, -1
			if res == pumpMoved {
				if clients, got, ok := contract.ParseMoved(rl.out.heldReason()); ok {
					rl.expect, rl.got = clients, got
				}
			}
			return true
		}
		rl.r.metrics.carries[carryClosed].Inc()
		if res == pumpMoved {
			// Pass the sidecar's close on, as a router without
			// carry-overs does: the client reconnects.
			rl.client.SetWriteDeadline(time.Now().Add(closeWait))
			rl.client.Write(rl.out.held())
			up.Close()
			rl.endIn(closeWait)
		} else {
			rl.closeClient(up)
		}
	case res == pumpEOF:
		closeWrite(rl.client)
		rl.endIn(linger)
	default:
		rl.abort()
	}
	rl.upDone.Wait()
	return false
}

// closeClient closes the client with 1012 (1009 after a message too big)
// after whole frames (or drops it when a frame was cut), and the sidecar
// connection up, which sees its client leave.
func (rl *relay) closeClient(up net.Conn) {
	if !rl.out.atBoundary() {
		rl.abort()
		return
	}
	frame := closeServiceRestart
	if rl.tooBig.Load() {
		frame = closeTooBig
	}
	rl.client.SetWriteDeadline(time.Now().Add(closeWait))
	rl.client.Write(frame)
	up.Close()
	rl.endIn(closeWait)
}

// pumpResult is why a pump stopped.
type pumpResult uint8

const (
	pumpEOF         pumpResult = iota // the source ended cleanly
	pumpError                         // reading the source failed
	pumpStopped                       // a deadline: stop, end, idleness or a carry-over
	pumpWriteFailed                   // writing to the client failed
	pumpUpFailed                      // writing to the sidecar failed
	pumpMoved                         // the sidecar's close frame says the room moves
	pumpTooBig                        // the client sent a message over MaxFrame
	pumpGoOn                          // (step) wait for more
)

// pump copies src to dst until src ends, an error, the relay goes idle,
// it is stopped, ending or switching, or the sidecar says the room moves.
// dir is 0 for client to sidecar, 1 for sidecar to client; rc reads src
// (nil: its Read does); back is what a relay loop left of the direction
// (nil: nothing). A relay is idle when no byte moved either way for
// rl.idle.
func (rl *relay) pump(dir int, dst, src net.Conn, rc syscall.RawConn, back *backDir) pumpResult {
	if back != nil {
		if res := rl.takeBack(dir, src, back); res != pumpGoOn {
			return res
		}
	}
	rl.arm(dir, src)
	for {
		bp, n, err := readChunk(src, rc)
		if n > 0 {
			if perr := rl.copyOnce(dir, (*bp)[:n]); perr != nil {
				err = perr
			}
		}
		if bp != nil {
			relayBufs.Put(bp)
		}
		if err != nil {
			if res := rl.pumpErr(dir, src, err); res != pumpGoOn {
				return res
			}
		}
	}
}

// takeBack finishes what a relay loop left of direction dir: it writes the
// bytes the loop passed on but could not write, and acts on why the loop's
// read stopped; pumpGoOn to go on pumping.
func (rl *relay) takeBack(dir int, src net.Conn, back *backDir) pumpResult {
	err := back.err
	if len(back.pending) > 0 {
		if dir == 0 {
			if rl.toUp(back.pending) != nil && err != errTooBig {
				err = errPumpUp
				rl.in.failed2(back.chunk)
			}
		} else if rl.write(rl.client, &rl.clientDeadline, back.pending) != nil {
			err = errPumpWrite
		}
	}
	if err == nil {
		return pumpGoOn
	}
	return rl.pumpErr(dir, src, err)
}

// readChunk reads what src has into a pooled buffer (returned, to be put
// back, when not nil). Through rc it waits for src to be readable holding
// no buffer: it takes one for each read, and gives it back when the read
// finds nothing, before the network poller parks the goroutine. One read
// system call per chunk when bytes are waiting, as a plain Read makes.
func readChunk(src net.Conn, rc syscall.RawConn) (*[]byte, int, error) {
	if rc == nil {
		bp := relayBufs.Get().(*[]byte)
		n, err := src.Read(*bp)
		return bp, n, err
	}
	var (
		bp   *[]byte
		n    int
		rerr error
	)
	err := rc.Read(func(fd uintptr) bool {
		bp = relayBufs.Get().(*[]byte)
		for {
			n, rerr = syscall.Read(int(fd), *bp)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			relayBufs.Put(bp)
			bp = nil
			return false
		}
		return true
	})
	switch {
	case err != nil:
		return bp, 0, err // a deadline, a closed connection
	case rerr != nil:
		return bp, 0, os.NewSyscallError("read", rerr)
	case n == 0:
		return bp, 0, io.EOF
	}
	return bp, n, nil
}

// The pump's outcomes, as errors from copyOnce.
var (
	errPumpWrite = errors.New("router: writing to the client failed")
	errPumpUp    = errors.New("router: writing to the sidecar failed")
)

// refuse ends the relay of a client that sent a message over MaxFrame:
// the sidecar-to-client direction stops after whole frames and closes the
// client with 1009 (see closeClient), while this one reads and drops what
// the client still sends until the relay ends, so that the close frame
// reaches the client rather than a reset.
func (rl *relay) refuse() {
	rl.r.metrics.tooBig.Inc()
	rl.tooBig.Store(true)
	rl.stop()
	bp := relayBufs.Get().(*[]byte)
	defer relayBufs.Put(bp)
	for {
		if _, err := rl.client.Read(*bp); err != nil {
			return
		}
	}
}

// copyOnce passes b, read from the source, on in direction dir: nil,
// errMoved, errPumpWrite or errPumpUp. (Out of pump, as pumpErr: an idle
// relay's goroutines wait in pump, and the smaller the frames they wait
// and write under, the smaller their stacks: the runtime shrinks a parked
// stack only when less than a quarter of it is in use.)
func (rl *relay) copyOnce(dir int, b []byte) error {
	if rl.idle > 0 {
		rl.last.Store(time.Now().UnixNano())
	}
	if err := rl.pass(dir, b); err != nil {
		return err
	}
	if rl.idle > 0 {
		// A write that took long (a slow reader, within WriteTimeout) was
		// activity too.
		rl.last.Store(time.Now().UnixNano())
	}
	return nil
}

// pass passes b on in direction dir: nil, errMoved, errPumpWrite or
// errPumpUp.
func (rl *relay) pass(dir int, b []byte) error {
	switch {
	case dir == 0:
		tail, err := rl.in.scan(b, rl.toUp)
		if err == nil && len(tail) > 0 && rl.toUp(tail) != nil {
			err = rl.in.failed2(b)
		}
		switch {
		case err == errTooBig:
			return errTooBig
		case err != nil:
			return errPumpUp
		}
	case rl.out.whole(b):
		if rl.write(rl.client, &rl.clientDeadline, b) != nil {
			return errPumpWrite
		}
	default:
		if err := rl.out.filter(b, rl.toClient); err != nil {
			if err == errMoved {
				return errMoved
			}
			return errPumpWrite
		}
	}
	return nil
}

// pumpErr is what pump makes of err: a result, or pumpGoOn after a
// deadline that ends nothing (the read deadline set again).
func (rl *relay) pumpErr(dir int, src net.Conn, err error) pumpResult {
	switch {
	case err == errMoved:
		return pumpMoved
	case err == errPumpWrite:
		return pumpWriteFailed
	case err == errPumpUp:
		rl.upFailed.Store(true)
		return pumpUpFailed
	case err == errTooBig:
		return pumpTooBig
	case errors.Is(err, io.EOF):
		return pumpEOF
	case !errors.Is(err, os.ErrDeadlineExceeded):
		return pumpError
	}
	// A deadline: a stop, the relay's end, idleness, a carry-over.
	now := time.Now().UnixNano()
	if dir == 1 && (rl.stopping.Load() || rl.moveReq.Load() || rl.upFailed.Load()) {
		return pumpStopped
	}
	if dir == 0 && rl.switching.Load() {
		return pumpStopped
	}
	if dir == 0 {
		rl.in.prune(now)
	}
	if e := rl.ending.Load(); e != 0 && now >= e {
		return pumpStopped
	}
	if rl.idle > 0 && now >= rl.last.Load()+int64(rl.idle) {
		rl.abort() // both directions silent for rl.idle
		return pumpStopped
	}
	rl.arm(dir, src)
	return pumpGoOn
}

// write writes b to dst within the write timeout and the relay's end.
// *set is the write deadline set on dst (unix ns; 0 for none yet): it is
// moved on only once less than 7/8 of the timeout is left, so a write is
// bounded by 7/8 to all of the timeout without a timer update for each.
// Whoever sets dst's write deadline otherwise ends the relay (endIn, which
// this then follows) or writes its last bytes itself.
func (rl *relay) write(dst net.Conn, set *int64, b []byte) error {
	now := time.Now()
	if rl.ending.Load() != 0 || *set-now.UnixNano() < int64(rl.writeTimeout)/8*7 {
		d := now.Add(rl.writeTimeout)
		dst.SetWriteDeadline(rl.cap(d))
		*set = d.UnixNano()
		if e := rl.ending.Load(); e != 0 && e < d.UnixNano() {
			// endIn stores the end before it sets deadlines: set again in
			// case it ran between cap and the first set (see arm).
			dst.SetWriteDeadline(time.Unix(0, e))
			*set = e
		}
	}
	_, err := dst.Write(b)
	return err
}

// arm sets src's read deadline, minding stop and end. Stop and end store
// their flag before they set deadlines themselves, so reading the flags
// after setting closes the race with them.
func (rl *relay) arm(dir int, src net.Conn) {
	src.SetReadDeadline(rl.deadline(dir))
	if rl.stopping.Load() || rl.moveReq.Load() || rl.switching.Load() || rl.upFailed.Load() || rl.ending.Load() != 0 {
		src.SetReadDeadline(rl.deadline(dir))
	}
}

// deadline is the read deadline of direction dir. A stop ends the
// sidecar-to-client direction at once, so that the close frame follows
// whole chunks of what the sidecar sent.
func (rl *relay) deadline(dir int) time.Time {
	if dir == 1 && (rl.stopping.Load() || rl.moveReq.Load() || rl.upFailed.Load()) {
		return time.Unix(1, 0)
	}
	if dir == 0 && rl.switching.Load() {
		return time.Unix(1, 0)
	}
	var d int64
	if rl.idle > 0 {
		d = rl.last.Load() + int64(rl.idle)
	}
	if dir == 0 {
		// The client's recent messages are let go when they expire, so
		// an idle relay keeps none.
		if x := rl.in.recentExpiry(); x != 0 && (d == 0 || x < d) {
			d = x
		}
	}
	if e := rl.ending.Load(); e != 0 && (d == 0 || e < d) {
		d = e
	}
	if d == 0 {
		return time.Time{}
	}
	return time.Unix(0, d)
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
	rl.onConns(func() {
		rl.client.SetReadDeadline(t)
		if !rl.stopping.Load() {
			rl.up.SetReadDeadline(t)
		}
		rl.client.SetWriteDeadline(t)
		rl.up.SetWriteDeadline(t)
	})
}

// stop makes the relay close its client with 1012 (Shutdown, or its owner
// was superseded) and the sidecar connection, within closeWait even when a
// peer does not read. Calling it again, or after the relay ended, does no
// harm.
func (rl *relay) stop() {
	rl.stopping.Store(true)
	rl.stopUp()
	rl.endIn(closeWait)
}

// move makes the relay carry its client over to the room's next owner
// (its owner was superseded), or close it with 1012 when it cannot.
func (rl *relay) move() {
	rl.moveReq.Store(true)
	rl.stopUp()
}

// stopUp ends the wait for what the sidecar sends: its pump or the relay's
// loop then sees why.
func (rl *relay) stopUp() {
	rl.onConns(func() { rl.up.SetReadDeadline(time.Unix(1, 0)) })
}

// onConns runs f, which acts on the relay's connections for another
// goroutine, under upMu; when a relay loop has the relay's sockets, it
// has the loop hand them back instead, and the relay's goroutines then
// see the flags that f would have acted on.
func (rl *relay) onConns(f func()) {
	rl.upMu.Lock()
	defer rl.upMu.Unlock()
	if rl.lp != nil {
		rl.lp.kick(rl)
		return
	}
	f()
}

// abort drops both connections.
func (rl *relay) abort() {
	rl.aborted.Store(true)
	rl.closeBoth()
}

// closeBoth closes both connections; in a loop, the relay is handed back
// and closes them then (resume).
func (rl *relay) closeBoth() {
	rl.onConns(func() {
		rl.client.Close()
		rl.up.Close()
	})
}

// unsettled reports whether anything but relaying is asked of the relay:
// a stop, a move, an end, an abort, a failed sidecar.
func (rl *relay) unsettled() bool {
	return rl.stopping.Load() || rl.moveReq.Load() || rl.switching.Load() || rl.upFailed.Load() ||
		rl.aborted.Load() || rl.ending.Load() != 0
}

// setUp makes c the sidecar connection.
func (rl *relay) setUp(c net.Conn) {
	rl.upMu.Lock()
	rl.up = c
	rl.upMu.Unlock()
	rl.bindUp(c)
}

// bindUp has the relay's own goroutines write to and read from c.
func (rl *relay) bindUp(c net.Conn) {
	rl.urc = rawConn(c)
	var deadline int64
	rl.toUp = func(b []byte) error { return rl.write(c, &deadline, b) }
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// reserveWS takes one of the MaxConns WebSocket slots, for a handshake
// and then its relay; false when none is left.
func (r *Router) reserveWS() bool {
	if r.wsSlots.Add(1) > int64(r.cfg.MaxConns) {
		r.wsSlots.Add(-1)
		return false
	}
	return true
}

func (r *Router) releaseWS() { r.wsSlots.Add(-1) }

// relayCount is the WebSockets relayed or being handshaken.
func (r *Router) relayCount() int { return int(r.wsSlots.Load()) }

// track registers a relay for Shutdown, and by its room for supersede;
// false once Shutdown has begun.
func (r *Router) track(rl *relay) bool {
	r.relayMu.Lock()
	defer r.relayMu.Unlock()
	if r.relaysClosed {
		return false
	}
	r.relays[rl] = struct{}{}
	if rl.room != "" {
		set := r.relayRooms[rl.room]
		if set == nil {
			set = map[*relay]struct{}{}
			r.relayRooms[rl.room] = set
		}
		set[rl] = struct{}{}
	}
	r.relayWG.Add(1)
	return true
}

func (r *Router) untrack(rl *relay) {
	r.relayMu.Lock()
	delete(r.relays, rl)
	if set := r.relayRooms[rl.room]; set != nil {
		delete(set, rl)
		if len(set) == 0 {
			delete(r.relayRooms, rl.room)
		}
	}
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
