package sidecar

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
)

var errPollerDead = errors.New("sidecar: client poller stopped")

// The poller waits for idle clients' frames without a goroutine each: a
// joined client with nothing to read is parked in one epoll set, and a
// goroutine reads it once it is readable (client.park, client.readable).
// An idle client then costs its buffers and structures only, not a parked
// goroutine's stack. The set is itself waited for in Go's network poller,
// so the poller holds no thread while it waits. There is one per process,
// started with its first client, for every sidecar in it.

type poller struct {
	file *os.File // the epoll set

	mu      sync.Mutex
	next    uint64
	clients map[uint64]*client // by the id an event carries
	dead    bool               // run stopped: park nothing
}

var (
	pollerOnce sync.Once
	thePoller  *poller
)

// clientPoller returns the process's poller, or nil when there is none.
func clientPoller() *poller {
	pollerOnce.Do(func() {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return
		}
		if err := syscall.SetNonblock(fd, true); err != nil {
			syscall.Close(fd)
			return
		}
		// Non-blocking: the file is waited for in the network poller.
		p := &poller{file: os.NewFile(uintptr(fd), "client-poller"), clients: make(map[uint64]*client)}
		rc, err := p.file.SyscallConn()
		if err == nil {
			// Fails for a file the network poller does not take.
			err = p.file.SetReadDeadline(time.Time{})
		}
		if err != nil {
			p.file.Close()
			return
		}
		thePoller = p
		go p.run(rc)
	})
	return thePoller
}

// pollConn is what the poller needs of a client connection.
type pollConn struct {
	raw syscall.RawConn
	id  uint64 // 0 until first parked
}

// newPollConn returns how the poller watches conn, or nil if it cannot.
func newPollConn(conn any) *pollConn {
	sc, ok := conn.(syscall.Conn)
	if !ok || clientPoller() == nil {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &pollConn{raw: raw}
}

// arm has the poller call c.readable once c's connection is readable (or
// ends). c.mu is held.
func (p *poller) arm(c *client) error {
	pc := c.poll
	op := syscall.EPOLL_CTL_MOD
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		return errPollerDead
	}
	if pc.id == 0 {
		p.next++
		pc.id = p.next
		p.clients[pc.id] = c
		op = syscall.EPOLL_CTL_ADD
	}
	p.mu.Unlock()
	// Level-triggered: a connection readable already is reported at once.
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd:     int32(uint32(pc.id)),
		Pad:    int32(uint32(pc.id >> 32)),
	}
	var err error
	cerr := pc.raw.Control(func(fd uintptr) {
		err = syscall.EpollCtl(int(p.file.Fd()), op, int(fd), &ev)
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// forget drops a client whose connection ended. Closing the connection took
// it out of the epoll set.
func (p *poller) forget(c *client) {
	if c.poll == nil || c.poll.id == 0 {
		return
	}
	p.mu.Lock()
	delete(p.clients, c.poll.id)
	p.mu.Unlock()
}

func (p *poller) run(rc syscall.RawConn) {
	var events [128]syscall.EpollEvent
	for {
		n := 0
		err := rc.Read(func(fd uintptr) bool {
			var err error
			n, err = syscall.EpollWait(int(fd), events[:], 0)
			if err != nil {
				n = 0
			}
			return n > 0
		})
		if err != nil {
			// The set is never closed: this is not expected. The clients
			// parked would wait forever: wake them, and park no more.
			p.mu.Lock()
			p.dead = true
			parked := make([]*client, 0, len(p.clients))
			for _, c := range p.clients {
				parked = append(parked, c)
			}
			p.mu.Unlock()
			for _, c := range parked {
				c.readable()
			}
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			c := p.clients[id]
			p.mu.Unlock()
			if c != nil {
				c.readable()
			}
		}
	}
}
