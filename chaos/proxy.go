package chaos

import (
	"net"
	"sync"
	"time"
)

// linkProxy is the TCP link between one sidecar and Redis, owned by the
// run so that it can be made slow (a delay before each chunk it forwards)
// or stalled (nothing forwarded, nothing closed: what a partition looks
// like to both ends until their own timeouts fire).
type linkProxy struct {
	ln       net.Listener
	upstream string

	mu      sync.Mutex
	latency time.Duration
	resume  chan struct{} // nil while flowing; closed when a stall ends
	conns   map[net.Conn]struct{}
	closed  bool

	wg sync.WaitGroup // the accept loop and every pipe
}

// newLinkProxy listens on listen and forwards each connection to upstream.
func newLinkProxy(listen, upstream string) (*linkProxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &linkProxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address sidecars dial instead of Redis.
func (p *linkProxy) Addr() string { return p.ln.Addr().String() }

func (p *linkProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// track adds c to the open connections; false once the proxy is closed.
func (p *linkProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *linkProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// serve connects one client to upstream; a stalled link holds even the dial.
func (p *linkProxy) serve(c net.Conn) {
	defer p.wg.Done()
	defer p.untrack(c)
	defer c.Close()
	if !p.gate() {
		return
	}
	u, err := net.DialTimeout("tcp", p.upstream, 2*time.Second)
	if err != nil {
		return
	}
	if !p.track(u) {
		u.Close()
		return
	}
	defer p.untrack(u)
	defer u.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.pipe(u, c)
	}()
	p.pipe(c, u)
	wg.Wait()
}

// pipe copies src to dst chunk by chunk, through the gate and the delay;
// when either side ends it closes both, so the other pipe ends too.
func (p *linkProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.gate() {
				return
			}
			if d := p.delay(); d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a closed side: either way the link ends
		}
	}
}

// gate waits while the link is stalled; false when the proxy closed.
func (p *linkProxy) gate() bool {
	for {
		p.mu.Lock()
		closed, resume := p.closed, p.resume
		p.mu.Unlock()
		if closed {
			return false
		}
		if resume == nil {
			return true
		}
		<-resume
	}
}

func (p *linkProxy) delay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latency
}

// setLatency delays every chunk by d from now on (0: none).
func (p *linkProxy) setLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// setStalled stops (true) or resumes (false) forwarding; held bytes go on
// when it resumes.
func (p *linkProxy) setStalled(stalled bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case stalled && p.resume == nil:
		p.resume = make(chan struct{})
	case !stalled && p.resume != nil:
		close(p.resume)
		p.resume = nil
	}
}

// close stops accepting, closes every connection and waits for the pipes.
func (p *linkProxy) close() {
	p.mu.Lock()
	p.closed = true
	if p.resume != nil {
		close(p.resume)
		p.resume = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
