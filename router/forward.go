package router

import (
	"bufio"
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/registry"
)

// Retry bounds.
const (
	maxMisdirects = 3 // 421s followed per request
	maxAttempts   = 256
	firstBackoff  = 25 * time.Millisecond
	maxBackoff    = 400 * time.Millisecond
	// heartbeatSlack is how long after an unreachable owner's heartbeat
	// should have expired a held request looks again.
	heartbeatSlack = 5 * time.Millisecond
	// placedTTL is how long a placement is reused for concurrent requests
	// of the same room before its claim shows up.
	placedTTL = 2 * time.Second
	// maxRefusalBody bounds the body of a sidecar's non-101 answer to a
	// WebSocket handshake, which the router relays.
	maxRefusalBody = 64 << 10
)

// verdict is what one attempt at a node came to.
type verdict uint8

const (
	served      verdict = iota // the answer for the client is ready
	misdirected                // 421: the node does not own the room
	moving                     // 503 Moving: the room is being handed over
	draining                   // 503 Draining: the node takes no placements
	unreachable                // connecting to the node failed
	failed                     // the node failed after the request went out
	timedOut                   // the node did not answer within UpstreamTimeout
)

// hint is an owner named by a sidecar's 421.
type hint struct {
	node  string
	epoch int64
}

// call is one client request on its way to a node. Calls are pooled.
type call struct {
	r     *Router
	ctx   *fasthttp.RequestCtx
	route route
	key   roomKey
	room  string // key as a string, made on the first slow path
	ws    bool
	s     scratch
	xff   []byte // X-Forwarded-For to send (in s.fwd)
	xfp   []byte // X-Forwarded-Proto to send (in s.fwd)

	deadline   time.Time
	backoff    time.Duration
	held       time.Duration
	exclude    []string
	misdirects int
	hint       hint
	next       *target // a target chosen by a steal, tried without a lookup

	// hs is a WebSocket handshake request up to the router's headers;
	// carried says it carries a client over (see carry.go), from a room
	// that had expect clients (0: unknown).
	hs      []byte
	carried bool
	expect  int
	up      *upgrade // a sidecar's accepted WebSocket handshake
}

var callPool = sync.Pool{New: func() any { return new(call) }}

func (r *Router) getCall(ctx *fasthttp.RequestCtx) *call {
	c := callPool.Get().(*call)
	c.r, c.ctx = r, ctx
	return c
}

func (c *call) release() {
	s := c.s
	s.keys = s.keys[:0]
	excl := c.exclude[:0]
	clear(c.exclude)
	*c = call{s: s, exclude: excl}
	callPool.Put(c)
}

// roomName is the room key as a string (an allocation: slow paths only).
func (c *call) roomName() string {
	if c.room == "" {
		c.room = string(c.key.bytes())
	}
	return c.room
}

// redisCtx bounds one registry operation of the request.
func (c *call) redisCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.r.life, c.r.cfg.RedisTimeout)
}

// forward sends the request (HTTP or WebSocket handshake) to the right
// node, retrying as the sidecars' answers say, and leaves the answer for the
// client in c.ctx (or, for a WebSocket, the accepted handshake in c.up).
func (c *call) forward() outcome {
	c.deadline = time.Now().Add(c.r.cfg.HoldTimeout)
	c.backoff = firstBackoff
	c.xff, c.xfp = c.r.forwarded(c.ctx, &c.s)
	if !c.ws {
		h := &c.ctx.Request.Header
		stripRequest(h, &c.s)
		if len(c.xff) > 0 {
			h.SetBytesV(headerXFF, c.xff)
		}
		h.SetBytesV(headerXFP, c.xfp)
	} else {
		c.s.hs = c.appendHandshake(c.s.hs[:0])
		c.hs = c.s.hs
	}
	return c.attempts()
}

