package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/lua"
)

// RenewBatch is how many rooms one renew script call carries. All batches of
// one Renew go out in one pipeline, so 10,000 rooms cost one round trip (two
// more when the script has to be loaded again).
const RenewBatch = 1000

// Renewal is the outcome of one Renew.
type Renewal struct {
	// Sent is when the renewal was sent, on this process's monotonic clock.
	// A renewed lease is valid until Sent + ttl at the latest: the owner
	// must stop serving a room before then unless it renews again
	// (self-fencing measures from here, not from the reply).
	Sent time.Time
	// Lost are the leases the node no longer holds: the room is unowned or
	// owned by someone else (Owner says who). They were not renewed.
	Lost []Lost
}

// Lost is a lease that a renewal found gone.
type Lost struct {
	Lease Lease
	Owner Owner // zero when the room is unowned
}

// Renew extends the leases of one node's rooms to ttl, in batches of
// RenewBatch rooms per script call, all pipelined. Leases of other nodes in
// leases are an error. A lease the node no longer holds is reported in Lost,
// never extended.
func (r *Registry) Renew(ctx context.Context, node string, leases []Lease, ttl time.Duration) (Renewal, error) {
	if err := ValidNode(node); err != nil {
		return Renewal{}, err
	}
	for _, l := range leases {
		if l.Node != node {
			return Renewal{}, fmt.Errorf("renew: lease of %s at %d belongs to %s, not %s", l.Room, l.Epoch, l.Node, node)
		}
	}
	out := Renewal{Sent: time.Now()}
	if len(leases) == 0 {
		return out, nil
	}
	type batch struct {
		leases []Lease
		call   scriptCall
	}
	var batches []*batch
	var calls []*scriptCall
	for start := 0; start < len(leases); start += RenewBatch {
		end := min(start+RenewBatch, len(leases))
		b := &batch{leases: leases[start:end]}
		b.call.keys = make([]string, len(b.leases))
		b.call.args = make([]any, 2+len(b.leases))
		b.call.args[0], b.call.args[1] = node, ms(ttl)
		for i, l := range b.leases {
			b.call.keys[i] = r.ownerKey(l.Room)
			b.call.args[2+i] = l.epoch()
		}
		batches = append(batches, b)
		calls = append(calls, &b.call)
	}
	// Renewing twice (after a NOSCRIPT) is harmless: the second call extends
	// the same leases.
	if err := r.pipeline(ctx, lua.Renew, calls); err != nil {
		return out, fmt.Errorf("renew %d rooms of %s: %w", len(leases), node, err)
	}
	for _, b := range batches {
		a, err := toReply(b.call.cmd.Result())
		if err != nil {
			return out, fmt.Errorf("renew %d rooms of %s: %w", len(leases), node, err)
		}
		for j := 0; j+1 < len(a); j += 2 {
			i := int(a.int(j)) - 1
			if i < 0 || i >= len(b.leases) {
				return out, fmt.Errorf("renew: script reported room index %d of %d", i+1, len(b.leases))
			}
			lost := Lost{Lease: b.leases[i]}
			if v := a.str(j + 1); v != "" {
				if lost.Owner, err = parseOwner(v); err != nil {
					return out, err
				}
			}
			out.Lost = append(out.Lost, lost)
		}
	}
	return out, nil
}

// scriptCall is one call of a script in a pipeline.
type scriptCall struct {
	keys []string
	args []any
	cmd  *redis.Cmd
}

// pipeline runs every call of script in one round trip (EVALSHA), and once
// more with the script's body (EVAL) when the server's script cache is
// empty (Redis restarted, SCRIPT FLUSH): the server caches it for the next
// time. Per-call errors stay in each call's cmd.
func (r *Registry) pipeline(ctx context.Context, script *redis.Script, calls []*scriptCall) error {
	send := func(useEval bool) error {
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range calls {
				if useEval {
					c.cmd = script.Eval(ctx, p, c.keys, c.args...)
				} else {
					c.cmd = script.EvalSha(ctx, p, c.keys, c.args...)
				}
			}
			return nil
		})
		return err
	}
	err := send(false)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		err = send(true)
	}
	return err
}
