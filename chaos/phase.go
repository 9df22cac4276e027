package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"time"
)

// phaseRun is one phase: a cluster at one heartbeat TTL, its workload and
// its faults.
type phaseRun struct {
	cfg      *Config
	plan     phase
	dir      string
	serveLog bool
	rng      *rand.Rand // the run's choices; used by the run goroutine only
	runStart time.Time
	hb       time.Duration

	cl     *cluster
	w      *workload
	faults []*faultRun
	report Phase
	// warmup is the steady window before the first fault.
	warmupFrom, warmupTo int64
}

// faultRun is a Fault and the moments the checks need (wall-clock Unix
// ns).
type faultRun struct {
	Fault
	inject, heal, served int64
	steadyFrom, steadyTo int64
	ref                  int64 // the bound counts from here
	bound                time.Duration
}

func (p *phaseRun) logf(format string, args ...any) {
	fmt.Fprintf(p.cfg.Log, "chaos: %6.1fs hb %s: %s\n", time.Since(p.runStart).Seconds(), p.hb, fmt.Sprintf(format, args...))
}

// run starts the cluster and the clients, injects the phase's faults, and
// checks what was recorded. The cluster is gone when it returns.
func (p *phaseRun) run(ctx context.Context) error {
	start := time.Now()
	p.hb = p.plan.hb
	p.report = Phase{HeartbeatTTL: p.hb.String(), Sentinel: p.plan.sentinel, Dir: p.dir}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return err
	}
	var err error
	p.cl, err = startCluster(ctx, p.cfg, p.dir, p.hb, p.serveLog, p.plan.sentinel)
	if err != nil {
		return fmt.Errorf("chaos: start the cluster: %w", err)
	}
	defer p.cl.close()
	registry := "one Redis"
	if p.plan.sentinel {
		registry = "Redis behind Sentinel"
	}
	p.logf("cluster up in %.1f s (%d nodes, %d routers, %s; logs in %s)", time.Since(start).Seconds(), len(p.cl.nodes), len(p.cl.routers), registry, p.dir)
	p.w = newWorkload(p.cfg, p.cl.routerAddrs(), p.rng.Uint64())
	defer p.w.stop()
	if err := p.w.createRooms(ctx); err != nil {
		return fmt.Errorf("chaos: create rooms: %w", err)
	}
	if err := p.w.start(ctx); err != nil {
		return err
	}
	at, bad := p.w.waitServed(ctx, time.Now().Add(30*time.Second))
	if len(bad) > 0 {
		return fmt.Errorf("chaos: %d of %d clients not served after the start (bound 30 s): %s", len(bad), len(p.w.clients), describeClients(bad))
	}
	p.logf("%d clients in %d rooms served in %.1f s", len(p.w.clients), len(p.w.rooms), at.Sub(start).Seconds())
	// The monolith writes a new room's state 5 s after its last change
	// (each change pushes the write back), and a Commanded unload (a fence)
	// drops a pending write: until that first write, a room lives only in
	// one monolith's memory, and the first fault could lose it whatever
	// roomlb does. The faults start once every room is in Redis.
	p.warmupFrom = time.Now().Add(500 * time.Millisecond).UnixNano()
	warm := time.Now()
	if missing := p.w.waitState(ctx, p.cl.state, 30*time.Second); len(missing) > 0 {
		return fmt.Errorf("chaos: the state of %d rooms not in Redis 30 s after they were created: %v", len(missing), missing)
	}
	if !sleepCtx(ctx, p.cfg.Steady-time.Since(warm)) {
		return ctx.Err()
	}
	p.warmupTo = time.Now().UnixNano()
	p.logf("every room's state in Redis after %.1f s; faults begin", time.Since(warm).Seconds())

	deadline := start.Add(p.plan.until)
	for i := 0; ; i++ {
		if p.plan.until == 0 && i == len(p.plan.faults) {
			break
		}
		if p.plan.until > 0 && time.Now().After(deadline) {
			break
		}
		if i > 0 && i%len(p.plan.faults) == 0 {
			p.rng.Shuffle(len(p.plan.faults), func(a, b int) {
				p.plan.faults[a], p.plan.faults[b] = p.plan.faults[b], p.plan.faults[a]
			})
		}
		if err := p.runFault(ctx, p.plan.faults[i%len(p.plan.faults)]); err != nil {
			return err
		}
	}

	end := p.endChecks(ctx)
	p.w.stop()
	p.analyze(end)
	p.report.Faults = len(p.faults)
	p.report.ElapsedS = time.Since(start).Seconds()
	return ctx.Err()
}

