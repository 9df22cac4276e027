package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/registry"
	"github.com/roomlb/roomlb/sidecar"
)

// ScaleLevel is one row group of figure 9: Nodes simulated nodes holding
// Rooms rooms each.
type ScaleLevel struct {
	Nodes, Rooms int
}

// figScale is figure 9: what the registry costs one Redis as nodes and rooms
// grow. The nodes are simulated: registry clients in this process that
// heartbeat and keep their rooms as a sidecar does (the same calls at the
// sidecar's default intervals), with no monoliths behind them.
func (e *env) figScale(ctx context.Context, f *Figure) error {
	sc := e.scale
	f.Name = "the registry at scale: simulated nodes against one Redis"
	f.Measures = fmt.Sprintf("per level, a fresh Redis state; every node heartbeats every %v as a sidecar does (its default heartbeat TTL %v; rooms are bound to the heartbeat's session and need nothing more); "+
		"one housekeeper; claims by %d concurrent callers; each room's metadata written once; then, once housekeeping's sweep is done, INFO deltas over %v at rest; then one node stops and a router's steal is retried until it takes one of its rooms",
		sidecar.DefaultHeartbeatTTL/3, sidecar.DefaultHeartbeatTTL, scaleClaimers, sc.ScaleWindow)
	srv, err := startRedis(e.dir, "f9-redis")
	if err != nil {
		return err
	}
	defer srv.close()
	// The simulated nodes share one client, as many sidecars share one
	// Redis: a pool large enough that the claimers do not queue on it.
	rdb := redis.NewClient(&redis.Options{Addr: strings.TrimPrefix(srv.url, "redis://"), PoolSize: 2 * scaleClaimers})
	defer rdb.Close()
	// The goal is checked at the level with the most rooms per node: at
	// rest, a node's cost should not grow with its rooms.
	most := 0
	for i, lv := range sc.ScaleLevels {
		if lv.Rooms > sc.ScaleLevels[most].Rooms {
			most = i
		}
	}
	for i, lv := range sc.ScaleLevels {
		perNode, err := e.scaleLevel(ctx, f, rdb, lv)
		if err != nil {
			return fmt.Errorf("%d nodes x %d rooms: %w", lv.Nodes, lv.Rooms, err)
		}
		if i == most {
			f.goal(fmt.Sprintf("Redis commands/s per node at rest, %d rooms per node (%d x %d)", lv.Rooms, lv.Nodes, lv.Rooms), perNode, 100, "1/s", true)
		}
	}
	f.note("commands/s counts what INFO commandstats counts: the commands a script runs as well as the EVALSHA that runs it.")
	f.note("memory per room is the growth of Redis's used_memory over the level's rooms: each room's owner key, epoch counter and metadata hash, and the nodes' keys.")
	f.note("dead node: from the moment a node stops (no release, no deregistration) to the first steal of one of its rooms that succeeds, retried as a router retries it (it waits out the node's heartbeat key, then steals).")
	return nil
}

// scaleClaimers is how many callers claim rooms at once in figure 9.
const scaleClaimers = 64

