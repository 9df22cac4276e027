package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Scale sizes a run. The zero value means Full.
type Scale struct {
	Name string
	// Window is how long the steady figures (1, 2, 3) measure, after Warmup.
	Window, Warmup time.Duration
	// Settle is the pause before memory and Redis are read, for what a
	// change set off (join broadcasts, meta writes) to finish.
	Settle time.Duration
	// Figure 1: LatencyRooms rooms of LatencyRoomSize clients, one sender
	// per room, LatencyRate chats per second in all.
	LatencyRooms, LatencyRoomSize int
	LatencyRate                   float64
	// Figure 2: SatClients clients, each alone in its room, each keeping
	// SatInFlight chats in flight.
	SatClients, SatInFlight int
	// Figure 3: FanoutRooms rooms of FanoutRoomSize clients, FanoutRate
	// broadcasts per second in all.
	FanoutRooms, FanoutRoomSize int
	FanoutRate                  float64
	// Figure 4: idle connections held at each level.
	IdleLevels []int
	// Figure 5: cold joins (and as many warm ones).
	Joins int
	// Figure 6: rooms on the node that is killed, and the heartbeat TTLs
	// to run it with (the goal is checked on each).
	FailoverRooms      int
	FailoverHeartbeats []time.Duration
	// Figure 7: rooms handed over by each drain of idle rooms; and the
	// drain under chat, with the monolith's real 5 s state debounce:
	// ChatDrainRooms rooms of ChatDrainClients clients, every client
	// chatting (none when either is 0).
	DrainRooms                       []int
	ChatDrainRooms, ChatDrainClients int
	// Figure 8: rooms of the node, and the window of INFO commandstats.
	RedisRooms  int
	RedisWindow time.Duration
	// Figure 9: the levels of simulated nodes, and the window of INFO
	// deltas at rest.
	ScaleLevels []ScaleLevel
	ScaleWindow time.Duration
}

// Presets.
var (
	Full = Scale{
		Name: "full", Window: 15 * time.Second, Warmup: 2 * time.Second, Settle: time.Second,
		LatencyRooms: 20, LatencyRoomSize: 5, LatencyRate: 500,
		SatClients: 64, SatInFlight: 4,
		FanoutRooms: 4, FanoutRoomSize: 50, FanoutRate: 100,
		IdleLevels:    []int{1000, 5000, 9000},
		Joins:         500,
		FailoverRooms: 50, FailoverHeartbeats: []time.Duration{3 * time.Second, time.Second, 700 * time.Millisecond},
		DrainRooms: []int{100, 1000}, ChatDrainRooms: 250, ChatDrainClients: 4,
		RedisRooms: 10000, RedisWindow: 30 * time.Second,
		ScaleLevels: []ScaleLevel{{10, 1000}, {10, 10000}, {100, 1000}, {1000, 1000}},
		ScaleWindow: 10 * time.Second,
	}
	Quick = Scale{
		Name: "quick", Window: 2500 * time.Millisecond, Warmup: 500 * time.Millisecond, Settle: time.Second,
		LatencyRooms: 10, LatencyRoomSize: 5, LatencyRate: 300,
		SatClients: 32, SatInFlight: 4,
		FanoutRooms: 2, FanoutRoomSize: 50, FanoutRate: 60,
		IdleLevels:    []int{1000, 5000, 9000},
		Joins:         200,
		FailoverRooms: 20, FailoverHeartbeats: []time.Duration{3 * time.Second, 700 * time.Millisecond},
		DrainRooms: []int{100, 1000}, ChatDrainRooms: 50, ChatDrainClients: 4,
		RedisRooms: 10000, RedisWindow: 8 * time.Second,
		ScaleLevels: []ScaleLevel{{10, 1000}, {10, 10000}, {100, 1000}},
		ScaleWindow: 5 * time.Second,
	}
	// Tiny is for tests: every figure, seconds in all, figures not meant
	// to be read.
	Tiny = Scale{
		Name: "tiny", Window: 500 * time.Millisecond, Warmup: 200 * time.Millisecond, Settle: 200 * time.Millisecond,
		LatencyRooms: 2, LatencyRoomSize: 3, LatencyRate: 50,
		SatClients: 4, SatInFlight: 2,
		FanoutRooms: 1, FanoutRoomSize: 10, FanoutRate: 20,
		IdleLevels:    []int{50, 100},
		Joins:         10,
		FailoverRooms: 2, FailoverHeartbeats: []time.Duration{time.Second},
		DrainRooms: []int{5}, ChatDrainRooms: 3, ChatDrainClients: 2,
		RedisRooms: 50, RedisWindow: 1500 * time.Millisecond,
		ScaleLevels: []ScaleLevel{{3, 20}},
		ScaleWindow: time.Second,
	}
)

