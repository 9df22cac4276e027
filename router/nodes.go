package router

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/roomlb/roomlb/registry"
)

// node is a live node as this router last read it, with the client that
// talks to its sidecar.
type node struct {
	registry.Node
	client *fasthttp.HostClient
}

// full reports whether the node takes no more clients.
func (n *node) full() bool { return n.Capacity > 0 && n.Clients >= n.Capacity }

// nodeSet is one reading of the live nodes. It is never modified; a refresh
// replaces it and closes changed.
type nodeSet struct {
	list    []*node
	byID    map[string]*node
	changed chan struct{}
}

func emptyNodeSet() *nodeSet {
	return &nodeSet{byID: map[string]*node{}, changed: make(chan struct{})}
}

// pickKind says which nodes a pick may return.
type pickKind uint8

const (
	// pickRoom: active nodes below capacity, for placing a room.
	pickRoom pickKind = iota
	// pickAny: active nodes, or draining ones when no node is active, for
	// requests about no room.
	pickAny
)

// pick chooses a node by the power of two random choices among the
// eligible ones, preferring region: two are drawn at random and the less
// loaded wins. Nodes in exclude are skipped. It returns nil when no node is
// eligible. It does not allocate.
func (s *nodeSet) pick(kind pickKind, region string, exclude []string) *node {
	if n := s.pickFrom(kind, region, exclude, false); n != nil || kind != pickAny {
		return n
	}
	return s.pickFrom(kind, region, exclude, true)
}

func (s *nodeSet) pickFrom(kind pickKind, region string, exclude []string, draining bool) *node {
	eligible := func(n *node) bool {
		if n.State != registry.StateActive && !(draining && n.State == registry.StateDraining) {
			return false
		}
		if kind == pickRoom && n.full() {
			return false
		}
		return n.Addr != "" && !slices.Contains(exclude, n.ID)
	}
	all, local := 0, 0
	for _, n := range s.list {
		if eligible(n) {
			all++
			if region != "" && n.Region == region {
				local++
			}
		}
	}
	if all == 0 {
		return nil
	}
	inPool := eligible
	count := all
	if local > 0 {
		count = local
		inPool = func(n *node) bool { return eligible(n) && n.Region == region }
	}
	i := rand.IntN(count)
	j := i
	if count > 1 {
		j = rand.IntN(count - 1)
		if j >= i {
			j++
		}
	}
	var a, b *node
	k := 0
	for _, n := range s.list {
		if !inPool(n) {
			continue
		}
		if k == i {
			a = n
		}
		if k == j {
			b = n
		}
		k++
	}
	if b.Load < a.Load || (b.Load == a.Load && b.Clients < a.Clients) {
		return b
	}
	return a
}

// nodes keeps the router's view of the live nodes and one HTTP client per
// sidecar address.
type nodes struct {
	r   *Router
	cur atomic.Pointer[nodeSet]

	mu      sync.Mutex
	clients map[string]*fasthttp.HostClient // by address
	// gone maps the nodes that left the live set to when the router saw
	// them missing first; after a recovery window their relays are ended
	// (a flush of Redis makes every node miss a heartbeat or two).
	gone map[string]time.Time

	kick chan struct{} // asks the refresher to refresh now

	// history samples the nodes' clients and rooms for the dashboard.
	history nodeHistory
}

func newNodes(r *Router) *nodes {
	n := &nodes{r: r, clients: map[string]*fasthttp.HostClient{}, gone: map[string]time.Time{}, kick: make(chan struct{}, 1)}
	n.cur.Store(emptyNodeSet())
	return n
}

func (ns *nodes) load() *nodeSet { return ns.cur.Load() }

// refreshSoon asks for a refresh without waiting for it.
func (ns *nodes) refreshSoon() {
	select {
	case ns.kick <- struct{}{}:
	default:
	}
}

// run refreshes every interval and when kicked, until ctx ends.
func (ns *nodes) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-ns.kick:
		}
		err := ns.refresh(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			ns.r.log.Warn("router: reading nodes; keeping the last list", logErr, err)
			failing = true
		case err == nil && failing:
			ns.r.log.Info("router: reading nodes again")
			failing = false
		}
	}
}

// refresh reads the live nodes and installs them.
func (ns *nodes) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, ns.r.cfg.RedisTimeout)
	defer cancel()
	list, err := ns.r.reg.Nodes(ctx)
	if err != nil {
		return err
	}
	set := &nodeSet{
		list:    make([]*node, 0, len(list)),
		byID:    make(map[string]*node, len(list)),
		changed: make(chan struct{}),
	}
	live := make(map[string]bool, len(list))
	for _, rn := range list {
		n := &node{Node: rn}
		if rn.Addr != "" {
			n.client = ns.client(rn.Addr)
			live[rn.Addr] = true
		}
		set.list = append(set.list, n)
		set.byID[rn.ID] = n
	}
	old := ns.cur.Load()
	now := time.Now()
	ns.history.record(list, now)
	var dead []string
	ns.mu.Lock()
	for addr, c := range ns.clients {
		if !live[addr] {
			c.CloseIdleConnections()
			delete(ns.clients, addr)
		}
	}
	for id := range old.byID {
		if _, ok := set.byID[id]; !ok {
			if _, seen := ns.gone[id]; !seen {
				ns.gone[id] = now
			}
		}
	}
	for id, since := range ns.gone {
		switch {
		case set.byID[id] != nil:
			delete(ns.gone, id)
		case now.Sub(since) >= ns.r.reg.RecoveryWindow():
			dead = append(dead, id)
			delete(ns.gone, id)
		}
	}
	ns.mu.Unlock()
	for _, id := range dead {
		ns.r.endRelaysTo(id)
	}
	old = ns.cur.Swap(set)
	close(old.changed)
	ns.r.metrics.nodes.Set(float64(len(set.list)))
	return nil
}