// scaleLevel measures one level and returns its commands/s per node at
// rest.
func (e *env) scaleLevel(ctx context.Context, f *Figure, rdb *redis.Client, lv ScaleLevel) (float64, error) {
	peer := fmt.Sprintf("%d x %d", lv.Nodes, lv.Rooms)
	total := lv.Nodes * lv.Rooms
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return 0, err
	}
	reg, err := registry.New(rdb, registry.Config{})
	if err != nil {
		return 0, err
	}
	if err := reg.Bootstrap(ctx); err != nil {
		return 0, err
	}
	mem0, err := usedMemory(ctx, rdb)
	if err != nil {
		return 0, err
	}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	nodes := make([]*simNode, lv.Nodes)
	for i := range nodes {
		nodes[i] = &simNode{reg: reg, ver: reg.NewVerifier(), id: fmt.Sprintf("sim-%d", i)}
		if err := nodes[i].beat(ctx); err != nil {
			return 0, err
		}
	}
	var loops sync.WaitGroup
	for _, n := range nodes {
		n.ctx, n.stop = context.WithCancel(lctx)
		loops.Go(func() { n.run() })
	}
	// The fleet's housekeeper (one sidecar runs it at a time).
	loops.Go(func() { reg.NewHousekeeper(0).Run(lctx) })
	defer loops.Wait()
	defer stop()

	// Claims at saturation.
	start := time.Now()
	var next atomic.Int64
	var claimErr error
	var errOnce sync.Once
	var claimers sync.WaitGroup
	for range scaleClaimers {
		claimers.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= total {
					return
				}
				n := nodes[i%lv.Nodes]
				room := n.id + "-" + strconv.Itoa(i/lv.Nodes)
				l, err := reg.Claim(ctx, room, n.id, n.sessionNow())
				if err != nil {
					errOnce.Do(func() { claimErr = err })
					return
				}
				n.add(l)
			}
		})
	}
	claimers.Wait()
	if claimErr != nil {
		return 0, claimErr
	}
	claimed := time.Since(start)
	f.add(peer, "claims/s at saturation", float64(total)/claimed.Seconds(), "1/s")
	e.logf("figure 9: %s: %d rooms claimed in %v", peer, total, claimed.Round(time.Millisecond))

	// Each room's metadata, once, as a loaded room's owner writes it,
	// the nodes side by side.
	var writers sync.WaitGroup
	metaErrs := make([]error, len(nodes))
	sem := make(chan struct{}, 16)
	for i, n := range nodes {
		writers.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			metaErrs[i] = n.writeMeta(ctx)
		})
	}
	writers.Wait()
	if err := errors.Join(metaErrs...); err != nil {
		return 0, err
	}
	sleep(ctx, 2*e.scale.Settle)
	mem1, err := usedMemory(ctx, rdb)
	if err != nil {
		return 0, err
	}
	f.add(peer, "Redis memory per room", float64(mem1-mem0)/float64(total), "B")

	// At rest: once the sweep the nodes' new sessions asked for is done.
	if err := awaitSweep(ctx, rdb); err != nil {
		return 0, err
	}
	cmds0, err := commandStats(ctx, rdb)
	if err != nil {
		return 0, err
	}
	cpu0, err := usedCPU(ctx, rdb)
	if err != nil {
		return 0, err
	}
	t := time.Now()
	sleep(ctx, e.scale.ScaleWindow)
	cmds1, err := commandStats(ctx, rdb)
	if err != nil {
		return 0, err
	}
	cpu1, err := usedCPU(ctx, rdb)
	if err != nil {
		return 0, err
	}
	secs := time.Since(t).Seconds()
	var cmds int64
	for name, c := range cmds1 {
		if name != "info" {
			cmds += c - cmds0[name]
		}
	}
	perNode := float64(cmds) / secs / float64(lv.Nodes)
	f.add(peer, "Redis commands/s at rest", float64(cmds)/secs, "1/s")
	f.add(peer, "Redis commands/s at rest per node", perNode, "1/s")
	f.add(peer, "Redis CPU at rest, of one core", (cpu1-cpu0)/secs*100, "%")
	lost := 0
	for _, n := range nodes {
		if err := n.failed(); err != nil {
			return 0, err
		}
		lost += n.lost
	}
	f.add(peer, "rooms lost (not kept in time)", float64(lost), "rooms")

	// A dead node: how soon a router can take its rooms.
	victim, taker := nodes[0], nodes[len(nodes)-1]
	victim.stop()
	died := time.Now()
	room := victim.leases[0].Room
	for {
		left, err := reg.HeartbeatLeft(ctx, victim.id)
		if err != nil {
			return 0, err
		}
		sleep(ctx, left)
		_, err = reg.Steal(ctx, room, victim.id, taker.id, taker.sessionNow())
		if err == nil {
			break
		}
		if !errors.Is(err, registry.ErrOwnerAlive) {
			return 0, err
		}
		sleep(ctx, 10*time.Millisecond)
	}
	f.add(peer, "dead node to its first room taken", time.Since(died).Seconds()*1000, "ms")
	return perNode, nil
}

// simNode is a node without a monolith: it heartbeats as a sidecar does, at
// the sidecar's default interval, and holds rooms in its session.
type simNode struct {
	reg  *registry.Registry
	ver  *registry.Verifier
	id   string
	ctx  context.Context
	stop context.CancelFunc

	mu      sync.Mutex
	session string
	leases  []registry.Lease
	err     error
	// lost counts the rooms the node could not keep: its heartbeat came
	// too late (Redis too slow), its session ended and with it its rooms.
	lost int
}

