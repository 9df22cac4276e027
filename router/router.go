package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/roomlb/roomlb/registry"
)

var badRoomMsg = fmt.Sprintf("bad room name: want 1 to %d of A-Z a-z 0-9 _ -", registry.MaxRoomLen)

const badPathMsg = "bad path: it must start with /, and empty segments (//), dot segments (/./, /../), " +
	"backslashes (\\, %5c) and percent-encoded / or unreserved characters (%2e, %2f, %41, ...) are refused"

// Log keys.
const (
	logErr   = "err"
	logAddr  = "addr"
	logRoom  = "room"
	logNode  = "node"
	logEpoch = "epoch"
	logCount = "count"
)

// Router forwards clients' HTTP requests and WebSockets to the sidecars of
// the nodes that own their rooms. Create it with New, run it with Run or
// Serve, stop it with Shutdown.
type Router struct {
	cfg     *settings
	reg     *registry.Registry
	log     *slog.Logger
	metrics *metrics
	cache   *ownerCache
	nodes   *nodes
	list    *roomList
	dialer  *net.Dialer
	server  *fasthttp.Server
	waiting atomic.Int64 // requests waiting for a node

	// life ends when requests must stop waiting: at the end of Shutdown.
	life     context.Context
	stopLife context.CancelFunc

	served   atomic.Bool
	draining atomic.Bool

	wsSlots      atomic.Int64 // WebSockets relayed or being handshaken (reserveWS)
	relayMu      sync.Mutex
	relays       map[*relay]struct{}
	relayRooms   map[string]map[*relay]struct{} // the relays of each room, for supersede
	relaysClosed bool
	relayWG      sync.WaitGroup
	checks       *ownerChecks
	limit        *connLimit   // MaxConns and MaxConnsPerAddr, at accept
	creates      *createLimit // CreatesPerMinute; nil for none

	mu       sync.Mutex // guards the fields Serve sets for shutdown
	ln       net.Listener
	admin    *http.Server
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup
	serveWG  sync.WaitGroup

	shutdownOnce    sync.Once
	shutdownStarted chan struct{}
	shutdownDone    chan struct{}
	shutdownErr     error

	// Test hooks: eventFilter drops the events it returns false for;
	// eventApplied sees every event after the caches have applied it.
	eventFilter  func(registry.Event) bool
	eventApplied func(registry.Event)
}

// New checks cfg and returns a router. It does not contact Redis or listen.
func New(cfg Config) (*Router, error) {
	s, err := cfg.check()
	if err != nil {
		return nil, err
	}
	r := &Router{
		cfg:             s,
		reg:             s.Registry,
		log:             s.Logger,
		cache:           newOwnerCache(s.CacheSize),
		dialer:          &net.Dialer{Timeout: s.DialTimeout},
		relays:          map[*relay]struct{}{},
		relayRooms:      map[string]map[*relay]struct{}{},
		checks:          newOwnerChecks(),
		shutdownStarted: make(chan struct{}),
		shutdownDone:    make(chan struct{}),
	}
	r.life, r.stopLife = context.WithCancel(context.Background())
	r.limit = &connLimit{max: s.MaxConns, perAddr: max(s.MaxConnsPerAddr, 0), byAddr: map[netip.Addr]int{}}
	r.metrics = newMetrics(func() float64 { return float64(r.cache.len()) })
	r.limit.trusted = r.trusted
	r.creates = newCreateLimit(s.CreatesPerMinute)
	r.limit.refused = func(reason string) { r.metrics.refused.WithLabelValues(reason).Inc() }
	r.nodes = newNodes(r)
	r.list = &roomList{r: r}
	r.server = &fasthttp.Server{
		Handler:                      r.handle,
		ErrorHandler:                 r.handleError,
		ConnState:                    r.connState,
		Logger:                       fasthttpLogger{r.log},
		Concurrency:                  s.MaxConns,
		ReadBufferSize:               s.MaxHeaderBytes,
		ReadTimeout:                  s.ReadTimeout,
		WriteTimeout:                 s.WriteTimeout,
		IdleTimeout:                  s.IdleTimeout,
		MaxRequestBodySize:           s.MaxBodyBytes,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		// A relay lets fasthttp's goroutine go (and with it the request's
		// state and buffered reader) once it has started; it closes the
		// connection itself.
		KeepHijackedConns: true,
	}
	return r, nil
}

// Metrics is the router's own Prometheus registry (served on /metrics of
// the admin listener).
func (r *Router) Metrics() *prometheus.Registry { return r.metrics.reg }

