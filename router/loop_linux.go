package router

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// The relay loops (README "The hot path"). A relay whose turn runs without
// surprises is relayed by one of a few event loops, as HAProxy relays: its
// two sockets are taken out of Go's network poller (the relay keeps
// duplicates of their descriptors and closes the originals) and put in the
// loop's epoll set, and the loop's goroutine waits in epoll_wait itself,
// then reads what each socket has, follows its frames and writes it on,
// for every socket epoll reported at once. A message then costs a read and
// a write, and an epoll_wait shared with the other relays of the batch: no
// goroutine is woken for it and no thread hands work to another.
//
// Whatever is not the plain case goes back to the relay's goroutines
// (eject): an end or a failure of either socket, a sidecar's close that
// says the room moves, a client message over the bound, a write that
// would wait (the peer does not read fast enough), a stop, a move or an
// abort from another goroutine (kick), idleness. The loop hands the relay
// what it had read and not yet written (handback), and the relay goes on as
// it does without loops (relay.go) for the rest of its turn; a carry-over
// starts the next turn in a loop again.

const (
	// maxLoopEvents is how many sockets one epoll_wait reports at most.
	maxLoopEvents = 256
	// loopSweep is how often a loop lets go of the client messages its
	// relays keep (recentAge) and ends the idle ones (WSIdleTimeout).
	loopSweep = 250 * time.Millisecond
	// wakeToken is the event data of a loop's eventfd.
	wakeToken = ^uint64(0)
)

// loop is one relay loop. Its relays' state (frame filters, descriptors)
// is its own while they are in it: only its goroutine reads or writes
// them.
type loop struct {
	epfd int
	wake int // an eventfd in the set: kicks

	mu    sync.Mutex
	slots []loopSlot
	free  []uint32
	kicks []kickReq
	dead  bool // run stopped: adopt nothing

	// Of the loop's goroutine only.
	buf   []byte
	wfd   int    // where write writes
	pend  []byte // what write could not write without waiting
	write func([]byte) error
}

// loopSlot is a relay in the loop; gen tells a slot's successive relays
// apart in the events still to come for an earlier one.
type loopSlot struct {
	rl  *relay
	gen uint32
}

var (
	loopsOnce sync.Once
	loops     []*loop
	nextLoop  atomic.Uint32
)

// pickLoop returns a relay loop for a new turn, or nil when the process
// has none: they could not be set up, or it runs on one processor
// (GOMAXPROCS=1), which a loop blocked in epoll_wait would leave to the
// runtime to take back every time (see README "The hot path: relay loops").
func pickLoop() *loop {
	loopsOnce.Do(func() {
		for range runtime.GOMAXPROCS(0) - 1 {
			lp, err := newLoop()
			if err != nil {
				return
			}
			loops = append(loops, lp)
			go lp.run()
		}
	})
	if len(loops) == 0 {
		return nil
	}
	// The one with the fewest relays; ties go round.
	start := int(nextLoop.Add(1))
	best := loops[start%len(loops)]
	for i := 1; i < len(loops); i++ {
		if lp := loops[(start+i)%len(loops)]; lp.count() < best.count() {
			best = lp
		}
	}
	return best
}

func newLoop() (*loop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	r, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		syscall.Close(epfd)
		return nil, errno
	}
	lp := &loop{epfd: epfd, wake: int(r), buf: make([]byte, relayBufSize)}
	lp.write = lp.writeOut
	if err := lp.ctl(syscall.EPOLL_CTL_ADD, lp.wake, wakeToken); err != nil {
		syscall.Close(epfd)
		syscall.Close(lp.wake)
		return nil, err
	}
	return lp, nil
}

func (lp *loop) count() int {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	return len(lp.slots) - len(lp.free)
}

func (lp *loop) ctl(op, fd int, data uint64) error {
	// Level-triggered: a socket with bytes left after a read is reported
	// again by the next epoll_wait, after the batch's other sockets.
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP,
		Fd:     int32(uint32(data)),
		Pad:    int32(uint32(data >> 32)),
	}
	return syscall.EpollCtl(lp.epfd, op, fd, &ev)
}

