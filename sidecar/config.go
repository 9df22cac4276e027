package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/registry"
)

// Defaults for Config.
const (
	DefaultListen        = "127.0.0.1:7070"
	DefaultHeartbeatTTL  = 3 * time.Second
	DefaultDrainTimeout  = 30 * time.Second
	DefaultAuthTimeout   = 20 * time.Second
	DefaultLoadTimeout   = 10 * time.Second
	DefaultStateDebounce = 5 * time.Second
	DefaultShutdownFlush = 2 * time.Second
	DefaultMaxFrame      = contract.DefaultMaxFrame
	DefaultSendQueue     = 256
	DefaultPingInterval  = 5 * time.Second
	// DefaultMonolithIdle is below Node's HTTP keep-alive timeout (5 s),
	// which the OpenTogetherTube server keeps.
	DefaultMonolithIdle    = 3 * time.Second
	DefaultRedialMax       = 5 * time.Second
	DefaultAnnounceChannel = "announcement"
)

// Config configures a sidecar. The zero value of every field but NodeID,
// Monolith and Registry means its default.
type Config struct {
	// NodeID names this node in the registry (a Nomad allocation id works).
	NodeID string
	// Listen is the ingress address routers connect to.
	Listen string
	// Advertise is the address routers are told to use; "" means the bound
	// Listen address.
	Advertise string
	// Region is reported to routers for same-region placement.
	Region string
	// Monolith is the monolith's balancer WebSocket URL, e.g.
	// ws://127.0.0.1:3002/. Its HTTP port comes from the monolith's init.
	Monolith string
	// Secret is the shared secret routers send in X-Roomlb-Secret; "" lets
	// any caller in (only for loopback development).
	Secret string
	// Registry is the room registry.
	Registry *registry.Registry
	// MonolithRedis is the monolith's own Redis: where it writes each
	// room's state (room:NAME), which a drain watches for the write of a
	// room's last change, and where OpenTogetherTube publishes
	// announcements. nil means the registry's.
	MonolithRedis redis.UniversalClient
	// Capacity is the most clients this node takes; 0 means no limit.
	Capacity int

	// HeartbeatTTL is the node heartbeat's lifetime; it is refreshed every
	// third of it. The node's rooms are its own for as long as its
	// heartbeat key lives (they need no renewal of their own): it stops
	// serving them at 0.9 x HeartbeatTTL without a refresh, and routers
	// take the rooms of a node whose key is gone.
	HeartbeatTTL time.Duration
	// DrainTimeout bounds a drain; rooms not handed over by then are
	// released as they are.
	DrainTimeout time.Duration
	// AuthTimeout is how long a client may take to send its auth frame.
	AuthTimeout time.Duration
	// LoadTimeout is how long a join may wait for the monolith to load its
	// room.
	LoadTimeout time.Duration
	// StateDebounce is the monolith's delay between a room change and its
	// write to Redis (5 s in OpenTogetherTube). A drain hands a room over
	// only once the write of its last change has landed (see drain.go).
	StateDebounce time.Duration
	// ShutdownFlush is how long rooms are held, after the monolith closed
	// the link for its own shutdown, before they are released: writes it
	// had in flight land meanwhile. (The OpenTogetherTube server writes
	// none of its pending changes when it shuts down.)
	ShutdownFlush time.Duration
	// MaxFrame is the largest client frame accepted, in bytes.
	MaxFrame int
	// SendQueue is how many messages may wait for a slow client before it is
	// disconnected.
	SendQueue int
	// PingInterval is how often the monolith link is pinged; a pong missing
	// for two intervals drops the link.
	PingInterval time.Duration
	// MonolithIdle is how long a connection to the monolith's HTTP API may
	// idle in the pool; it must be below the monolith's keep-alive timeout,
	// or a request may reuse a connection the monolith is closing and fail
	// (a POST is not retried: 502).
	MonolithIdle time.Duration
	// AnnounceChannel is the Redis channel of OpenTogetherTube
	// announcements relayed to this node's clients; "-" turns it off.
	AnnounceChannel string
	// ServeLog, when set, receives a JSON line (ServeRecord) per room and
	// epoch this node served, every 250 ms while it serves and when it
	// stops, and one per client joined: roomlb chaos checks from them that
	// no two nodes served a room at once, and learns which node served a
	// client a router carried over. nil means none (the hot path then does
	// not read the clock).
	ServeLog io.Writer

	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	def(&c.HeartbeatTTL, DefaultHeartbeatTTL)
	def(&c.DrainTimeout, DefaultDrainTimeout)
	def(&c.AuthTimeout, DefaultAuthTimeout)
	def(&c.LoadTimeout, DefaultLoadTimeout)
	def(&c.StateDebounce, DefaultStateDebounce)
	def(&c.ShutdownFlush, DefaultShutdownFlush)
	def(&c.PingInterval, DefaultPingInterval)
	def(&c.MonolithIdle, DefaultMonolithIdle)
	if c.MaxFrame == 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	if c.SendQueue == 0 {
		c.SendQueue = DefaultSendQueue
	}
	if c.AnnounceChannel == "" {
		c.AnnounceChannel = DefaultAnnounceChannel
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	var errs []error
	if err := registry.ValidNode(c.NodeID); err != nil {
		errs = append(errs, fmt.Errorf("Config.NodeID %q: %w", c.NodeID, err))
	}
	if c.Registry == nil {
		errs = append(errs, errors.New("Config.Registry is required"))
	}
	if u, err := url.Parse(c.Monolith); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		errs = append(errs, fmt.Errorf("Config.Monolith %q: want the balancer URL, e.g. ws://127.0.0.1:3002/", c.Monolith))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("Config.Listen %q: %v", c.Listen, err))
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("Config.Advertise %q: %v", c.Advertise, err))
		}
	}
	if c.Capacity < 0 {
		errs = append(errs, fmt.Errorf("Config.Capacity is negative (%d)", c.Capacity))
	}
	if c.HeartbeatTTL < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("Config.HeartbeatTTL is %v, want at least 100ms", c.HeartbeatTTL))
	}
	if c.Registry != nil && c.Registry.RecoveryWindow() < c.HeartbeatTTL {
		// After Redis lost its data, other nodes' claims must wait until
		// this node has had the chance to re-claim its rooms.
		errs = append(errs, fmt.Errorf("Config.HeartbeatTTL is %v, longer than the registry's recovery window %v", c.HeartbeatTTL, c.Registry.RecoveryWindow()))
	}
	for name, d := range map[string]time.Duration{
		"DrainTimeout": c.DrainTimeout, "AuthTimeout": c.AuthTimeout, "LoadTimeout": c.LoadTimeout,
		"StateDebounce": c.StateDebounce, "ShutdownFlush": c.ShutdownFlush, "PingInterval": c.PingInterval,
		"MonolithIdle": c.MonolithIdle,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("Config.%s is negative (%v)", name, d))
		}
	}
	if c.MaxFrame < 1024 {
		errs = append(errs, fmt.Errorf("Config.MaxFrame is %d, want at least 1024 (bytes)", c.MaxFrame))
	}
	if len(errs) > 0 {
		return fmt.Errorf("sidecar: bad config: %w", errors.Join(errs...))
	}
	return nil
}

// redisCtx bounds one registry call made from a background loop.
func (c *Config) redisCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.redisTimeout())
}

// redisTimeout bounds one registry call: half a heartbeat TTL (a call that
// takes longer cannot keep the node's rooms served anyway; the heartbeat is
// retried every tenth of it), at most 2 s, at least 100 ms.
func (c *Config) redisTimeout() time.Duration {
	return min(max(c.HeartbeatTTL/2, 100*time.Millisecond), 2*time.Second)
}

// claimTimeout bounds a claim made for a client: long enough to wait out a
// recovery window after Redis lost its data (at most a heartbeat TTL, see
// registry.Reclaim) and then claim.
func (c *Config) claimTimeout() time.Duration {
	return c.HeartbeatTTL + c.redisTimeout()
}