// attempts sends the request to nodes until one serves it, as the
// sidecars' answers say, within c.deadline.
func (c *call) attempts() outcome {
	// Holds end at the deadline, 421s at maxMisdirects, and every other
	// retry excludes a node; maxAttempts only stops a pathological loop.
	for range maxAttempts {
		t, o, ok := c.target()
		if !ok {
			return o
		}
		if t.node == nil {
			continue // the target step held the request or dropped a stale entry
		}
		var v verdict
		var h hint
		if c.ws {
			v, h = c.tryWS(t)
		} else {
			v, h = c.tryHTTP(t)
		}
		switch v {
		case served:
			return outcomeOK
		case failed:
			return c.fail(fasthttp.StatusBadGateway, "the node failed to answer")
		case timedOut:
			return c.fail(fasthttp.StatusGatewayTimeout, "the node did not answer in time")
		case misdirected:
			c.r.metrics.retries[retryMisdirected].Inc()
			c.forget(t)
			c.misdirects++
			switch {
			case h.node != "":
				// The node named the owner: go there (a few times at most:
				// views that disagree are settled by the registry).
				if c.misdirects > maxMisdirects {
					return c.fail(fasthttp.StatusBadGateway, "the room's owner is unclear; try again")
				}
				c.hint = h
			case c.misdirects > 1:
				// The node knows no owner and the registry still names
				// it: its lease is running out. Wait for that.
				if !c.hold() {
					return c.unavailable("the room's owner is unclear; try again")
				}
			}
		case moving:
			c.r.metrics.retries[retryMoving].Inc()
			c.forget(t)
			if !c.hold() {
				return c.unavailable("the room is moving to another node; try again")
			}
		case draining:
			c.r.metrics.retries[retryDraining].Inc()
			c.exclude = append(c.exclude, t.node.ID)
			c.forget(t)
			if c.route == routeRoom && !t.place {
				// The owner is handing its rooms over: wait for the move.
				if !c.hold() {
					return c.unavailable("the room is moving to another node; try again")
				}
			}
		case unreachable:
			c.r.metrics.retries[retryUnreachable].Inc()
			if c.route != routeRoom || t.place {
				c.exclude = append(c.exclude, t.node.ID)
				c.forget(t)
				continue
			}
			// The owner does not take connections: if its heartbeat is
			// gone, take the room over now; if not, it may be restarting.
			next, o, ok := c.steal(t.node.ID)
			if !ok {
				return o
			}
			if next.node != nil {
				c.next = &next
			}
		}
	}
	return c.fail(fasthttp.StatusBadGateway, "too many attempts")
}

// target finds where the next attempt goes. A target without a node means
// the request was held and the caller should look again. ok false means the
// answer (an error) is in c.ctx.
func (c *call) target() (t target, o outcome, ok bool) {
	if c.next != nil {
		t, c.next = *c.next, nil
		return t, 0, true
	}
	if c.route != routeRoom {
		kind := pickAny
		if c.route == routePlace {
			kind = pickRoom
		}
		n, o, ok := c.place(kind)
		return target{node: n, place: c.route == routePlace}, o, ok
	}

	if c.hint.node != "" {
		h := c.hint
		c.hint = hint{}
		ctx, cancel := c.redisCtx()
		n, err := c.r.nodes.lookup(ctx, h.node)
		cancel()
		if err == nil && n.client != nil {
			c.r.cache.set(c.roomName(), h.node, h.epoch)
			return target{node: n, epoch: h.epoch}, 0, true
		}
		// A node we cannot reach by name: ask the registry instead.
	}

	var own owner
	if co, hit := c.r.cache.get(c.key.bytes()); hit {
		c.r.metrics.cacheHits.Inc()
		own = co
	} else {
		c.r.metrics.redisReads.Inc()
		ctx, cancel := c.redisCtx()
		// One round trip: whether the owner's session lives is the node
		// keys' business (below; a live node whose ended session held the
		// room claims it anew).
		ro, err := c.r.cache.lookup(ctx, c.roomName(), c.r.reg.OwnerRecord)
		cancel()
		switch {
		case errors.Is(err, registry.ErrNotOwned):
			n, out, ok := c.place(pickRoom)
			if !ok {
				return target{}, out, false
			}
			c.r.cache.place(c.roomName(), n.ID, placedTTL)
			return target{node: n, place: true}, 0, true
		case err != nil:
			return target{}, c.unavailable("the room registry is unavailable; try again"), false
		}
		own = owner{node: ro.Node, epoch: ro.Epoch}
	}

	if own.placed && slices.Contains(c.exclude, own.node) {
		// Our own placement on a node that refused it.
		c.r.cache.drop(c.roomName(), own.node, 0)
		return target{}, 0, true
	}
	if n, ok := c.r.nodes.load().byID[own.node]; ok && n.client != nil {
		return target{node: n, epoch: own.epoch, place: own.placed}, 0, true
	}
	// The owner is not among the live nodes we know: ask the registry.
	ctx, cancel := c.redisCtx()
	n, err := c.r.nodes.lookup(ctx, own.node)
	cancel()
	switch {
	case err == nil && n.client != nil:
		return target{node: n, epoch: own.epoch, place: own.placed}, 0, true
	case errors.Is(err, registry.ErrNodeGone):
		if own.placed {
			c.r.cache.drop(c.roomName(), own.node, 0)
			return target{}, 0, true
		}
		return c.steal(own.node)
	case err == nil:
		return target{}, c.fail(fasthttp.StatusBadGateway, "the room's node has no address"), false
	default:
		return target{}, c.unavailable("the room registry is unavailable; try again"), false
	}
}

