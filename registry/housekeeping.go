package registry

import (
	"context"
	"errors"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
)

// DefaultHousekeepingInterval is how often housekeeping runs.
const DefaultHousekeepingInterval = 5 * time.Second

// HandoffIdle is how long a taken handoff may stay unacknowledged before
// housekeeping offers it again.
const HandoffIdle = 15 * time.Second

// StaleSteps is how many DropStale steps one housekeeping pass takes at
// most: about StaleSteps x StaleScan room keys looked at per pass, so a
// pass stays short whatever the number of rooms.
const StaleSteps = 10

// Housekeeper runs the registry's singleton chores (pruning dead nodes from
// the load index, offering again the handoffs a dead taker left, dropping
// the owner keys of rooms whose owner's session has ended) on whichever of
// many processes holds a redsync lock. The
// lock is an efficiency lock: two housekeepers running at once would only do
// the same idempotent work twice, so redsync's guarantees are enough (room
// ownership, which needs fencing, never goes through it).
type Housekeeper struct {
	reg      *Registry
	mutex    *redsync.Mutex
	interval time.Duration
	held     bool
	// The sweep for stale owner keys: cursor is where it goes on (zero:
	// none under way); sweeping is the sweep counter it answers, swept the one
	// the last finished sweep answered ("" before the first: a new
	// housekeeper sweeps once).
	cursor          SweepCursor
	sweeping, swept string

	// OnPrune, when set, is called with the nodes each pass removed.
	OnPrune func(removed []string)
}

// NewHousekeeper returns a housekeeper that works every interval (0 means
// DefaultHousekeepingInterval) while it holds the housekeeping lock.
func (r *Registry) NewHousekeeper(interval time.Duration) *Housekeeper {
	if interval <= 0 {
		interval = DefaultHousekeepingInterval
	}
	rs := redsync.New(goredis.NewPool(r.rdb))
	return &Housekeeper{
		reg: r,
		// The lock outlives two intervals, so the holder keeps it by
		// extending it every pass; a holder that dies loses it within three.
		mutex: rs.NewMutex(r.lockKey("housekeeping"),
			redsync.WithExpiry(3*interval),
			redsync.WithTries(1),
		),
		interval: interval,
	}
}

// Run works until ctx ends, then gives the lock up and returns nil.
func (h *Housekeeper) Run(ctx context.Context) error {
	defer func() {
		// ctx is done: unlock with a fresh one. Unlocking a lock this
		// housekeeper does not hold changes nothing (redsync compares values).
		uctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h.mutex.UnlockContext(uctx)
		cancel()
		h.held = false
	}()
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for ctx.Err() == nil {
		h.Pass(ctx)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return nil
}

// Pass takes or keeps the lock and, if it holds it, does every chore once. It reports
// whether this housekeeper held the lock. Run calls it; tests may too.
func (h *Housekeeper) Pass(ctx context.Context) bool {
	if h.held {
		if ok, err := h.mutex.ExtendContext(ctx); err != nil || !ok {
			h.held = false
		}
	}
	if !h.held {
		err := h.mutex.TryLockContext(ctx)
		if err != nil {
			// Most often another housekeeper holds it; a Redis error shows
			// up in every other part of the process too.
			h.reg.log.Debug("registry: housekeeping lock not taken", "err", err)
			return false
		}
		h.held = true
	}
	if n, err := h.reg.RequeueHandoffs(ctx, HandoffIdle); err != nil {
		h.reg.log.Warn("registry: requeue handoffs", "err", err)
	} else if n > 0 {
		h.reg.log.Info("registry: offered stuck handoffs again", "rooms", n)
	}
	h.sweep(ctx)
	removed, err := h.reg.Prune(ctx)
	if err != nil {
		h.reg.log.Warn("registry: prune", "err", err)
		return true
	}
	if len(removed) > 0 {
		h.reg.log.Info("registry: pruned dead nodes", "nodes", removed)
		if h.OnPrune != nil {
			h.OnPrune(removed)
		}
	}
	return true
}

// sweep takes up to StaleSteps steps of a sweep for the owner keys of rooms
// whose owner's session has ended. A sweep runs only when a session may
// have ended since the last one (the sweep counter, raised by a new
// heartbeat key, a deregistration and a prune, has changed), so a fleet at
// rest costs Redis one GET per pass, whatever its number of rooms.
func (h *Housekeeper) sweep(ctx context.Context) {
	if h.cursor == (SweepCursor{}) {
		want, err := h.reg.rdb.Get(ctx, h.reg.sweepKey()).Result()
		switch {
		case errors.Is(err, redis.Nil):
			want = "0"
		case err != nil:
			h.reg.log.Warn("registry: drop stale rooms", "err", err)
			return
		}
		if want == h.swept {
			return
		}
		h.reg.log.Debug("registry: sweeping for rooms of ended sessions", "counter", want, "last", h.swept)
		h.sweeping = want
	}
	dropped := 0
	for range StaleSteps {
		next, n, err := h.reg.DropStale(ctx, h.cursor)
		if err != nil {
			h.reg.log.Warn("registry: drop stale rooms", "err", err)
			break
		}
		h.cursor, dropped = next, dropped+n
		if next == (SweepCursor{}) {
			// Done: a session that ended after the sweep began raised
			// the counter again, and the next pass sweeps again.
			h.swept = h.sweeping
			break
		}
	}
	if dropped > 0 {
		h.reg.log.Info("registry: dropped the keys of rooms whose owner is gone", "rooms", dropped)
	}
}