// lookup finds node id: in the current set, else in Redis (a node that came
// up since the last refresh). It returns registry.ErrNodeGone for a node
// without heartbeat.
func (ns *nodes) lookup(ctx context.Context, id string) (*node, error) {
	if n, ok := ns.load().byID[id]; ok {
		return n, nil
	}
	rn, err := ns.r.reg.Node(ctx, id)
	if err != nil {
		return nil, err
	}
	ns.refreshSoon()
	n := &node{Node: rn}
	if rn.Addr != "" {
		n.client = ns.client(rn.Addr)
	}
	return n, nil
}

// client returns the HTTP client of the sidecar at addr.
func (ns *nodes) client(addr string) *fasthttp.HostClient {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if c, ok := ns.clients[addr]; ok {
		return c
	}
	cfg := ns.r.cfg
	dialer := &net.Dialer{Timeout: cfg.DialTimeout}
	c := &fasthttp.HostClient{
		Addr: addr,
		DialTimeout: func(addr string, timeout time.Duration) (net.Conn, error) {
			c, err := dialer.Dial("tcp", addr)
			if err != nil {
				return nil, &dialError{err: err}
			}
			return newPooledConn(c), nil
		},
		NoDefaultUserAgentHeader: true,
		DisablePathNormalizing:   true,
		StreamResponseBody:       true,
		ReadTimeout:              cfg.UpstreamTimeout,
		WriteTimeout:             cfg.UpstreamTimeout,
		MaxIdleConnDuration:      30 * time.Second,
		MaxConns:                 cfg.MaxConns,
		// One more try when a pooled keep-alive connection turned out
		// closed: for any request when that was seen before it went out
		// (errStaleConn), for idempotent ones also after; never after a
		// timeout.
		MaxIdemponentCallAttempts: 2,
		RetryIfErr: func(req *fasthttp.Request, _ int, err error) (bool, bool) {
			if errors.Is(err, errStaleConn) {
				return false, true
			}
			idempotent := req.Header.IsGet() || req.Header.IsHead() || req.Header.IsPut()
			closed := errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) ||
				errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
			return false, idempotent && closed
		},
		ReadBufferSize:  cfg.MaxHeaderBytes,
		WriteBufferSize: cfg.MaxHeaderBytes,
	}
	ns.clients[addr] = c
	return c
}

func (ns *nodes) closeIdle() {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for _, c := range ns.clients {
		c.CloseIdleConnections()
	}
}

// dialError marks a failure to connect to a sidecar, as opposed to a failure
// after the request was (maybe) sent.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connect to sidecar: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// errStaleConn is a pooled connection to a sidecar found closed by the
// sidecar (or carrying bytes nobody asked for) before a request was written
// to it: the sidecar has not seen the request.
var errStaleConn = errors.New("the sidecar closed a pooled connection")

// pooledConn is a connection of a sidecar's HTTP client. Before the first
// write of a request on a connection that has served one already, it checks
// without blocking that the sidecar has not closed it meanwhile (a sidecar
// that crashed or restarted): a request written to such a connection is
// lost and the router could not tell whether the sidecar read it, so a POST
// could not be sent again; one refused before the write can be.
type pooledConn struct {
	net.Conn
	rc   syscall.RawConn // nil: no check
	used bool            // a response was read: the next write starts a request
}

func newPooledConn(c net.Conn) net.Conn {
	pc := &pooledConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		pc.rc, _ = sc.SyscallConn()
	}
	return pc
}

func (c *pooledConn) Read(p []byte) (int, error) {
	c.used = true
	return c.Conn.Read(p)
}

func (c *pooledConn) Write(p []byte) (int, error) {
	if c.used {
		c.used = false
		if c.rc != nil && peerGone(c.rc) {
			return 0, errStaleConn
		}
	}
	return c.Conn.Write(p)
}

// peerGone reports whether an idle connection has been closed or reset by
// its peer, or has bytes to read, without waiting.
func peerGone(rc syscall.RawConn) bool {
	gone := false
	err := rc.Control(func(fd uintptr) {
		var b [1]byte
		for {
			_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if err == syscall.EINTR {
				continue
			}
			// Nothing to read (EAGAIN) is the one healthy answer; a read of
			// 0 bytes is the peer's FIN.
			gone = err != syscall.EAGAIN
			return
		}
	})
	return gone || err != nil
}