// runFault injects one fault, holds it, heals it, waits until every client
// is served again and keeps a steady phase.
func (p *phaseRun) runFault(ctx context.Context, kind string) error {
	n := p.nemesis(kind)
	bound := p.cfg.bound(p.hb)
	f := &faultRun{Fault: Fault{Kind: kind, HeartbeatTTL: p.hb.String(), Target: n.target, Violations: []Violation{}}, bound: bound}
	p.faults = append(p.faults, f)
	f.inject = time.Now().UnixNano()
	f.AtS = time.Since(p.runStart).Seconds()
	p.logf("#%d %s %s", len(p.faults), kind, n.target)
	if err := n.inject(ctx); err != nil {
		f.Notes = append(f.Notes, "inject: "+err.Error())
	}
	held := sleepCtx(ctx, time.Until(time.Unix(0, f.inject).Add(n.hold)))
	if n.wait != nil {
		f.Notes = append(f.Notes, n.wait()...)
	}
	if n.found != nil {
		f.Violations = append(f.Violations, n.found()...)
	}
	if !held {
		return ctx.Err()
	}
	if n.untilServed {
		p.w.waitServed(ctx, time.Unix(0, f.inject).Add(bound))
	}
	f.heal = time.Now().UnixNano()
	f.HeldS = float64(f.heal-f.inject) / 1e9
	if n.heal != nil {
		if err := n.heal(ctx); err != nil {
			f.Violations = append(f.Violations, Violation{Invariant: InvRestart, at: time.Now().UnixNano(), Detail: err.Error()})
		}
	}
	if err := p.cl.revive(ctx); err != nil {
		f.Violations = append(f.Violations, Violation{Invariant: InvRestart, at: time.Now().UnixNano(), Detail: err.Error()})
	}
	f.ref, f.BoundFrom = f.inject, "fault"
	if n.fromHeal {
		f.ref, f.BoundFrom = f.heal, "heal"
	}
	f.BoundS = bound.Seconds()
	// A fault may take a heartbeat to show (a node notices Redis lost its
	// data at its next beat): no client counts as served again before.
	if !sleepCtx(ctx, time.Until(time.Unix(0, f.inject).Add(p.hb+p.w.gapLimit()))) {
		return ctx.Err()
	}
	at, bad := p.w.waitServed(ctx, time.Unix(0, f.ref).Add(bound))
	if len(bad) > 0 && ctx.Err() == nil {
		// The violation is found in the records (analyze); here the run
		// repairs what it can so that the next fault has clients to hurt.
		f.Notes = append(f.Notes, fmt.Sprintf("%d clients not served (at the bound, or stopped for good before it): %s", len(bad), describeClients(bad)))
		if rooms := p.w.repair(ctx); len(rooms) > 0 {
			f.Notes = append(f.Notes, fmt.Sprintf("created again: %v", rooms))
		}
		at, bad = p.w.waitServed(ctx, time.Now().Add(bound))
		if len(bad) > 0 {
			f.Notes = append(f.Notes, fmt.Sprintf("%d clients still not served after the repair", len(bad)))
		}
	}
	f.served = at.UnixNano()
	if (kind == RedisRestart || kind == RedisFlush) && ctx.Err() == nil {
		t := time.Now()
		if missing := p.w.restoreState(ctx, p.cl.state, 15*time.Second); len(missing) > 0 {
			f.Notes = append(f.Notes, fmt.Sprintf("state of %d rooms not back in Redis 15 s after a change: %v", len(missing), missing))
		} else {
			f.Notes = append(f.Notes, fmt.Sprintf("every room's state back in Redis %.1f s after a change", time.Since(t).Seconds()))
		}
	}
	f.steadyFrom = time.Now().Add(500 * time.Millisecond).UnixNano()
	if !sleepCtx(ctx, p.cfg.Steady+500*time.Millisecond) {
		return ctx.Err()
	}
	f.steadyTo = time.Now().UnixNano()
	return nil
}

// describeClients says which clients are not served and why, briefly.
func describeClients(cs []*client) string {
	s := ""
	for i, c := range cs {
		if i == 3 {
			s += fmt.Sprintf(" and %d more", len(cs)-3)
			break
		}
		if i > 0 {
			s += ", "
		}
		state := "connecting"
		switch {
		case c.gone.Load():
			state = fmt.Sprintf("stopped (close %d)", c.goneCode.Load())
		case c.synced.Load():
			state = "served but without chats"
		}
		s += fmt.Sprintf("client %d (%s) %s", c.id, c.room, state)
	}
	return s
}

// endCheck is what the end of a phase found.
type endCheck struct {
	at     int64
	rooms  []roomCheck
	exits  []processExit
	crashs []string
}

// endChecks gives the clients the bound to be served, joins every room
// once more and reads the logs for crashes.
func (p *phaseRun) endChecks(ctx context.Context) endCheck {
	p.w.waitServed(ctx, time.Now().Add(p.cfg.bound(p.hb)))
	e := endCheck{at: time.Now().UnixNano()}
	e.rooms = p.w.checkRooms(ctx)
	e.exits = p.cl.exits.list()
	e.crashs, _ = crashLines(p.cl.logFiles())
	return e
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
