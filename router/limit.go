package router

import (
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// connLimit is the router's one bound on client connections: HTTP and
// WebSocket alike (a relayed WebSocket is the connection it was upgraded
// on), in all and per client address. A connection over a bound is
// answered 503 and closed at once, before any request is read.
//
// The per-address bound counts the peer's address; a trusted proxy
// (Config.TrustedProxies) carries many clients and is not bound by it.
type connLimit struct {
	max, perAddr int
	trusted      func(netip.Addr) bool
	refused      func(reason string)

	mu     sync.Mutex
	n      int
	byAddr map[netip.Addr]int
}

// busy is what a connection over a bound gets.
const busy = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\n" +
	"Content-Length: 30\r\nConnection: close\r\n\r\ntoo many connections; retry\r\n"

// limitListener applies a connLimit to the connections it accepts.
type limitListener struct {
	net.Listener
	lim *connLimit
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := peerAddr(c.RemoteAddr())
		if reason := l.lim.take(addr); reason != "" {
			l.lim.refused(reason)
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			c.Write([]byte(busy))
			c.Close()
			continue
		}
		return &limitedConn{Conn: c, lim: l.lim, addr: addr}, nil
	}
}

// take counts a new connection from addr, or says which bound it is over.
func (l *connLimit) take(addr netip.Addr) (over string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n >= l.max {
		return "max_conns"
	}
	perAddr := l.perAddr > 0 && addr.IsValid() && !l.trusted(addr)
	if perAddr && l.byAddr[addr] >= l.perAddr {
		return "max_conns_per_addr"
	}
	l.n++
	if perAddr {
		l.byAddr[addr]++
	}
	return ""
}

// done forgets a connection of addr.
func (l *connLimit) done(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n--
	if n, ok := l.byAddr[addr]; ok {
		if n <= 1 {
			delete(l.byAddr, addr)
		} else {
			l.byAddr[addr] = n - 1
		}
	}
}

// count is how many connections are open.
func (l *connLimit) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// limitedConn gives its slot back when it is closed, whoever closes it
// (fasthttp, or a relay that took it over).
type limitedConn struct {
	net.Conn
	lim  *connLimit
	addr netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.lim.done(c.addr) })
	return err
}

// CloseWrite half-closes the socket, as *net.TCPConn does: a relay whose
// sidecar finished sending lets its client finish too.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// SyscallConn exposes the socket, as *net.TCPConn does: relays wait for
// readability in the network poller.
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, syscall.EINVAL
	}
	return sc.SyscallConn()
}
