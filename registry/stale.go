package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/lua"
)

// A room's owner key has no TTL: it names the owner's session and lives as
// long as nobody releases or takes the room. Rooms whose owner died and that
// nobody asks for again would keep their keys forever, so housekeeping drops
// the keys that name an ended session, a bounded batch per pass
// (DropStale). The epoch counter and the metadata expire on their own.

// StaleScan is how many keys one DropStale step asks SCAN to look at.
const StaleScan = 1000

// SweepCursor is where a sweep for stale owner keys goes on: the master (of
// a Redis Cluster; 0 on a single Redis) and the SCAN cursor in its
// keyspace. The zero value starts a sweep, and a sweep is done when
// DropStale returns the zero value again.
type SweepCursor struct {
	master int
	at     uint64
}

// DropStale looks at the owner keys of one SCAN step from cursor (about
// StaleScan keys) and deletes those whose owner's session has ended. It
// returns the cursor of the next step (the zero value once a whole sweep is
// done) and how many keys it deleted. During a recovery window it deletes
// nothing: then a heartbeat key may be missing only because Redis lost it.
func (r *Registry) DropStale(ctx context.Context, cursor SweepCursor) (next SweepCursor, dropped int, err error) {
	_, left, err := r.Generation(ctx)
	if err != nil {
		return cursor, 0, err
	}
	if left > 0 {
		return cursor, 0, nil
	}
	masters, err := r.masters(ctx)
	if err != nil {
		return cursor, 0, fmt.Errorf("drop stale rooms: %w", err)
	}
	if cursor.master >= len(masters) {
		return SweepCursor{}, 0, nil // the cluster has fewer masters now
	}
	// Owner keys are PREFIX room:{r}; the epoch and meta keys of a room
	// end in :epoch and :meta, which the pattern does not match.
	keys, at, err := masters[cursor.master].Scan(ctx, cursor.at, r.prefix+"room:{*}", StaleScan).Result()
	if err != nil {
		return cursor, 0, fmt.Errorf("drop stale rooms: %w", err)
	}
	next = SweepCursor{master: cursor.master, at: at}
	if at == 0 {
		next = SweepCursor{master: cursor.master + 1}
		if next.master == len(masters) {
			next = SweepCursor{}
		}
	}
	if len(keys) == 0 {
		return next, 0, nil
	}
	gets := make([]*redis.StringCmd, len(keys))
	if _, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			gets[i] = p.Get(ctx, k)
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return cursor, 0, fmt.Errorf("drop stale rooms: %w", err)
	}
	owners := make([]Owner, len(keys))
	for i, g := range gets {
		owners[i], _ = parseOwner(g.Val()) // zero when gone meanwhile
	}
	sessions, err := r.sessions(ctx, owners)
	if err != nil {
		return cursor, 0, fmt.Errorf("drop stale rooms: %w", err)
	}
	var calls []*scriptCall
	for i, o := range owners {
		if o.Node == "" || sessions[o.Node] == o.Session {
			continue
		}
		// The session has ended (a session never lives again), so the
		// room is free; the script deletes the key only if it still
		// names that session.
		calls = append(calls, &scriptCall{keys: []string{keys[i]}, args: []any{o.value()}})
	}
	if len(calls) == 0 {
		return next, 0, nil
	}
	if err := r.pipeline(ctx, lua.Drop, calls); err != nil {
		return cursor, 0, fmt.Errorf("drop stale rooms: %w", err)
	}
	for _, c := range calls {
		if n, _ := c.cmd.Int(); n == 1 {
			dropped++
		}
	}
	return next, dropped, nil
}

// sessions reads the live session of every node named by owners (zero
// owners skipped), in one round trip: "" for a node whose heartbeat key is
// gone.
func (r *Registry) sessions(ctx context.Context, owners []Owner) (map[string]string, error) {
	cmds := map[string]*redis.StringCmd{}
	for _, o := range owners {
		if o.Node != "" {
			cmds[o.Node] = nil
		}
	}
	if len(cmds) == 0 {
		return nil, nil
	}
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for node := range cmds {
			cmds[node] = p.HGet(ctx, r.nodeKey(node), "session")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make(map[string]string, len(cmds))
	for node, c := range cmds {
		out[node] = c.Val()
	}
	return out, nil
}

// masters are the servers that hold the registry's keys: every master of a
// Redis Cluster, in the order of their addresses; the one client otherwise.
func (r *Registry) masters(ctx context.Context) ([]redis.Cmdable, error) {
	cc, ok := r.rdb.(*redis.ClusterClient)
	if !ok {
		return []redis.Cmdable{r.rdb}, nil
	}
	var (
		mu  sync.Mutex
		out []*redis.Client
	)
	err := cc.ForEachMaster(ctx, func(_ context.Context, m *redis.Client) error {
		mu.Lock()
		out = append(out, m)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *redis.Client) int { return strings.Compare(a.Options().Addr, b.Options().Addr) })
	cmds := make([]redis.Cmdable, len(out))
	for i, m := range out {
		cmds[i] = m
	}
	return cmds, nil
}
