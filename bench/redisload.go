package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/roomlb/roomlb/sidecar"
)

// figRedis is figure 8: the Redis commands a node sends at steady state,
// holding many rooms.
func (e *env) figRedis(ctx context.Context, f *Figure) error {
	sc := e.scale
	f.Name = fmt.Sprintf("Redis commands per second per node, steady state, %d rooms", sc.RedisRooms)
	f.Measures = fmt.Sprintf("one sidecar process holding %d loaded rooms (no clients), its registry in a Redis of its own; "+
		"INFO commandstats delta over %v, after the loads have settled and housekeeping's sweep for stale room keys (set off by the node's new session) is done", sc.RedisRooms, sc.RedisWindow)
	app, err := startRedis(e.dir, "f8-redis-app")
	if err != nil {
		return err
	}
	defer app.close()
	reg, err := startRedis(e.dir, "f8-redis-registry")
	if err != nil {
		return err
	}
	defer reg.close()
	m, err := startMonolith(e.opts.Monolith, app, nil)
	if err != nil {
		return err
	}
	defer m.close()
	sc8, err := startSidecar(e, "f8-sidecar", "bench-node", reg.url, m)
	if err != nil {
		return err
	}
	defer sc8.kill()
	rooms := roomNames("f8", sc.RedisRooms)
	if err := addRooms(ctx, app.rdb, rooms); err != nil {
		return err
	}
	start := time.Now()
	if err := loadRooms(ctx, sc8.addr, e.secret, rooms); err != nil {
		return err
	}
	metrics := "http://" + sc8.addr + "/metrics"
	for {
		n, _ := metric(metrics, "roomlb_sidecar_rooms")
		if int(n) >= sc.RedisRooms {
			break
		}
		if time.Since(start) > 2*time.Minute {
			return fmt.Errorf("the sidecar holds %.0f rooms of %d", n, sc.RedisRooms)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.logf("figure 8: %d rooms loaded in %v", sc.RedisRooms, time.Since(start).Round(time.Millisecond))
	f.add("node", "rooms loaded per s (claim + load, 32 at a time)", float64(sc.RedisRooms)/time.Since(start).Seconds(), "rooms/s")
	sleep(ctx, 2*sc.Settle)
	if err := awaitSweep(ctx, reg.rdb); err != nil {
		return err
	}
	before, err := commandStats(ctx, reg.rdb)
	if err != nil {
		return err
	}
	t := time.Now()
	sleep(ctx, sc.RedisWindow)
	after, err := commandStats(ctx, reg.rdb)
	if err != nil {
		return err
	}
	secs := time.Since(t).Seconds()
	type cmdRate struct {
		name string
		rate float64
	}
	var rates []cmdRate
	total := 0.0
	for name, n := range after {
		// INFO itself is the bench's.
		if d := n - before[name]; d > 0 && name != "info" {
			r := float64(d) / secs
			rates = append(rates, cmdRate{name, r})
			total += r
		}
	}
	slices.SortFunc(rates, func(a, b cmdRate) int { return cmp.Compare(b.rate, a.rate) })
	scripts := 0.0
	for _, r := range rates {
		if r.name == "evalsha" || r.name == "eval" || r.name == "evalsha_ro" || r.name == "eval_ro" || r.name == "fcall" {
			scripts += r.rate
		}
	}
	f.add("node", "commands/s (scripts' own included)", total, "1/s")
	f.add("node", "script calls/s", scripts, "1/s")
	f.add("node", "commands per room per minute", total*60/float64(sc.RedisRooms), "1")
	for _, r := range rates[:min(5, len(rates))] {
		f.add("node", r.name+"/s", r.rate, "1/s")
	}
	f.note("commandstats counts every command a script runs as well as the EVALSHA that runs it.")
	f.note("no project goal (figure 9 has it); rooms are bound to the node's heartbeat (TTL %v, the default, refreshed every third of it) and need no renewal of their own; "+
		"what is left is the heartbeat and the metadata writes of rooms whose metadata changed.", sidecar.DefaultHeartbeatTTL)
	return nil
}
