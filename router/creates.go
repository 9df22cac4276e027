package router

import (
	"bytes"
	"net/netip"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/time/rate"
)

// createLimit bounds how fast one client address may create rooms
// (POST /api/room/generate and /api/room/create): each new room is a
// claim in Redis and a room in a monolith's memory until it is reaped.
type createLimit struct {
	every time.Duration // one more room per every
	burst int

	mu sync.Mutex
	by map[netip.Addr]*rate.Limiter
}

// maxCreateAddrs bounds the addresses createLimit remembers: past it, the
// addresses whose bucket is full again (idle ones) are forgotten.
const maxCreateAddrs = 10_000

func newCreateLimit(perMinute int) *createLimit {
	if perMinute <= 0 {
		return nil
	}
	return &createLimit{every: time.Minute / time.Duration(perMinute), burst: max(perMinute/2, 1), by: map[netip.Addr]*rate.Limiter{}}
}

// allow takes one creation of addr's budget; false when it has none left.
func (l *createLimit) allow(addr netip.Addr) bool {
	if l == nil || !addr.IsValid() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.by[addr]
	if lim == nil {
		if len(l.by) >= maxCreateAddrs {
			for a, x := range l.by {
				if x.Tokens() >= float64(l.burst) {
					delete(l.by, a)
				}
			}
		}
		lim = rate.NewLimiter(rate.Every(l.every), l.burst)
		l.by[addr] = lim
	}
	return lim.Allow()
}

// clientAddr is the address of the client a request comes from: the peer,
// or behind trusted proxies the last address in X-Forwarded-For that is
// not one of them.
func (r *Router) clientAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	peer := peerAddr(ctx.RemoteAddr())
	if !peer.IsValid() || !r.trusted(peer) {
		return peer
	}
	client := peer
	for _, v := range ctx.Request.Header.PeekAll(headerXFF) {
		for _, part := range bytes.Split(v, []byte(",")) {
			a, err := netip.ParseAddr(string(bytes.TrimSpace(part)))
			if err != nil {
				continue
			}
			a = a.Unmap()
			if !r.trusted(a) {
				client = a
			}
		}
	}
	return client
}
