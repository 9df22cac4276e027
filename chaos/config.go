package chaos

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/roomlb/roomlb/sidecar"
)

// The kinds of fault (nemeses) a run injects.
const (
	SidecarKill     = "sidecar-kill"      // SIGKILL of the busiest sidecar, then started again
	SidecarPause    = "sidecar-pause"     // SIGSTOP of the busiest sidecar for 2 heartbeat TTLs, then SIGCONT
	MonolithKill    = "monolith-kill"     // SIGKILL of the busiest node's monolith, then started again
	MonolithPause   = "monolith-pause"    // SIGSTOP of the busiest node's monolith for 1.5 TTLs
	RouterKill      = "router-kill"       // SIGKILL of a router, then started again
	RouterPause     = "router-pause"      // SIGSTOP of a router for 1.5 TTLs
	RedisPauseShort = "redis-pause-short" // SIGSTOP of Redis for 0.4 TTL
	RedisPauseLong  = "redis-pause-long"  // SIGSTOP of Redis for 2 TTLs
	RedisRestart    = "redis-restart"     // SIGKILL of Redis, started again empty on the same port
	RedisFlush      = "redis-flushall"    // FLUSHALL
	LinkSlow        = "link-slow"         // the busiest sidecar's Redis link delays each chunk, for 2 TTLs
	LinkStall       = "link-stall"        // the busiest sidecar's Redis link forwards nothing, for 2 TTLs
	DrainStorm      = "drain-storm"       // SIGTERM of the two busiest sidecars while clients join, then started again
	HostileClients  = "hostile-clients"   // attackers send malformed frames, traversal paths and floods for 2 TTLs (hostile.go)
	RedisFailover   = "redis-failover"    // SIGKILL of the registry's master behind Sentinel, a replica promoted (a phase of its own)
)

// Kinds lists every kind of fault, in a fixed order.
var Kinds = []string{
	SidecarKill, SidecarPause, MonolithKill, MonolithPause, RouterKill, RouterPause,
	RedisPauseShort, RedisPauseLong, RedisRestart, RedisFlush, LinkSlow, LinkStall, DrainStorm,
	HostileClients, RedisFailover,
}

// sentinelKinds need the registry's Redis behind Sentinel (a master, two
// replicas, three sentinels; the monoliths keep a Redis of their own, as
// they do not speak Sentinel). The sidecars then reach Redis directly,
// not through link proxies, so these kinds get a phase of their own, at
// the first heartbeat TTL.
var sentinelKinds = []string{RedisFailover}

// Defaults for Config.
const (
	DefaultNodes          = 3
	DefaultRouters        = 2
	DefaultRooms          = 24
	DefaultClientsPerRoom = 5
	DefaultChatInterval   = 250 * time.Millisecond
	DefaultSteady         = 5 * time.Second
	DefaultSlowLatency    = 150 * time.Millisecond
	DefaultSettle         = 10 * time.Second

	// Quick runs: fewer clients, shorter steady phases, each kind once in
	// all (the kinds spread over the heartbeat TTLs).
	QuickRooms          = 12
	QuickClientsPerRoom = 4
	QuickSteady         = 2500 * time.Millisecond
)

// DefaultHeartbeatTTLs are the sidecar's default and a short one.
var DefaultHeartbeatTTLs = []time.Duration{sidecar.DefaultHeartbeatTTL, time.Second}

