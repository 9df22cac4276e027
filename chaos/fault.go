package chaos

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// nemesis is how one fault is injected and healed.
type nemesis struct {
	target string
	inject func(ctx context.Context) error
	// hold is the least time between inject and heal; with untilServed the
	// hold also lasts until every client is served again (or the bound
	// passes), so that a kill tests the failover, not the restart; wait,
	// when set, is waited for before the heal (a drain), also when the run
	// is cancelled: it owns goroutines inject started.
	hold        time.Duration
	untilServed bool
	wait        func() []string // returns notes
	// found, when set, returns the violations the fault itself observed
	// (after wait).
	found func() []Violation
	heal  func(ctx context.Context) error
	// fromHeal: no node can work around this fault (a paused router holds
	// its clients' sockets; with Redis paused nothing can be placed), so
	// the service bound counts from its end.
	fromHeal bool
}

// drainLimit bounds a sidecar's drain in a drain storm: its own
// --drain-timeout (30 s) and a margin.
const drainLimit = 40 * time.Second

// nemesis builds the fault of kind for the cluster as it is now.
func (p *phaseRun) nemesis(kind string) nemesis {
	hb := p.hb
	cl := p.cl
	busiest := func() *node { return cl.node(p.w.busiestNodes(cl.nodeIDs(), p.rng)[0]) }
	signal := func(c *component, sig syscall.Signal) func(context.Context) error {
		return func(context.Context) error { return c.signal(sig) }
	}
	kill := func(c *component) func(context.Context) error {
		return func(context.Context) error { c.kill(); return nil }
	}
	switch kind {
	case SidecarKill:
		n := busiest()
		return nemesis{target: n.id, inject: kill(n.sidecar), hold: hb, untilServed: true, heal: n.sidecar.launch}
	case SidecarPause:
		n := busiest()
		return nemesis{target: n.id, inject: signal(n.sidecar, syscall.SIGSTOP), hold: 2 * hb, untilServed: true,
			heal: signal(n.sidecar, syscall.SIGCONT)}
	case MonolithKill:
		n := busiest()
		return nemesis{target: n.id, inject: kill(n.monolith), hold: hb, untilServed: true, heal: n.monolith.launch}
	case MonolithPause:
		n := busiest()
		return nemesis{target: n.id, inject: signal(n.monolith, syscall.SIGSTOP), hold: hb * 3 / 2,
			heal: signal(n.monolith, syscall.SIGCONT), fromHeal: true}
	case RouterKill:
		r := cl.routers[p.rng.IntN(len(cl.routers))]
		return nemesis{target: r.name, inject: kill(r.component), hold: hb, untilServed: true, heal: r.launch}
	case RouterPause:
		r := cl.routers[p.rng.IntN(len(cl.routers))]
		return nemesis{target: r.name, inject: signal(r.component, syscall.SIGSTOP), hold: hb * 3 / 2,
			heal: signal(r.component, syscall.SIGCONT), fromHeal: true}
	case RedisPauseShort:
		return nemesis{target: "redis", inject: signal(cl.redis, syscall.SIGSTOP), hold: hb * 2 / 5,
			heal: signal(cl.redis, syscall.SIGCONT)}
	case RedisPauseLong:
		return nemesis{target: "redis", inject: signal(cl.redis, syscall.SIGSTOP), hold: 2 * hb,
			heal: signal(cl.redis, syscall.SIGCONT), fromHeal: true}
	case RedisRestart:
		return nemesis{target: "redis", inject: func(ctx context.Context) error {
			cl.redis.kill()
			return cl.redis.launch(ctx)
		}}
	case RedisFlush:
		return nemesis{target: "redis", inject: func(ctx context.Context) error {
			return cl.rdb.FlushAll(ctx).Err()
		}}
	case LinkSlow:
		n := busiest()
		return nemesis{target: n.id, hold: 2 * hb,
			inject: func(context.Context) error { n.link.setLatency(p.cfg.SlowLatency); return nil },
			heal:   func(context.Context) error { n.link.setLatency(0); return nil }}
	case LinkStall:
		n := busiest()
		return nemesis{target: n.id, hold: 2 * hb, untilServed: true,
			inject: func(context.Context) error { n.link.setStalled(true); return nil },
			heal:   func(context.Context) error { n.link.setStalled(false); return nil }}
	case RedisFailover:
		return p.failover()
	case DrainStorm:
		return p.drainStorm()
	case HostileClients:
		return p.hostileClients()
	}
	panic("chaos: no nemesis for " + kind)
}

