package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/lua"
)

// Loss of part of the registry.
//
// A single Redis loses all of its data at once, and the fleet's generation
// key with it (see recovery.go). A Redis Cluster shard may lose its data
// alone (a restart without persistence, a flush) while the fleet's keys,
// on another shard, keep theirs: the generation does not change, yet the
// room keys of that shard's slots are gone while their owners still serve
// the rooms. Each hash slot therefore has a mark key on the slot's own
// shard (no TTL), given by the first claim of a room of the slot and
// returned with every lease (Lease.Mark):
//
//   - A claim that finds no mark starts a new mark and a recovery window
//     for the slot, during which no room of the slot without an owner is
//     taken (claim.lua); only its owner re-claims it (Reclaim). A slot is
//     put in use (its bit in the fleet's slot bitmap) only once it has its
//     mark, and a claim of a slot not in use gives it one first, so a
//     missing mark is a loss.
//   - Owners check their slots' marks with every heartbeat (BeatVerified): per
//     shard the mark of the lease held longest, whose mark is surely older
//     than any loss that lease survived, so a loss of the whole shard is
//     seen; and the mark of every slot not checked before or that moved to
//     another shard since (a slot may move without its data). A heartbeat
//     whose check failed does not extend the rooms, as one that did not
//     reach Redis; a mark that differs has the rooms of its shard
//     re-claimed, served meanwhile only until the last heartbeat before.
//
// So an owner stops serving a room of a lost slot less than a heartbeat TTL
// after the loss unless it re-claimed it, and the slot's window (at least
// the longest heartbeat TTL) outlasts that. On a single Redis the marks
// cost one GET per heartbeat, in the heartbeat's round trip
// (BeatVerified), and add nothing to the generation's guard.

// A Verifier checks one node's leases against the marks of their hash
// slots (see BeatVerified). It remembers which shard each slot was last checked
// on; one per node. It is safe for concurrent use.
type Verifier struct {
	reg *Registry
	mu  sync.Mutex
	at  map[int]string // slot -> shard it was last found on with the mark expected
}

// NewVerifier returns a Verifier of leases in this registry.
func (r *Registry) NewVerifier() *Verifier {
	return &Verifier{reg: r, at: map[int]string{}}
}

// shard names the Redis server that serves slot: its master's address in
// a Redis Cluster, "" otherwise.
func (r *Registry) shard(ctx context.Context, slot int) (string, error) {
	c, ok := r.rdb.(*redis.ClusterClient)
	if !ok {
		return "", nil
	}
	m, err := c.MasterForKey(ctx, r.slotMarkKey(slot))
	if err != nil {
		return "", err
	}
	return m.Options().Addr, nil
}

// verifyPlan is one check of marks (BeatVerified): the marks to read, then what they say. v.mu is
// held from plan to finish.
type verifyPlan struct {
	v       *Verifier
	leases  []Lease
	shardOf []string
	checks  []*markCheck
}

type markCheck struct {
	slot, lease int
	shard       string
	get         *redis.StringCmd
}

// plan picks the marks to read for leases, which must be in the order they
// were granted in, the oldest first: per shard, the mark of the slot of its
// oldest lease, and the mark of every slot not checked before or that moved
// to another shard. A lease without a Mark is always suspect.
func (v *Verifier) plan(ctx context.Context, leases []Lease) (*verifyPlan, error) {
	p := &verifyPlan{v: v, leases: leases, shardOf: make([]string, len(leases))}
	seenShard := map[string]bool{}
	seenSlot := map[int]bool{}
	shards := map[int]string{} // slot -> shard, for this call
	for i, l := range leases {
		slot := RoomSlot(l.Room)
		shard, ok := shards[slot]
		if !ok {
			var err error
			if shard, err = v.reg.shard(ctx, slot); err != nil {
				return nil, fmt.Errorf("verify: %w", err)
			}
			shards[slot] = shard
		}
		p.shardOf[i] = shard
		if l.Mark == "" {
			continue
		}
		rep := !seenShard[shard]
		seenShard[shard] = true
		if at, ok := v.at[slot]; (rep || !ok || at != shard) && !seenSlot[slot] {
			seenSlot[slot] = true
			p.checks = append(p.checks, &markCheck{slot: slot, lease: i, shard: shard})
		}
	}
	return p, nil
}

// queue adds the reads of the marks to pipe.
func (p *verifyPlan) queue(ctx context.Context, pipe redis.Pipeliner) {
	for _, c := range p.checks {
		c.get = pipe.Get(ctx, p.v.reg.slotMarkKey(c.slot))
	}
}

// finish returns the suspect leases from the marks read, and remembers the
// slots found as expected.
func (p *verifyPlan) finish() (suspect []int) {
	lost := map[string]bool{}
	for _, c := range p.checks {
		if c.get.Val() != p.leases[c.lease].Mark {
			lost[c.shard] = true
			delete(p.v.at, c.slot)
			continue
		}
		p.v.at[c.slot] = c.shard
	}
	for i, l := range p.leases {
		if l.Mark == "" || lost[p.shardOf[i]] {
			suspect = append(suspect, i)
		}
	}
	return suspect
}

// BeatVerified is Beat and the check that Redis lost none of the room keys
// of leases since they were granted (see above, and plan), in one round
// trip on a single
// Redis (or Sentinel's master); on a Redis Cluster, where the marks are on
// other shards, the check follows the heartbeat. An error means the
// heartbeat or the check failed: a heartbeat counts only once its rooms'
// marks were checked. The suspect leases are returned by index: every
// lease of a shard where a mark checked was not the one expected.
func (r *Registry) BeatVerified(ctx context.Context, n Node, ttl time.Duration, v *Verifier, leases []Lease) (BeatResult, []int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	p, err := v.plan(ctx, leases)
	if err != nil {
		return BeatResult{}, nil, err
	}
	call, err := r.beatCall(n, ttl)
	if err != nil {
		return BeatResult{}, nil, err
	}
	if _, cluster := r.rdb.(*redis.ClusterClient); cluster || len(p.checks) == 0 {
		if err := r.sendWith(ctx, lua.Heartbeat, []*scriptCall{call}, r.replicas > 0, nil); err != nil && call.cmd.Err() == nil {
			call.cmd.SetErr(err)
		}
		res, err := r.beatResult(n.ID, call.cmd)
		if err != nil {
			return res, nil, err
		}
		if len(p.checks) == 0 {
			return res, p.finish(), nil
		}
		_, err = r.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			p.queue(ctx, pipe)
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return res, nil, fmt.Errorf("verify: %w", err)
		}
		return res, p.finish(), nil
	}
	err = r.sendWith(ctx, lua.Heartbeat, []*scriptCall{call}, r.replicas > 0, func(pipe redis.Pipeliner) { p.queue(ctx, pipe) })
	if err != nil && !errors.Is(err, redis.Nil) && !isScriptReplyError(err) {
		if call.cmd.Err() == nil {
			call.cmd.SetErr(err)
		}
	}
	res, err := r.beatResult(n.ID, call.cmd)
	if err != nil {
		return res, nil, err
	}
	for _, c := range p.checks {
		if err := c.get.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return res, nil, fmt.Errorf("verify: %w", err)
		}
	}
	return res, p.finish(), nil
}
