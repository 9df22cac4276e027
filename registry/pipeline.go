package registry

import (
	"context"

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