// Run listens on Config.Addr and Config.AdminAddr and serves until ctx ends
// or Shutdown is called; see Serve.
func (r *Router) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", r.cfg.Addr)
	if err != nil {
		return fmt.Errorf("router: listen: %w", err)
	}
	var admin net.Listener
	if r.cfg.AdminAddr != "-" {
		admin, err = net.Listen("tcp", r.cfg.AdminAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("router: listen admin: %w", err)
		}
	}
	return r.Serve(ctx, ln, admin)
}

// Serve serves clients on ln and the admin endpoints on admin (nil for
// none) until ctx ends, Shutdown is called, or a listener fails. When ctx
// ends it shuts down gracefully within Config.ShutdownTimeout. It returns
// after every goroutine of the router has ended: nil after a shutdown, else
// the listener's error.
func (r *Router) Serve(ctx context.Context, ln, admin net.Listener) error {
	if !r.served.CompareAndSwap(false, true) {
		return errors.New("router: Serve called twice")
	}
	if err := r.nodes.refresh(ctx); err != nil {
		r.log.Warn("router: reading nodes at start; retrying every refresh", logErr, err)
	}
	errc := make(chan error, 2)
	r.mu.Lock()
	select {
	case <-r.shutdownStarted:
		r.mu.Unlock()
		ln.Close()
		if admin != nil {
			admin.Close()
		}
		return nil
	default:
	}
	ln = &limitListener{Listener: ln, lim: r.limit}
	bg, cancel := context.WithCancel(context.Background())
	r.bgCancel = cancel
	r.bgWG.Add(3)
	go func() {
		defer r.bgWG.Done()
		r.reg.Watch(bg, r.onEvent)
	}()
	go func() {
		defer r.bgWG.Done()
		r.nodes.run(bg, r.cfg.NodeRefresh)
	}()
	go func() {
		defer r.bgWG.Done()
		r.runChecks(bg)
	}()
	r.ln = ln
	r.serveWG.Add(1)
	go func() {
		defer r.serveWG.Done()
		if err := r.server.Serve(ln); err != nil {
			errc <- fmt.Errorf("router: serve %s: %w", ln.Addr(), err)
		}
	}()
	if admin != nil {
		r.admin = &http.Server{Handler: r.adminHandler(), ReadHeaderTimeout: r.cfg.ReadTimeout}
		r.serveWG.Add(1)
		go func() {
			defer r.serveWG.Done()
			if err := r.admin.Serve(admin); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("router: serve admin %s: %w", admin.Addr(), err)
			}
		}()
	}
	r.mu.Unlock()
	r.log.Info("router: serving", logAddr, ln.Addr().String())

	var err error
	select {
	case <-ctx.Done():
	case <-r.shutdownStarted:
	case err = <-errc:
	}
	sctx, scancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
	defer scancel()
	r.Shutdown(sctx)
	<-r.shutdownDone // a Shutdown called by someone else may have a longer context
	r.serveWG.Wait()
	if err != nil {
		return err
	}
	if r.shutdownErr != nil && ctx.Err() != nil {
		return fmt.Errorf("router: shutdown: %w", r.shutdownErr)
	}
	return nil
}

// Shutdown stops the router: /readyz turns false, the listeners close,
// in-flight HTTP requests finish, relayed WebSockets are closed with code
// 1012 (service restart; clients reconnect), background work stops. When
// ctx ends first the rest is dropped and ctx's error returned. Calls after
// the first wait for the first to finish.
func (r *Router) Shutdown(ctx context.Context) error {
	r.shutdownOnce.Do(func() {
		close(r.shutdownStarted)
		go func() {
			r.shutdownErr = r.shutdown(ctx)
			close(r.shutdownDone)
		}()
	})
	select {
	case <-r.shutdownDone:
		return r.shutdownErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Router) shutdown(ctx context.Context) error {
	r.draining.Store(true)
	r.mu.Lock()
	ln, admin, bgCancel := r.ln, r.admin, r.bgCancel
	r.mu.Unlock()
	var httpErr, wsErr error
	if ln != nil {
		// Closed here too, in case fasthttp has not registered it yet.
		ln.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := r.server.ShutdownWithContext(ctx); !errors.Is(err, net.ErrClosed) {
				httpErr = err
			}
		}()
		wsErr = r.closeRelays(ctx)
		<-done
	} else {
		wsErr = r.closeRelays(ctx)
	}
	r.stopLife()
	if bgCancel != nil {
		bgCancel()
	}
	r.bgWG.Wait()
	var adminErr error
	if admin != nil {
		if adminErr = admin.Shutdown(ctx); adminErr != nil {
			admin.Close()
		}
	}
	r.nodes.closeIdle()
	r.log.Info("router: stopped")
	return errors.Join(httpErr, wsErr, adminErr)
}

