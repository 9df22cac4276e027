package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

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
	return r.send(ctx, script, calls, false)
}

// durable runs script once, as Script.Run does, and, when the registry
// waits for replicas (Config.Replicas), WAIT after it on the same
// connection: the reply counts only once enough replicas have the write.
// Otherwise the error is ErrNotReplicated (wrapped), whatever the script
// answered.
func (r *Registry) durable(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := &scriptCall{keys: keys, args: args}
	if err := r.send(ctx, script, []*scriptCall{c}, r.replicas > 0); err != nil && c.cmd.Err() == nil {
		c.cmd.SetErr(err)
	}
	return c.cmd
}

// send runs calls of script in one pipeline, with WAIT after them when
// wait is set. In a Redis Cluster, WAIT counts the replicas of the
// connection it is sent on, so the calls are sent master by master, each
// group with its own WAIT, on that master's connection.
func (r *Registry) send(ctx context.Context, script *redis.Script, calls []*scriptCall, wait bool) error {
	return r.sendWith(ctx, script, calls, wait, nil)
}

// sendWith is send with the commands extra adds to the pipeline after the
// calls (before WAIT); on a Redis Cluster with wait set, extra must be nil.
func (r *Registry) sendWith(ctx context.Context, script *redis.Script, calls []*scriptCall, wait bool, extra func(redis.Pipeliner)) error {
	cc, ok := r.rdb.(*redis.ClusterClient)
	if !ok || !wait {
		return r.sendOn(ctx, r.rdb, script, calls, wait, extra)
	}
	type group struct {
		conn  *redis.Client
		calls []*scriptCall
	}
	var groups []*group
	byAddr := map[string]*group{}
	for _, c := range calls {
		m, err := cc.MasterForKey(ctx, c.keys[0])
		if err != nil {
			return err
		}
		g := byAddr[m.Options().Addr]
		if g == nil {
			g = &group{conn: m}
			byAddr[m.Options().Addr] = g
			groups = append(groups, g)
		}
		g.calls = append(g.calls, c)
	}
	var errs []error
	for _, g := range groups {
		if err := r.sendOn(ctx, g.conn, script, g.calls, wait, nil); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *Registry) sendOn(ctx context.Context, conn redis.Cmdable, script *redis.Script, calls []*scriptCall, wait bool, extra func(redis.Pipeliner)) error {
	send := func(useEval bool) error {
		var acks *redis.Cmd
		_, err := conn.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range calls {
				if useEval {
					c.cmd = script.Eval(ctx, p, c.keys, c.args...)
				} else {
					c.cmd = script.EvalSha(ctx, p, c.keys, c.args...)
				}
			}
			if extra != nil {
				extra(p)
			}
			if wait {
				acks = p.Do(ctx, "WAIT", r.replicas, r.waitFor.Milliseconds())
			}
			return nil
		})
		if acks != nil && (err == nil || isScriptReplyError(err)) {
			switch n, werr := acks.Int64(); {
			case werr != nil:
				err = fmt.Errorf("%w: WAIT: %v", ErrNotReplicated, werr)
			case n < int64(r.replicas):
				err = fmt.Errorf("%w: %d of %d within %v", ErrNotReplicated, n, r.replicas, r.waitFor)
			}
		}
		return err
	}
	err := send(false)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		err = send(true)
	}
	return err
}