// Options configures Run. Binary is required.
type Options struct {
	// Binary is a roomlb binary: it runs the routers and sidecars whose
	// CPU and memory are measured, and the load-generator workers
	// (`roomlb bench --worker`).
	Binary string
	// Scale sizes the run; the zero value means Full.
	Scale Scale
	// Monolith is the monolith kind behind figures 1, 2 and 4 to 8:
	// MonolithFake ("" too) or MonolithNode.
	Monolith string
	// FanoutMonolith is the monolith kind of figure 3, whose process CPU is
	// measured; "" means Monolith. A fake runs in a worker process then, so
	// that its CPU is its own.
	FanoutMonolith string
	// HAProxy is the haproxy binary; "" looks it up on PATH. Without one,
	// the haproxy peer is left out and its goals are n/a.
	HAProxy string
	// Figures lists the figures to run (1 to 9); empty means all.
	Figures []int
	// Dir holds logs and configs; "" means a temporary folder, removed
	// afterwards.
	Dir string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

var errNoHAProxy = errors.New("bench: no haproxy on PATH (apt-get install -y haproxy)")

// env is what every figure of a run shares.
type env struct {
	opts   Options
	scale  Scale
	dir    string
	secret string
	cores  int
	base   time.Time // origin of chat stamps
	log    io.Writer
	hot    *hotWorld // figures 1 and 2, started by the first
	hotErr error
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "bench: "+format+"\n", args...)
}

// Run starts the peers on loopback, measures the figures and returns the
// report. A figure that fails is reported with its error and the run goes
// on; the error returned joins the figures' errors.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Binary == "" {
		return nil, errors.New("bench: Options.Binary is required")
	}
	if o.Scale.Name == "" {
		o.Scale = Full
	}
	if o.Monolith == "" {
		o.Monolith = MonolithFake
	}
	if o.FanoutMonolith == "" {
		o.FanoutMonolith = o.Monolith
	}
	for _, k := range []string{o.Monolith, o.FanoutMonolith} {
		if k != MonolithFake && k != MonolithNode {
			return nil, fmt.Errorf("bench: unknown monolith %q: want fake or node", k)
		}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	e := &env{opts: o, scale: o.Scale, dir: o.Dir, secret: randomHex(16), cores: runtime.NumCPU(), base: time.Now(), log: o.Log}
	if e.dir == "" {
		d, err := os.MkdirTemp("", "roomlb-bench")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		e.dir = d
	}
	r := &Report{
		Started:  time.Now(),
		Scale:    o.Scale.Name,
		Monolith: o.Monolith,
		Machine:  Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Kernel: kernel(), HAProxy: haproxyVersion(o.HAProxy)},
	}
	figs := []struct {
		id  int
		run func(context.Context, *Figure) error
	}{
		{1, e.figLatency}, {2, e.figThroughput}, {3, e.figFanout}, {4, e.figMemory},
		{5, e.figJoin}, {6, e.figFailover}, {7, e.figDrain}, {8, e.figRedis}, {9, e.figScale},
	}
	var errs []error
	defer func() {
		if e.hot != nil {
			e.hot.close()
		}
	}()
	for _, fg := range figs {
		if len(o.Figures) > 0 && !slices.Contains(o.Figures, fg.id) {
			continue
		}
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		f := Figure{ID: fg.id}
		start := time.Now()
		e.logf("figure %d ...", fg.id)
		err := fg.run(ctx, &f)
		if err != nil {
			f.Err = err.Error()
			errs = append(errs, fmt.Errorf("figure %d: %w", fg.id, err))
		}
		e.logf("figure %d done in %v", fg.id, time.Since(start).Round(100*time.Millisecond))
		r.Figures = append(r.Figures, f)
	}
	r.Duration = time.Since(r.Started)
	return r, errors.Join(errs...)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return "linux " + strings.TrimSpace(string(b))
}

func haproxyVersion(bin string) string {
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("haproxy"); err != nil {
			return ""
		}
	}
	out, err := exec.Command(bin, "-v").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