// handle is the fasthttp handler of client requests.
func (r *Router) handle(ctx *fasthttp.RequestCtx) {
	c := r.getCall(ctx)
	defer c.release()
	c.route = parsePath(ctx.URI().PathOriginal(), &c.key)
	var o outcome
	switch {
	case ctx.IsConnect() || ctx.IsTrace():
		// Not a proxy for tunnels; and TRACE would echo the secret back.
		o = c.fail(fasthttp.StatusMethodNotAllowed, "method not allowed")
		c.route = routeOther
	case c.route == routeStatus:
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString("OK")
	case c.route == routeList:
		o = c.serveList()
	case c.route == routeBadRoom:
		o = c.fail(fasthttp.StatusBadRequest, badRoomMsg)
	case c.route == routeBadPath:
		o = c.fail(fasthttp.StatusBadRequest, badPathMsg)
	case c.route == routeInternal:
		o = c.fail(fasthttp.StatusNotFound, "not found")
	case c.route == routePlace && ctx.IsPost() && !r.creates.allow(r.clientAddr(ctx)):
		o = c.fail(fasthttp.StatusTooManyRequests, "too many rooms created from this address; try again later")
	default:
		c.ws = isUpgrade(&ctx.Request.Header)
		if c.ws {
			var ok bool
			if o, ok = c.checkUpgrade(); !ok {
				break
			}
			if r.draining.Load() {
				o = c.unavailable("the router is shutting down")
				break
			}
			// Reserved before dialing the sidecar; the relay (or the
			// hijack's timer) releases it.
			if !r.reserveWS() {
				o = c.unavailable("too many WebSockets")
				break
			}
		}
		o = c.forward()
		switch {
		case o == outcomeOK && c.up != nil:
			c.hijack()
		case c.ws:
			r.releaseWS()
		}
	}
	if r.draining.Load() && c.up == nil {
		ctx.SetConnectionClose()
	}
	if c.held > 0 {
		r.metrics.hold.Observe(c.held.Seconds())
	}
	r.metrics.requests[c.route][o].Inc()
}

func (c *call) serveList() outcome {
	body, err := c.r.list.get(c.r.life)
	if err != nil {
		return c.unavailable("the room registry is unavailable; try again")
	}
	c.ctx.SetContentType("application/json")
	c.ctx.SetBody(body)
	return outcomeOK
}

// handleError answers requests fasthttp could not read.
func (r *Router) handleError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		ctx.Error("request header too large", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		ctx.Error("request body too large", fasthttp.StatusRequestEntityTooLarge)
	case errors.As(err, &ne) && ne.Timeout():
		ctx.Error("request timeout", fasthttp.StatusRequestTimeout)
	default:
		ctx.Error("malformed request", fasthttp.StatusBadRequest)
	}
	r.metrics.requests[routeOther][outcomeBadRequest].Inc()
}

func (r *Router) connState(_ net.Conn, s fasthttp.ConnState) {
	switch s {
	case fasthttp.StateNew:
		r.metrics.httpConns.Inc()
	case fasthttp.StateHijacked, fasthttp.StateClosed:
		r.metrics.httpConns.Dec()
	}
}

// onEvent applies a registry event to the caches.
func (r *Router) onEvent(e registry.Event) {
	if r.eventFilter != nil && !r.eventFilter(e) {
		return
	}
	if r.eventApplied != nil {
		defer r.eventApplied(e)
	}
	switch e.Kind {
	case registry.EventClaim, registry.EventMove, registry.EventSteal:
		if e.Room != "" && e.Node != "" {
			r.cache.set(e.Room, e.Node, e.Epoch)
			r.supersede(e.Room, e.Node, e.Epoch)
		}
	case registry.EventRelease:
		if e.Room != "" {
			r.cache.release(e.Room, e.Epoch)
		}
	case registry.EventNodeDown, registry.EventNodeDraining:
		r.cache.dropNode(e.Node)
		r.nodes.refreshSoon()
	case registry.EventNodeUp, registry.EventNodeActive:
		r.nodes.refreshSoon()
	case registry.EventResync:
		r.cache.clear()
		r.nodes.refreshSoon()
		// Owners may have changed unseen: read the owner of every room
		// this router relays.
		r.checks.add(r.relayedRooms()...)
	}
}

// fasthttpLogger sends fasthttp's own messages (per-connection errors) to
// the debug level: they are a client's business, not the operator's.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("router: fasthttp: " + fmt.Sprintf(format, args...))
	}
}
