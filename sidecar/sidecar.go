package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"

	"github.com/roomlb/roomlb/registry"
)

// Version is reported in the node's heartbeat.
var Version = "dev"

// Sidecar serves one monolith. New builds it, Run runs it until its context
// ends (which drains it) or Drain finishes. It is the wiring of the parts
// the package doc lists, and the background loops that tie them to Redis.
type Sidecar struct {
	cfg     Config
	reg     *registry.Registry
	log     *slog.Logger
	metrics *metrics
	clock   // the lease clock
	started time.Time

	ln     net.Listener
	server *fasthttp.Server

	table
	// drained is closed when a drain has finished.
	drained   chan struct{}
	drainOnce sync.Once
	// killed is closed by Kill: stop at once, as if the process died.
	killed   chan struct{}
	killOnce sync.Once
	// presence keeps the node's heartbeat key in Redis.
	presence *presence
	// reclaimNow asks reclaimLoop to re-claim the stale rooms at once.
	reclaimNow chan struct{}
	// stopped is closed when Run stops its loops: background retries end.
	stopped chan struct{}
	// serves is the serve log; nil when Config.ServeLog is.
	serves *serveLog
	// monolithRedis is the monolith's Redis (Config.MonolithRedis).
	monolithRedis redis.UniversalClient

	wg sync.WaitGroup // every goroutine the sidecar starts
	// conns tracks hijacked client connections; Close closes them.
	conns sync.WaitGroup
}

// New checks cfg and returns a sidecar. It binds the ingress listener, so
// Addr is known before Run.
func New(cfg Config) (*Sidecar, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("sidecar: listen: %w", err)
	}
	if cfg.Advertise == "" {
		cfg.Advertise = ln.Addr().String()
	}
	s := &Sidecar{
		cfg:     cfg,
		reg:     cfg.Registry,
		log:     cfg.Logger.With("node", cfg.NodeID),
		metrics: newMetrics(),
		clock:   clock{base: time.Now()},
		started: time.Now(),
		ln:      ln,
		table: table{
			rooms:       make(map[string]*room),
			clients:     make(map[string]*client),
			unloading:   make(map[string]bool),
			retired:     make(map[string]*retiredLease),
			orphanLoads: make(map[string]*room),
		},
		stopped:    make(chan struct{}),
		drained:    make(chan struct{}),
		killed:     make(chan struct{}),
		reclaimNow: make(chan struct{}, 1),
	}
	s.presence = newPresence(&s.cfg, s.log, s.clock)
	s.presence.took = s.metrics.heartbeatSeconds
	s.presence.node = func() (registry.Node, bool) {
		lk := s.lock()
		defer lk.unlock()
		return lk.nodeInfo()
	}
	s.presence.lapsed = func(life uint64) {
		lk := s.lock()
		defer lk.unlock()
		lk.heartbeatLapsed(life)
	}
	s.presence.lost = func(hbUntil int64) {
		lk := s.lock()
		defer lk.unlock()
		lk.registryLost(hbUntil)
	}
	s.presence.verifier = cfg.Registry.NewVerifier()
	s.presence.held = func() []registry.Lease {
		lk := s.lock()
		defer lk.unlock()
		return lk.heldLeases()
	}
	s.presence.shardLost = func(leases []registry.Lease, hbUntil int64) {
		lk := s.lock()
		defer lk.unlock()
		lk.shardLost(leases, hbUntil)
	}
	s.monolithRedis = cfg.MonolithRedis
	if s.monolithRedis == nil {
		s.monolithRedis = cfg.Registry.Client()
	}
	if cfg.ServeLog != nil {
		s.serves = &serveLog{w: cfg.ServeLog}
	}
	s.server = ingress{s}.newServer()
	return s, nil
}

// Gatherer is the sidecar's metrics, as its /metrics serves them.
func (s *Sidecar) Gatherer() prometheus.Gatherer { return s.metrics.reg }

// Addr is the ingress address.
func (s *Sidecar) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends or a drain (Drain, the admin endpoint) has
// finished. When ctx ends first it drains, bounded by DrainTimeout. It
// returns nil after a complete drain.
func (s *Sidecar) Run(ctx context.Context) error {
	loops, stop := context.WithCancel(context.Background())
	defer stop()
	serveErr := make(chan error, 1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		serveErr <- s.server.Serve(s.ln)
	}()
	for _, loop := range []func(context.Context){s.linkLoop, s.reclaimLoop, s.fenceLoop, s.presence.run, s.handoffLoop, s.announceLoop, s.housekeepingLoop, s.metaLoop, func(ctx context.Context) { s.serves.run(ctx, s.flushServeLog) }} {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			loop(loops)
		}()
	}
	var err error
	select {
	case <-ctx.Done():
		dctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
		err = s.Drain(dctx)
		cancel()
	case <-s.drained:
	case <-s.killed:
	case err = <-serveErr:
		err = fmt.Errorf("sidecar: serve: %w", err)
	}
	stop()
	close(s.stopped)
	s.shutdown()
	s.wg.Wait()
	s.flushServeLog()
	return err
}

// Kill stops the sidecar at once, as a crash would (for fault tests): no
// drain, no release, no deregistration; its leases and heartbeat run out in
// Redis. Run returns nil.
func (s *Sidecar) Kill() {
	s.killOnce.Do(func() { close(s.killed) })
}

func (s *Sidecar) isKilled() bool {
	select {
	case <-s.killed:
		return true
	default:
		return false
	}
}

// shutdown stops the ingress, closes every client and the link.
func (s *Sidecar) shutdown() {
	s.server.Shutdown()
	killed := s.isKilled()
	lk := s.lock()
	for _, c := range s.clients {
		if killed {
			c.abort() // a crash says goodbye to nobody
		} else {
			c.closeMoved("node shutting down", len(c.rm.clients)+len(c.rm.waiting))
		}
	}
	l := s.link
	lk.unlock()
	if l != nil {
		l.close()
	}
	done := make(chan struct{})
	go func() { s.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		s.log.Warn("sidecar: client connections still open after shutdown")
	}
}

// isRedisDown tells errors of an unreachable Redis from refusals.
func isRedisDown(err error) bool {
	var oe *registry.OwnerError
	return err != nil && !errors.As(err, &oe) && !errors.Is(err, redis.Nil)
}
