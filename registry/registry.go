package registry

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults for Config.
const (
	DefaultPrefix   = "roomlb:"
	DefaultEpochTTL = 7 * 24 * time.Hour
	DefaultMetaTTL  = 24 * time.Hour
	// DefaultRecoveryWindow is the default heartbeat TTL of sidecars.
	DefaultRecoveryWindow = 3 * time.Second
	// DefaultReplicaTimeout bounds the wait for replicas (Config.Replicas).
	DefaultReplicaTimeout = 250 * time.Millisecond
)

// Config says where the registry lives in Redis. The zero value works.
type Config struct {
	// Prefix starts every key and the events channel; "" means DefaultPrefix.
	Prefix string
	// EpochTTL is how long a room's epoch counter outlives its last claim; 0
	// means DefaultEpochTTL. Epochs stay monotonic after it expires (they are
	// seeded from the Redis clock); it only bounds memory for rooms that are
	// never claimed again.
	EpochTTL time.Duration
	// MetaTTL is how long room metadata lives after its last write; 0 means
	// DefaultMetaTTL. Owners rewrite it on every change of the room; it
	// outlives the owner so that the next one learns the room's canonical
	// casing (OpenTogetherTube keeps room state in Redis for 2 hours).
	MetaTTL time.Duration
	// RecoveryWindow is how long, after this registry finds that Redis lost
	// it (the generation key is gone), only the nodes that were serving
	// rooms may claim them back (Reclaim); plain claims of unowned rooms
	// wait. It must be at least the longest heartbeat TTL of any sidecar:
	// that is how long an owner that has not noticed the loss may go on
	// serving. A heartbeat opens at least its own TTL. 0 means
	// DefaultRecoveryWindow.
	RecoveryWindow time.Duration
	// Replicas is how many replicas must have a write that gives or keeps
	// ownership (a heartbeat, a claim, a transfer, a reclaim) before it
	// counts: the registry sends WAIT after it, on the same connection,
	// and the call fails with ErrNotReplicated when fewer replicas
	// acknowledged it within ReplicaTimeout. With Sentinel set it to 1 (or
	// more): a failover promotes a replica, and a write it never got is
	// lost, a heartbeat among them, while its node counts on it. 0 waits
	// for none (a single Redis).
	Replicas int
	// ReplicaTimeout bounds the wait for Replicas; 0 means
	// DefaultReplicaTimeout.
	ReplicaTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Registry is the room registry in one Redis deployment. It is safe for
// concurrent use and holds no state of its own beyond the client and the
// slots it has seen in use (bornSlots).
type Registry struct {
	rdb      redis.UniversalClient
	born     bornSlots
	prefix   string
	epochTTL time.Duration
	metaTTL  time.Duration
	recovery time.Duration
	replicas int
	waitFor  time.Duration
	log      *slog.Logger
}

// New returns a registry over rdb. It does not contact Redis.
func New(rdb redis.UniversalClient, cfg Config) (*Registry, error) {
	if rdb == nil {
		return nil, errors.New("registry: nil redis client")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(cfg.Prefix, "{}*?[] \t\r\n") {
		return nil, fmt.Errorf("registry: prefix %q: must not contain braces, glob characters or spaces", cfg.Prefix)
	}
	if cfg.EpochTTL == 0 {
		cfg.EpochTTL = DefaultEpochTTL
	}
	if cfg.MetaTTL == 0 {
		cfg.MetaTTL = DefaultMetaTTL
	}
	if cfg.RecoveryWindow == 0 {
		cfg.RecoveryWindow = DefaultRecoveryWindow
	}
	if cfg.EpochTTL < 0 || cfg.MetaTTL < 0 || cfg.RecoveryWindow < 0 {
		return nil, errors.New("registry: negative TTL")
	}
	if cfg.Replicas < 0 || cfg.ReplicaTimeout < 0 {
		return nil, errors.New("registry: negative Replicas or ReplicaTimeout")
	}
	if cfg.ReplicaTimeout == 0 {
		cfg.ReplicaTimeout = DefaultReplicaTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Registry{
		rdb:      rdb,
		prefix:   cfg.Prefix,
		epochTTL: cfg.EpochTTL,
		metaTTL:  cfg.MetaTTL,
		recovery: cfg.RecoveryWindow,
		replicas: cfg.Replicas,
		waitFor:  cfg.ReplicaTimeout,
		log:      cfg.Logger,
	}, nil
}

// Client is the Redis client the registry uses.
func (r *Registry) Client() redis.UniversalClient { return r.rdb }

// RecoveryWindow is the recovery window this registry opens when it finds
// Redis lost the registry (Config.RecoveryWindow).
func (r *Registry) RecoveryWindow() time.Duration { return r.recovery }

// Prefix is the key prefix in use.
func (r *Registry) Prefix() string { return r.prefix }

// Keys. A room's keys share the hash tag {room}; every fleet-wide key has
// the tag {fleet}; each hash slot's mark keys have a tag of that slot (see
// slots.go).
func (r *Registry) ownerKey(room string) string { return r.prefix + "room:{" + room + "}" }
func (r *Registry) epochKey(room string) string { return r.prefix + "room:{" + room + "}:epoch" }
func (r *Registry) metaKey(room string) string  { return r.prefix + "room:{" + room + "}:meta" }
func (r *Registry) fleetKey(name string) string { return r.prefix + "{fleet}:" + name }
func (r *Registry) nodeKey(id string) string    { return r.fleetKey("node:" + id) }
func (r *Registry) nodesKey() string            { return r.fleetKey("nodes") }
func (r *Registry) lockKey(name string) string  { return r.prefix + "lock:" + name }

// RoomLockKey is the key of the redsync mutex that serializes admin
// operations on one room (roomlb ctl move).
func (r *Registry) RoomLockKey(room string) string { return r.lockKey("room:{" + room + "}") }
func (r *Registry) generationKey() string          { return r.fleetKey("generation") }
func (r *Registry) recoveryKey() string            { return r.fleetKey("recovery") }
func (r *Registry) sweepKey() string               { return r.fleetKey("sweep") }
func (r *Registry) slotsKey() string               { return r.fleetKey("slots") }

// slotMarkKey is the mark key of hash slot slot, PREFIX slot:N:{t} (t a
// tag in that slot); slotRecoveryKey its recovery window.
func (r *Registry) slotMarkKey(slot int) string {
	return r.prefix + "slot:" + strconv.Itoa(slot) + ":{" + slotTags()[slot] + "}"
}
func (r *Registry) slotRecoveryKey(slot int) string { return r.slotMarkKey(slot) + ":recovery" }

// Channel is the pub/sub channel of registry events.
func (r *Registry) Channel() string { return r.prefix + "events" }

// ms renders a duration as whole milliseconds for PX arguments, at least 1.
func ms(d time.Duration) string {
	n := d.Milliseconds()
	if n < 1 {
		n = 1
	}
	return strconv.FormatInt(n, 10)
}

// reply is a script's array reply.
type reply []any

func toReply(v any, err error) (reply, error) {
	if err != nil {
		return nil, err
	}
	a, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("registry: unexpected script reply %T", v)
	}
	return a, nil
}

func (a reply) int(i int) int64 {
	if i >= len(a) {
		return 0
	}
	n, _ := a[i].(int64)
	return n
}

func (a reply) str(i int) string {
	if i >= len(a) {
		return ""
	}
	s, _ := a[i].(string)
	return s
}