// steal takes the room from victim, an owner that does not answer, if its
// heartbeat is gone, for a freshly placed node. If victim still heartbeats
// it holds the request and returns an empty target.
func (c *call) steal(victim string) (target, outcome, bool) {
	room := c.roomName()
	ctx, cancel := c.redisCtx()
	left, err := c.r.reg.HeartbeatLeft(ctx, victim)
	cancel()
	if err != nil {
		return target{}, c.unavailable("the room registry is unavailable; try again"), false
	}
	if left > 0 {
		// It may be restarting, or dead with its heartbeat still
		// running out: look again after the backoff, but no later than
		// when the heartbeat would have run out (or when the room changes
		// owner).
		if !c.holdFor(min(c.nextBackoff(), left+heartbeatSlack)) {
			return target{}, c.unavailable("the room's node is not answering; try again"), false
		}
		return target{}, 0, true
	}
	c.exclude = append(c.exclude, victim)
	n, o, ok := c.place(pickRoom)
	if !ok {
		return target{}, o, false
	}
	ctx, cancel = c.redisCtx()
	lease, err := c.r.reg.Steal(ctx, room, victim, n.ID, n.Session)
	cancel()
	var oe *registry.OwnerError
	var re *registry.RecoveryError
	switch {
	case err == nil:
		c.r.log.Info("router: took the room from its dead owner", "room", room, "owner", victim, "to", n.ID, "epoch", lease.Epoch)
		c.r.metrics.steals.Inc()
		c.r.cache.set(room, n.ID, lease.Epoch)
		return target{node: n, epoch: lease.Epoch, place: true}, 0, true
	case errors.As(err, &oe) && errors.Is(err, registry.ErrOwnerAlive):
		// The heartbeat came back between the two reads.
		if !c.hold() {
			return target{}, c.unavailable("the room's node is not answering; try again"), false
		}
		return target{}, 0, true
	case errors.As(err, &oe) && oe.Owner.Node != "":
		// Somebody else took it first: go there.
		c.r.cache.set(room, oe.Owner.Node, oe.Owner.Epoch)
		return target{}, 0, true
	case errors.As(err, &re):
		// Redis lost the registry a moment ago: the room's last owner
		// may still take it back. Look again when the window is over.
		if !c.holdFor(min(c.nextBackoff(), re.Left)) {
			return target{}, c.unavailable("the room registry is recovering; try again"), false
		}
		return target{}, 0, true
	default:
		return target{}, c.unavailable("the room registry is unavailable; try again"), false
	}
}

// place chooses a node, waiting (in a bounded queue, until the deadline) for
// one to become available.
func (c *call) place(kind pickKind) (*node, outcome, bool) {
	start := time.Now()
	defer func() { c.r.metrics.placement.Observe(time.Since(start).Seconds()) }()
	waiting := false
	defer func() {
		if waiting {
			c.r.waiting.Add(-1)
			c.held += time.Since(start)
		}
	}()
	for {
		set := c.r.nodes.load()
		if n := set.pick(kind, c.r.cfg.Region, c.exclude); n != nil {
			return n, 0, true
		}
		if !waiting {
			if c.r.waiting.Add(1) > int64(c.r.cfg.MaxWaiting) {
				c.r.waiting.Add(-1)
				return nil, c.unavailable("no node is available; try again"), false
			}
			waiting = true
			c.r.nodes.refreshSoon()
		}
		left := time.Until(c.deadline)
		if left <= 0 {
			return nil, c.unavailable("no node is available; try again"), false
		}
		tm := time.NewTimer(left)
		select {
		case <-set.changed:
			tm.Stop()
		case <-tm.C:
			return nil, c.unavailable("no node is available; try again"), false
		case <-c.r.life.Done():
			tm.Stop()
			return nil, c.unavailable("the router is shutting down"), false
		}
	}
}

// hold waits before the next attempt: the backoff, cut short by an
// ownership change of the room. It reports false when the deadline has
// passed.
func (c *call) hold() bool { return c.holdFor(c.nextBackoff()) }

// nextBackoff returns the current backoff and doubles it, up to maxBackoff.
func (c *call) nextBackoff() time.Duration {
	d := c.backoff
	c.backoff = min(2*c.backoff, maxBackoff)
	return d
}

// holdFor is hold for d instead of the backoff.
func (c *call) holdFor(d time.Duration) bool {
	left := time.Until(c.deadline)
	if left <= 0 {
		return false
	}
	d = min(d, left)
	room := c.roomName()
	wake := c.r.cache.wait(room)
	defer c.r.cache.unwait(room, wake)
	tm := time.NewTimer(d)
	defer tm.Stop()
	start := time.Now()
	defer func() { c.held += time.Since(start) }()
	select {
	case <-wake.ch:
	case <-tm.C:
	case <-c.r.life.Done():
		return false
	}
	return true
}

// forget drops what the cache says about the room if it is t.
func (c *call) forget(t target) {
	if c.route != routeRoom {
		return
	}
	c.r.cache.drop(c.roomName(), t.node.ID, t.epoch)
}