// failover kills the registry's master (SIGKILL: what was not yet
// replicated is lost) and holds until the sentinels have promoted a replica
// and every client is served again; the heal starts the old master again,
// empty, as a replica of the new one, as an operator would, and waits
// until it is in sync.
func (p *phaseRun) failover() nemesis {
	cl := p.cl
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	old, err := cl.master(ctx)
	cancel()
	if err != nil {
		return nemesis{target: "registry master", inject: func(context.Context) error { return err }}
	}
	var (
		wg    sync.WaitGroup
		note  string
		start time.Time
	)
	return nemesis{
		target: old.name, hold: p.hb, untilServed: true,
		inject: func(ctx context.Context) error {
			// Should no replica be promoted, the next start replicates
			// another server rather than come back as an empty master.
			for _, rs := range cl.servers {
				if rs != old {
					old.replicaOf = rs.addr
					break
				}
			}
			start = time.Now()
			old.kill()
			wg.Add(1)
			go func() { // waited for by wait, which runFault always calls
				defer wg.Done()
				err := waitFor(ctx, cl.hb+p.cfg.Settle, func(ctx context.Context) error {
					m, err := cl.master(ctx)
					if err == nil && m == old {
						err = errors.New("the sentinels still name the killed master")
					}
					if err != nil {
						return err
					}
					old.replicaOf = m.addr
					return nil
				})
				if err != nil {
					note = "no replica promoted: " + err.Error()
					return
				}
				note = fmt.Sprintf("%s promoted %.2f s after the kill", old.replicaOf, time.Since(start).Seconds())
			}()
			return nil
		},
		wait: func() []string {
			wg.Wait()
			if note == "" {
				return nil
			}
			return []string{note}
		},
		heal: func(ctx context.Context) error {
			if err := old.launch(ctx); err != nil {
				return err
			}
			// The next fault starts from a whole deployment, as an
			// operator's next failover would: every replica in sync with
			// the master every sentinel names.
			return waitFor(ctx, 30*time.Second, cl.sentinelSettled)
		},
	}
}

// drainStorm sends SIGTERM to the two busiest sidecars at once while a
// third of the clients leave and join again, waits for both drains, and
// starts the two sidecars again.
func (p *phaseRun) drainStorm() nemesis {
	ids := p.w.busiestNodes(p.cl.nodeIDs(), p.rng)[:2]
	nodes := []*node{p.cl.node(ids[0]), p.cl.node(ids[1])}
	var (
		wg    sync.WaitGroup
		errs  [2]error
		taken [2]time.Duration
	)
	return nemesis{
		target: ids[0] + "+" + ids[1],
		inject: func(ctx context.Context) error {
			p.w.burst(p.rng)
			for i, n := range nodes {
				wg.Add(1)
				go func() { // waited for by wait, which runFault always calls
					defer wg.Done()
					start := time.Now()
					errs[i] = n.sidecar.term(ctx, drainLimit)
					taken[i] = time.Since(start)
				}()
			}
			return nil
		},
		wait: func() []string {
			wg.Wait()
			var notes []string
			for i, n := range nodes {
				s := fmt.Sprintf("%s drained in %.2f s", n.id, taken[i].Seconds())
				if errs[i] != nil {
					s += ": " + errs[i].Error()
				}
				notes = append(notes, s)
			}
			return notes
		},
		heal: func(ctx context.Context) error {
			return errors.Join(nodes[0].sidecar.launch(ctx), nodes[1].sidecar.launch(ctx))
		},
	}
}

func (cl *cluster) nodeIDs() []string {
	out := make([]string, len(cl.nodes))
	for i, n := range cl.nodes {
		out[i] = n.id
	}
	return out
}