// adopt moves rl's sockets into the loop for the rest of its turn: false
// when they cannot be (rl goes on on its goroutines). rl's goroutines do
// not use its connections meanwhile: the loop hands them back through
// rl.back (see relay.turn).
func (lp *loop) adopt(rl *relay) bool {
	if rl.unsettled() {
		return false
	}
	csock, usock := socketOf(rl.client), rl.up
	if !loopable(csock) || !loopable(usock) {
		return false
	}
	cfd, err := dupSocket(csock)
	if err != nil {
		return false
	}
	ufd, err := dupSocket(usock)
	if err != nil {
		syscall.Close(cfd)
		return false
	}
	lp.mu.Lock()
	if lp.dead {
		lp.mu.Unlock()
		syscall.Close(cfd)
		syscall.Close(ufd)
		return false
	}
	var idx uint32
	if n := len(lp.free); n > 0 {
		idx = lp.free[n-1]
		lp.free = lp.free[:n-1]
	} else {
		idx = uint32(len(lp.slots))
		lp.slots = append(lp.slots, loopSlot{})
	}
	s := &lp.slots[idx]
	s.gen++
	s.rl = rl
	gen := s.gen
	rl.lfd = [2]int{cfd, ufd}
	rl.lslot, rl.lgen = idx, gen
	lp.mu.Unlock()

	// Into the set before anyone can kick: a kick then finds the sockets
	// there to take out. (The loop may serve, even hand back, rl from now
	// on: its goroutines wait for that in turn.)
	data := uint64(gen)<<32 | uint64(idx)<<1
	cerr := lp.ctl(syscall.EPOLL_CTL_ADD, cfd, data)
	uerr := lp.ctl(syscall.EPOLL_CTL_ADD, ufd, data|1)
	// The originals leave Go's network poller with their descriptors; the
	// duplicates keep the sockets open.
	rl.upMu.Lock()
	rl.lp = lp
	csock.Close()
	usock.Close()
	rl.upMu.Unlock()
	if cerr != nil || uerr != nil || rl.unsettled() {
		// Back to the goroutines (which then see why).
		lp.queueKick(kickReq{rl, idx, gen})
	}
	return true
}

// kickReq asks a loop to hand back the relay in slot of generation gen,
// if it is still there: the relay may have been handed back, and put in a
// slot again (of this loop or another), since.
type kickReq struct {
	rl        *relay
	slot, gen uint32
}

// kick has the loop hand rl back to its goroutines: another goroutine
// stops, moves, ends or aborts it. rl.upMu is held and rl.lp is lp, so
// rl's slot is this loop's.
func (lp *loop) kick(rl *relay) { lp.queueKick(kickReq{rl, rl.lslot, rl.lgen}) }

func (lp *loop) queueKick(k kickReq) {
	lp.mu.Lock()
	if lp.dead {
		// Its relays were all handed back when it stopped.
		lp.mu.Unlock()
		return
	}
	lp.kicks = append(lp.kicks, k)
	lp.mu.Unlock()
	one := uint64(1)
	syscall.Write(lp.wake, (*[8]byte)(unsafe.Pointer(&one))[:])
}

func (lp *loop) run() {
	events := make([]syscall.EpollEvent, maxLoopEvents)
	nextSweep := time.Now().Add(loopSweep).UnixNano()
	for {
		wait := int((nextSweep - time.Now().UnixNano()) / int64(time.Millisecond))
		n, err := syscall.EpollWait(lp.epfd, events, max(wait, 0)+1)
		if err != nil && err != syscall.EINTR {
			// Not expected of a set that is never closed. The relays in
			// it go back to their goroutines, and the loop takes none.
			lp.mu.Lock()
			lp.dead = true
			for i, s := range lp.slots {
				if s.rl != nil {
					lp.kicks = append(lp.kicks, kickReq{s.rl, uint32(i), s.gen})
				}
			}
			lp.mu.Unlock()
			lp.ejectKicked()
			return
		}
		now := time.Now().UnixNano()
		for _, ev := range events[:max(n, 0)] {
			data := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if data == wakeToken {
				var b [8]byte
				syscall.Read(lp.wake, b[:])
				lp.ejectKicked()
				continue
			}
			idx, gen := uint32(data)>>1, uint32(data>>32)
			lp.mu.Lock()
			var rl *relay
			if s := lp.slots[idx]; s.gen == gen {
				rl = s.rl
			}
			lp.mu.Unlock()
			if rl != nil {
				lp.serve(rl, int(data&1), now)
			}
		}
		if now >= nextSweep {
			lp.sweep(now)
			nextSweep = now + int64(loopSweep)
		}
	}
}

// serve reads what socket dir of rl has (0 the client's, 1 the sidecar's)
// and passes it on, as pump does.
func (lp *loop) serve(rl *relay, dir int, now int64) {
	n, errno := rawRead(rl.lfd[dir], lp.buf)
	switch {
	case errno == syscall.EAGAIN || errno == syscall.EINTR:
		return
	case errno != 0:
		lp.eject(rl, dir, nil, nil, os.NewSyscallError("read", errno))
		return
	case n == 0:
		lp.eject(rl, dir, nil, nil, io.EOF)
		return
	}
	if rl.idle > 0 {
		rl.last.Store(now)
	}
	b := lp.buf[:n]
	lp.pend = nil
	lp.wfd = rl.lfd[1-dir]
	var err error
	if dir == 0 {
		var tail []byte
		tail, err = rl.in.scan(b, lp.write)
		if err == nil && len(tail) > 0 {
			lp.write(tail)
		}
		if err != nil || lp.pend != nil {
			lp.eject(rl, 0, lp.pend, b, err)
		}
		return
	}
	if rl.out.whole(b) {
		lp.write(b)
	} else {
		err = rl.out.filter(b, lp.write)
	}
	if err != nil || lp.pend != nil {
		lp.eject(rl, 1, lp.pend, nil, err)
	}
}