// tryHTTP sends the request to t and judges the answer; a served answer is
// set up in c.ctx, its body streamed from the node.
func (c *call) tryHTTP(t target) (verdict, hint) {
	req := &c.ctx.Request
	c.r.setRouterHeaders(&req.Header, t, &c.s)
	resp := fasthttp.AcquireResponse()
	err := t.node.client.Do(req, resp)
	if errors.Is(err, errStaleConn) {
		// Each attempt met a pooled connection the sidecar had closed (it
		// crashed or restarted), and the request went out on none: the
		// other idle ones are likely dead too. One more try on a fresh
		// dial, whose refusal is judged as for any unreachable node.
		t.node.client.CloseIdleConnections()
		err = t.node.client.Do(req, resp)
	}
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		return upstreamError(err), hint{}
	}
	if v, h := c.judge(resp.StatusCode(), &resp.Header); v != served {
		resp.CloseBodyStream()
		fasthttp.ReleaseResponse(resp)
		return v, h
	}
	dst := &c.ctx.Response
	resp.Header.CopyTo(&dst.Header)
	dst.Header.SetNoDefaultContentType(true)
	stripResponse(&dst.Header, &c.s)
	dst.Header.Set(contract.HeaderNode, t.node.ID)
	if resp.BodyStream() != nil && !c.ctx.IsHead() {
		dst.SetBodyStream(&upstreamBody{resp: resp}, resp.Header.ContentLength())
		return served, hint{}
	}
	if b := resp.Body(); len(b) > 0 {
		dst.SetBody(b)
	}
	resp.CloseBodyStream()
	fasthttp.ReleaseResponse(resp)
	return served, hint{}
}

// upstreamError judges a failed exchange with a node.
func upstreamError(err error) verdict {
	var de *dialError
	var ne net.Error
	switch {
	case errors.As(err, &de), errors.Is(err, errStaleConn):
		return unreachable
	case errors.Is(err, fasthttp.ErrTimeout) || errors.As(err, &ne) && ne.Timeout():
		return timedOut
	}
	return failed
}

// judge reads a node's status: the contract's refusals, or served.
func (c *call) judge(status int, h *fasthttp.ResponseHeader) (verdict, hint) {
	switch status {
	case fasthttp.StatusMisdirectedRequest:
		if c.route == routeRoom {
			return misdirected, parseHint(h.Peek(contract.HeaderOwner))
		}
	case fasthttp.StatusServiceUnavailable:
		if len(h.Peek(contract.HeaderDraining)) > 0 {
			return draining, hint{}
		}
		if c.route == routeRoom && len(h.Peek(contract.HeaderMoving)) > 0 {
			return moving, hint{}
		}
	}
	return served, hint{}
}

// parseHint parses X-Roomlb-Owner ("node:epoch"); a malformed one is no hint.
func parseHint(v []byte) hint {
	s := string(v)
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return hint{}
	}
	e, err := strconv.ParseInt(s[i+1:], 10, 64)
	if err != nil || e <= 0 || registry.ValidNode(s[:i]) != nil {
		return hint{}
	}
	return hint{node: s[:i], epoch: e}
}

// upstreamBody streams a node's response body to the client and releases
// the response when the server is done with it.
type upstreamBody struct{ resp *fasthttp.Response }

func (b *upstreamBody) Read(p []byte) (int, error) { return b.resp.BodyStream().Read(p) }

func (b *upstreamBody) Close() error {
	err := b.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(b.resp)
	return err
}

// fail answers the client with an error of the router's own.
func (c *call) fail(status int, msg string) outcome {
	c.ctx.Response.Reset()
	c.ctx.SetStatusCode(status)
	c.ctx.SetContentType("text/plain; charset=utf-8")
	c.ctx.SetBodyString(msg + "\n")
	switch status {
	case fasthttp.StatusServiceUnavailable:
		c.ctx.Response.Header.Set("Retry-After", "1")
		return outcomeUnavailable
	case fasthttp.StatusForbidden:
		return outcomeForbidden
	case fasthttp.StatusTooManyRequests:
		c.ctx.Response.Header.Set("Retry-After", "5")
		return outcomeLimited
	case fasthttp.StatusBadGateway, fasthttp.StatusGatewayTimeout:
		return outcomeBadGateway
	}
	return outcomeBadRequest
}

func (c *call) unavailable(msg string) outcome {
	return c.fail(fasthttp.StatusServiceUnavailable, msg)
}

// readResponse reads a node's answer to a WebSocket handshake.
func readResponse(br *bufio.Reader, resp *fasthttp.Response) error {
	resp.Header.SetNoDefaultContentType(true)
	return resp.ReadLimitBody(br, maxRefusalBody)
}