func (n *simNode) add(l registry.Lease) {
	n.mu.Lock()
	n.leases = append(n.leases, l)
	n.mu.Unlock()
}

func (n *simNode) beat(ctx context.Context) error {
	n.mu.Lock()
	held := slices.Clone(n.leases)
	n.mu.Unlock()
	rooms := len(held)
	// The check of the rooms' slots' marks goes with the heartbeat, as a
	// sidecar's does (registry.Verifier).
	b, _, err := n.reg.BeatVerified(ctx, registry.Node{
		ID: n.id, Addr: "127.0.0.1:1", Region: "sim", State: registry.StateActive,
		Rooms: rooms, Load: float64(rooms), Version: "bench", Started: time.Now(),
	}, sidecar.DefaultHeartbeatTTL, n.ver, held)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.session != "" && b.Session != n.session {
		// The key ran out between two heartbeats: every room went with
		// the session, as a sidecar's would.
		n.lost += len(n.leases)
		n.leases = nil
	}
	n.session = b.Session
	return nil
}

func (n *simNode) sessionNow() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.session
}

// run heartbeats every third of the heartbeat TTL, as the sidecar does,
// until the node is stopped.
func (n *simNode) run() {
	t := time.NewTicker(sidecar.DefaultHeartbeatTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if err := n.beat(n.ctx); err != nil && n.ctx.Err() == nil {
			n.mu.Lock()
			n.err = errors.Join(n.err, err)
			n.mu.Unlock()
		}
	}
}

// writeMeta writes every room's metadata once, pipelined, as the sidecar's
// metadata loop does.
func (n *simNode) writeMeta(ctx context.Context) error {
	n.mu.Lock()
	leases := n.leases[:len(n.leases):len(n.leases)]
	n.mu.Unlock()
	const batch = 1000
	for start := 0; start < len(leases); start += batch {
		ms := make([]registry.LeaseMeta, 0, batch)
		for _, l := range leases[start:min(start+batch, len(leases))] {
			ms = append(ms, registry.LeaseMeta{Lease: l, Meta: registry.Meta{
				Name: l.Room, Visibility: "public", Users: 3,
				Metadata: []byte(`{"name":"` + l.Room + `","title":"","description":"","isTemporary":false,"visibility":"public","queueMode":"manual","currentSource":null,"users":3}`),
			}})
		}
		errs, err := n.reg.WriteMetas(ctx, ms)
		if err != nil {
			return err
		}
		for _, err := range errs {
			var oe *registry.OwnerError
			switch {
			case errors.As(err, &oe):
				n.mu.Lock()
				n.lost++
				n.mu.Unlock()
			case err != nil:
				return err
			}
		}
	}
	return nil
}

// failed reports the errors the node's loops met.
func (n *simNode) failed() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.err != nil {
		return fmt.Errorf("node %s: %w", n.id, n.err)
	}
	return nil
}

// infoField reads one numeric field of an INFO section.
func infoField(ctx context.Context, rdb *redis.Client, section, field string) (float64, error) {
	s, err := rdb.Info(ctx, section).Result()
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("bench: INFO %s has no %s", section, field)
}

func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	v, err := infoField(ctx, rdb, "memory", "used_memory")
	return int64(v), err
}

// usedCPU is the Redis server's CPU time so far, in seconds.
func usedCPU(ctx context.Context, rdb *redis.Client) (float64, error) {
	sys, err := infoField(ctx, rdb, "cpu", "used_cpu_sys")
	if err != nil {
		return 0, err
	}
	user, err := infoField(ctx, rdb, "cpu", "used_cpu_user")
	return sys + user, err
}

// awaitSweep waits until housekeeping has finished the sweep for owner keys
// of ended sessions that new nodes set off (registry.DropStale): steady
// state is when no SCAN has run for longer than a housekeeping interval. It
// gives up after two minutes.
func awaitSweep(ctx context.Context, rdb *redis.Client) error {
	quiet := registry.DefaultHousekeepingInterval + time.Second
	deadline := time.Now().Add(2 * time.Minute)
	for {
		before, err := commandStats(ctx, rdb)
		if err != nil {
			return err
		}
		sleep(ctx, quiet)
		after, err := commandStats(ctx, rdb)
		if err != nil {
			return err
		}
		if after["scan"] == before["scan"] {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.New("bench: housekeeping still sweeping the room keys after 2 minutes")
		}
	}
}