// writeOut writes b to lp.wfd as far as it can without waiting; the rest,
// and everything after it, goes to lp.pend for the relay's goroutines. It
// never fails: a write that fails leaves its bytes pending too, and the
// goroutine's write of them fails again.
func (lp *loop) writeOut(b []byte) error {
	if lp.pend != nil {
		lp.pend = append(lp.pend, b...)
		return nil
	}
	for len(b) > 0 {
		n, errno := rawWrite(lp.wfd, b)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 || n <= 0 {
			lp.pend = append(make([]byte, 0, len(b)), b...)
			return nil
		}
		b = b[n:]
	}
	return nil
}

// eject takes rl out of the loop and hands it back to its goroutines with
// what direction dir left: bytes passed on but not written (pend), the
// chunk they came from (a client's: what to replay if writing them fails)
// and why its source stopped (err).
func (lp *loop) eject(rl *relay, dir int, pend, chunk []byte, err error) {
	hb := &handback{fd: rl.lfd}
	d := &hb.dir[dir]
	d.pending, d.err = pend, err
	if pend != nil && chunk != nil {
		d.chunk = append([]byte(nil), chunk...)
	}
	lp.pend = nil
	lp.release(rl)
	rl.back <- hb
}

// release takes rl's sockets out of the set and frees its slot.
func (lp *loop) release(rl *relay) {
	syscall.EpollCtl(lp.epfd, syscall.EPOLL_CTL_DEL, rl.lfd[0], nil)
	syscall.EpollCtl(lp.epfd, syscall.EPOLL_CTL_DEL, rl.lfd[1], nil)
	lp.mu.Lock()
	lp.slots[rl.lslot].rl = nil
	lp.free = append(lp.free, rl.lslot)
	lp.mu.Unlock()
}

// ejectKicked hands back the relays kicked that are still in the loop.
func (lp *loop) ejectKicked() {
	lp.mu.Lock()
	kicks := lp.kicks
	lp.kicks = nil
	lp.mu.Unlock()
	for _, k := range kicks {
		lp.mu.Lock()
		in := int(k.slot) < len(lp.slots) && lp.slots[k.slot].rl == k.rl && lp.slots[k.slot].gen == k.gen
		lp.mu.Unlock()
		if in {
			lp.eject(k.rl, 0, nil, nil, nil)
		}
	}
}

// sweep lets go of the client messages kept past recentAge, and hands
// back the relays idle for their WSIdleTimeout (their goroutines end
// them).
func (lp *loop) sweep(now int64) {
	lp.mu.Lock()
	var idle []*relay
	for i := range lp.slots {
		rl := lp.slots[i].rl
		if rl == nil {
			continue
		}
		rl.in.prune(now)
		if rl.idle > 0 && now >= rl.last.Load()+int64(rl.idle) {
			idle = append(idle, rl)
		}
	}
	lp.mu.Unlock()
	for _, rl := range idle {
		lp.eject(rl, 0, nil, nil, nil)
	}
}

// loopable reports whether c's socket can be relayed by a loop: a TCP or
// Unix socket, which net.FileConn can make a connection of again.
func loopable(c any) bool {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}

// dupSocket duplicates c's descriptor.
func dupSocket(c any) (int, error) {
	rc := rawConn(c.(net.Conn))
	if rc == nil {
		return -1, errors.New("router: no descriptor")
	}
	fd := -1
	var errno syscall.Errno
	err := rc.Control(func(s uintptr) {
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		fd, errno = int(r), e
	})
	if err != nil {
		return -1, err
	}
	if errno != 0 {
		return -1, errno
	}
	return fd, nil
}

// fdConn makes a connection of descriptor fd again, in Go's network
// poller; fd is closed.
func fdConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "relay")
	c, err := net.FileConn(f)
	f.Close()
	return c, err
}

// rawRead and rawWrite read and write a non-blocking socket without the
// runtime's system call bookkeeping: they never wait. The write does not
// raise SIGPIPE.
func rawRead(fd int, b []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), e
}

func rawWrite(fd int, b []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), syscall.MSG_NOSIGNAL, 0, 0)
	return int(n), e
}
