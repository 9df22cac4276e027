package sidecar

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomlb/roomlb/registry"
)

// presence is the node's heartbeat key in Redis: the heartbeats that keep
// it, and its life as this node knows it (hb), which every room is bound
// to (room.valid). mu orders heartbeats and deregistrations: beat and
// deregister hold it while they talk to Redis, and only they store hb and
// generation.
type presence struct {
	cfg *Config
	reg *registry.Registry
	log *slog.Logger
	clock
	// node is what the heartbeat says of the node (locked.nodeInfo); up is
	// false when it should not be in the registry.
	node func() (n registry.Node, up bool)
	// lapsed fences the rooms of lives before life (locked.heartbeatLapsed).
	lapsed func(life uint64)
	// lost has every room re-claimed after Redis lost the registry,
	// serving them until hbUntil at most (locked.registryLost).
	lost func(hbUntil int64)
	// held are the leases the heartbeat checks (locked.heldLeases);
	// verifier checks them; shardLost has those it finds lost re-claimed,
	// serving them until hbUntil at most (locked.shardLost).
	held      func() []registry.Lease
	verifier  *registry.Verifier
	shardLost func(leases []registry.Lease, hbUntil int64)
	// took observes how long each successful heartbeat took.
	took prometheus.Observer

	mu sync.Mutex
	// generation is the registry generation the node last heartbeat in
	// (guarded by mu): a heartbeat that finds another one means Redis lost
	// the registry, and the rooms must be re-claimed.
	generation string
	// hb is the node's heartbeat as far as it is known here: the life of
	// its key in Redis the rooms are bound to, and until when that key
	// surely exists. Stored under mu; never nil.
	hb atomic.Pointer[heartbeat]
	// redisOK is the outcome of the last heartbeat.
	redisOK atomic.Bool
	// deregistered: the drain took the node out of the registry; no
	// heartbeat may put it back.
	deregistered atomic.Bool
}

func newPresence(cfg *Config, log *slog.Logger, c clock) *presence {
	p := &presence{cfg: cfg, reg: cfg.Registry, log: log, clock: c}
	p.hb.Store(&heartbeat{})
	return p
}

// run announces the node every third of the heartbeat TTL while
// the monolith link is up, and takes it out of the registry while it is
// down, so routers place nothing here.
func (p *presence) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	registered := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p.deregistered.Load() {
			return
		}
		start := time.Now()
		hctx, cancel := p.cfg.redisCtx(ctx)
		up, err := p.beat(hctx)
		switch {
		case up:
			registered = err == nil
		case registered:
			err = p.deregister(hctx)
			registered = err != nil
		default:
			err = p.reg.Client().Ping(hctx).Err()
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		p.redisOK.Store(err == nil)
		// Every third of the TTL from one heartbeat's start to the next:
		// over a slow link, a third of the TTL after the answer would let
		// the heartbeat's deadline (0.9 TTL from its start) pass before
		// the next answer, and the node would stop serving for nothing.
		next := max(p.cfg.HeartbeatTTL/3-time.Since(start), p.cfg.HeartbeatTTL/20)
		if err != nil {
			p.log.Warn("sidecar: heartbeat", "err", err)
			// Try again soon: the rooms stop being served when the
			// heartbeat is not refreshed in time.
			next = p.cfg.HeartbeatTTL / 10
		}
		t.Reset(next)
	}
}

// heartbeat is one life of the node's heartbeat key in Redis as this node
// knows it. Values are never changed once stored in presence.hb.
type heartbeat struct {
	// life counts the lives of the key this node has seen end; rooms are
	// bound to the one they were claimed in (room.life).
	life uint64
	// session is the key's session (registry.Node.Session); "" before the
	// first heartbeat and after a deregistration.
	session string
	// until is the lease clock time until which the key surely exists:
	// the last successful heartbeat's send time plus its TTL less a tenth;
	// 0 when there is none. Past it a router may steal this node's rooms,
	// so no room is served then.
	until int64
}

// beat sends one heartbeat when the monolith link is up (up reports
// whether it was) and moves the heartbeat's deadline on when it succeeds.
//
// A heartbeat sent before the deadline may reach Redis after the key
// expired (a slow link): it creates the key again, and in between a router
// may have stolen any of the node's rooms. So the deadline moves on only
// within one life of the key, told by its session: a heartbeat that finds
// another session starts a new life, and the rooms of the old one are
// fenced, never served again. (After a loss of the whole registry the
// generation changes too; then the rooms are re-claimed instead, see
// locked.registryLost.)
func (p *presence) beat(ctx context.Context) (up bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, up := p.node()
	if !up || p.deregistered.Load() {
		return false, nil
	}
	prev := p.hb.Load()
	n.Session = rand.Text()
	sent := time.Now()
	// A shard of a Redis Cluster may lose its data alone, the generation
	// with none: the rooms' slots' marks tell, checked with the heartbeat
	// (in the same round trip on a single Redis). The heartbeat counts
	// only once they were.
	held := p.held()
	res, suspect, err := p.reg.BeatVerified(ctx, n, p.cfg.HeartbeatTTL, p.verifier, held)
	if err != nil {
		return true, err
	}
	lostAll := p.generation != "" && res.Generation != p.generation
	if !lostAll && len(suspect) > 0 {
		lost := make([]registry.Lease, len(suspect))
		for i, j := range suspect {
			lost[i] = held[j]
		}
		p.log.Warn("sidecar: Redis lost room keys of this node: re-claiming them", "rooms", len(lost))
		p.shardLost(lost, prev.until)
	}
	p.took.Observe(time.Since(sent).Seconds())
	next := heartbeat{life: prev.life, session: res.Session, until: prev.until}
	switch {
	case lostAll:
		// Redis lost the registry (a restart without persistence, a
		// flush): the rooms' keys are gone. Until each room is re-claimed
		// it may be served only as long as the last heartbeat of the old
		// generation allows, which other nodes' claims wait out.
		p.log.Warn("sidecar: Redis lost the registry: re-claiming every room", "generation", res.Generation, "recovery", res.Recovery)
		p.lost(prev.until)
	case prev.session != "" && res.Session != prev.session:
		next.life++
		next.until = 0
	}
	p.generation = res.Generation
	next.until = max(next.until, p.at(sent)+int64(p.cfg.HeartbeatTTL-p.cfg.HeartbeatTTL/10))
	// Stored before the old life's rooms are fenced: from here on none of
	// them is valid, nor is a claim that was sent in the old life.
	p.hb.Store(&next)
	if next.life != prev.life {
		p.lapsed(next.life)
	}
	return true, nil
}

// deregister takes the node out of the registry; from then on no room is
// served.
func (p *presence) deregister(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hb.Store(&heartbeat{life: p.hb.Load().life + 1})
	return p.reg.Deregister(ctx, p.cfg.NodeID)
}

// ensure makes sure the heartbeat has half its TTL left before a room is
// claimed: a room claimed in a session whose key is about to run out would
// be free to claim again at once.
func (p *presence) ensure(ctx context.Context) error {
	if p.hb.Load().until-p.now() > int64(p.cfg.HeartbeatTTL/2) {
		return nil
	}
	up, err := p.beat(ctx)
	if err == nil && !up {
		err = errors.New("sidecar: monolith link down")
	}
	return err
}