// Config configures a run. Only Binary is required; the zero value of every
// other field means its default.
type Config struct {
	// Binary is the roomlb executable run as sidecars and routers.
	Binary string
	// MonolithDir is the Node reference monolith's folder; "" means the
	// one of this checkout.
	MonolithDir string
	// Dir keeps the logs, serve logs and Redis files; "" means a temporary
	// folder, removed after the run.
	Dir string
	// Seed makes the order of faults and every random choice repeatable;
	// 0 means one from the clock (reported).
	Seed int64
	// Quick runs each kind once in all, spread over the heartbeat TTLs,
	// with fewer clients and shorter steady phases.
	Quick bool
	// Duration, when set, cycles through the faults until it has passed
	// (shared equally by the heartbeat TTLs); 0 runs each kind once per
	// TTL (once in all with Quick).
	Duration time.Duration
	// HeartbeatTTLs are the sidecars' --heartbeat-ttl, one phase (a fresh
	// cluster) each; nil means DefaultHeartbeatTTLs.
	HeartbeatTTLs []time.Duration
	// Faults are the kinds to inject; nil means Kinds.
	Faults []string
	// Nodes and Routers: monoliths (each with its sidecar) and routers.
	Nodes, Routers int
	// Rooms and ClientsPerRoom: the rooms created at the start and the
	// clients that join each.
	Rooms, ClientsPerRoom int
	// ChatInterval is the time between two chats in one room.
	ChatInterval time.Duration
	// Steady is the phase after a fault's recovery in which no chat may be
	// lost.
	Steady time.Duration
	// ServeBound is how long after a fault (or after its end, for faults
	// no node can work around, such as a paused router) every client must
	// be served again; 0 means 2 heartbeat TTLs + Settle.
	ServeBound time.Duration
	// Settle is the slack of the default ServeBound: the browser's
	// reconnect backoff, the routers' hold timeout, a room's load.
	Settle time.Duration
	// SlowLatency is the delay a slow link adds before each chunk.
	SlowLatency time.Duration
	// Log receives one line per step; nil discards them.
	Log io.Writer
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n == 0 {
			*n = v
		}
	}
	if c.Seed == 0 {
		c.Seed = time.Now().UnixNano() % 1_000_000
	}
	if len(c.HeartbeatTTLs) == 0 {
		c.HeartbeatTTLs = DefaultHeartbeatTTLs
	}
	if len(c.Faults) == 0 {
		c.Faults = Kinds
	}
	defInt(&c.Nodes, DefaultNodes)
	defInt(&c.Routers, DefaultRouters)
	if c.Quick {
		defInt(&c.Rooms, QuickRooms)
		defInt(&c.ClientsPerRoom, QuickClientsPerRoom)
		def(&c.Steady, QuickSteady)
	}
	defInt(&c.Rooms, DefaultRooms)
	defInt(&c.ClientsPerRoom, DefaultClientsPerRoom)
	def(&c.ChatInterval, DefaultChatInterval)
	def(&c.Steady, DefaultSteady)
	def(&c.Settle, DefaultSettle)
	def(&c.SlowLatency, DefaultSlowLatency)
	if c.Log == nil {
		c.Log = io.Discard
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.Binary == "" {
		errs = append(errs, errors.New("no roomlb binary"))
	}
	for _, k := range c.Faults {
		if !slices.Contains(Kinds, k) {
			errs = append(errs, fmt.Errorf("unknown fault %q (kinds: %v)", k, Kinds))
		}
	}
	if c.SlowLatency < 0 {
		errs = append(errs, fmt.Errorf("slow latency %v is negative", c.SlowLatency))
	}
	for _, d := range c.HeartbeatTTLs {
		if d < 200*time.Millisecond {
			errs = append(errs, fmt.Errorf("heartbeat ttl %v: at least 200ms", d))
		}
	}
	if c.Nodes < 3 {
		errs = append(errs, fmt.Errorf("%d nodes: a drain storm needs at least 3", c.Nodes))
	}
	if c.Routers < 2 {
		errs = append(errs, fmt.Errorf("%d routers: a router fault needs at least 2", c.Routers))
	}
	if c.Rooms < 1 || c.ClientsPerRoom < 2 {
		errs = append(errs, fmt.Errorf("%d rooms of %d clients: want at least 1 room of 2", c.Rooms, c.ClientsPerRoom))
	}
	if c.Steady <= lossGrace {
		errs = append(errs, fmt.Errorf("steady %v: longer than %v", c.Steady, lossGrace))
	}
	if c.Duration < 0 {
		errs = append(errs, fmt.Errorf("duration %v: negative", c.Duration))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	return nil
}

// bound is the ServeBound at heartbeat TTL hb.
func (c *Config) bound(hb time.Duration) time.Duration {
	if c.ServeBound > 0 {
		return c.ServeBound
	}
	return 2*hb + c.Settle
}

// phase is one cluster at one heartbeat TTL and the faults it gets.
type phase struct {
	hb       time.Duration
	sentinel bool // the registry's Redis is behind Sentinel
	faults   []string
	// until, when set, cycles through faults (shuffled each cycle) until
	// this much time has passed since the phase started.
	until time.Duration
}

// plan spreads the faults over the heartbeat TTLs: each kind once per TTL,
// once in all (Quick), or cycling until Duration. The kinds that need
// Sentinel get a phase of their own at the first TTL (once, in Quick and
// full runs alike).
func (c *Config) plan(rng *rand.Rand) []phase {
	plain := slices.DeleteFunc(slices.Clone(c.Faults), func(k string) bool { return slices.Contains(sentinelKinds, k) })
	sentinel := slices.DeleteFunc(slices.Clone(c.Faults), func(k string) bool { return !slices.Contains(sentinelKinds, k) })
	shuffled := func(kinds []string) []string {
		f := slices.Clone(kinds)
		rng.Shuffle(len(f), func(i, j int) { f[i], f[j] = f[j], f[i] })
		return f
	}
	phases := make([]phase, len(c.HeartbeatTTLs))
	for i, hb := range c.HeartbeatTTLs {
		phases[i].hb = hb
	}
	switch {
	case c.Duration > 0:
		for i := range phases {
			phases[i].faults = shuffled(plain)
		}
	case c.Quick:
		for i, k := range shuffled(plain) {
			p := &phases[i%len(phases)]
			p.faults = append(p.faults, k)
		}
	default:
		for i := range phases {
			phases[i].faults = shuffled(plain)
		}
	}
	if len(sentinel) > 0 {
		phases = append(phases, phase{hb: c.HeartbeatTTLs[0], sentinel: true, faults: shuffled(sentinel)})
	}
	phases = slices.DeleteFunc(phases, func(p phase) bool { return len(p.faults) == 0 })
	if c.Duration > 0 {
		for i := range phases {
			phases[i].until = c.Duration / time.Duration(len(phases))
		}
	}
	return phases
}
