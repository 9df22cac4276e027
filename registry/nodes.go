package registry

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/lua"
)

// NodeState is a node's place in its life cycle.
type NodeState string

const (
	// StateActive nodes take new rooms.
	StateActive NodeState = "active"
	// StateDraining nodes take no new rooms and are handing theirs over.
	StateDraining NodeState = "draining"
)

// Node is one sidecar+monolith pair as it announces itself.
type Node struct {
	ID string
	// Addr is where routers reach the sidecar's ingress (host:port).
	Addr    string
	Region  string
	State   NodeState
	Rooms   int
	Clients int
	// Load is the placement score: lower is preferred. Sidecars compute it
	// from rooms and clients relative to Capacity.
	Load float64
	// Capacity is the most clients the node accepts; 0 means no limit.
	Capacity int
	Version  string
	// Started is when the sidecar started.
	Started time.Time
	// Session names one continuous life of the node's heartbeat key: Beat
	// gives a new key this id (a random one when empty) and leaves an
	// existing key's alone. Node and Nodes report the key's. The node's
	// rooms belong to it, and a room of an ended session is free to claim:
	// an id given to Beat must never have been used before (leave it empty,
	// or use a fresh random one), or a new key would revive the rooms of an
	// ended session, which others may hold by then.
	Session string
}

// Heartbeat registers the node or refreshes it; the node counts as alive for
// ttl. It publishes node_up for a new node and node_<state> on a change of
// state.
func (r *Registry) Heartbeat(ctx context.Context, n Node, ttl time.Duration) error {
	_, err := r.Beat(ctx, n, ttl)
	return err
}

// BeatResult is what a heartbeat learned.
type BeatResult struct {
	// Fresh: the node's key was new. For a node that heartbeat before, a
	// new key means Redis lost it (a restart without persistence, a flush,
	// a manual DEL), and with it maybe the node's rooms.
	Fresh bool
	// Generation is the registry's generation: it changes when Redis loses
	// the registry, and a node that registered under an earlier one must
	// re-claim what it serves (Reclaim) before it serves it any longer.
	Generation string
	// Recovery is what is left of the recovery window after such a loss
	// (0: none).
	Recovery time.Duration
	// Session is the node key's session after the heartbeat. A node that
	// knew another one learns that its key lapsed meanwhile: for a moment
	// any router could steal its rooms, so none of the rooms it held under
	// the old session may be served any more.
	Session string
}

// Beat is Heartbeat, and reports what the heartbeat learned. A heartbeat
// that finds the registry lost starts a new generation with a recovery
// window of the longer of ttl and Config.RecoveryWindow.
func (r *Registry) Beat(ctx context.Context, n Node, ttl time.Duration) (BeatResult, error) {
	call, err := r.beatCall(n, ttl)
	if err != nil {
		return BeatResult{}, err
	}
	if err := r.send(ctx, lua.Heartbeat, []*scriptCall{call}, r.replicas > 0); err != nil && call.cmd.Err() == nil {
		call.cmd.SetErr(err)
	}
	return r.beatResult(n.ID, call.cmd)
}

// beatCall is the heartbeat script's call for n.
func (r *Registry) beatCall(n Node, ttl time.Duration) (*scriptCall, error) {
	if err := ValidNode(n.ID); err != nil {
		return nil, err
	}
	if n.State == "" {
		n.State = StateActive
	}
	if n.State != StateActive && n.State != StateDraining {
		return nil, fmt.Errorf("registry: node %s: unknown state %q", n.ID, n.State)
	}
	load := strconv.FormatFloat(n.Load, 'f', -1, 64)
	if n.Session == "" {
		n.Session = rand.Text()
	} else if err := validSession(n.Session); err != nil {
		return nil, err
	}
	return &scriptCall{
		keys: []string{r.nodeKey(n.ID), r.nodesKey(), r.generationKey(), r.recoveryKey(), r.sweepKey()},
		args: []any{n.ID, ms(ttl), load, r.Channel(), string(n.State), ms(max(ttl, r.recovery)),
			n.Session,
			"addr", n.Addr,
			"region", n.Region,
			"rooms", n.Rooms,
			"clients", n.Clients,
			"capacity", n.Capacity,
			"version", n.Version,
			"started", n.Started.UTC().Format(time.RFC3339),
		},
	}, nil
}

// beatResult reads the heartbeat script's reply.
func (r *Registry) beatResult(node string, cmd *redis.Cmd) (BeatResult, error) {
	a, err := toReply(cmd.Result())
	if err != nil {
		return BeatResult{}, fmt.Errorf("heartbeat %s: %w", node, err)
	}
	r.born.sawGeneration(a.str(1))
	return BeatResult{
		Fresh:      a.int(0) == 1,
		Generation: a.str(1),
		Recovery:   time.Duration(a.int(2)) * time.Millisecond,
		Session:    a.str(3),
	}, nil
}

// Deregister removes the node at once (a graceful exit) and publishes
// node_down.
func (r *Registry) Deregister(ctx context.Context, id string) error {
	if err := ValidNode(id); err != nil {
		return err
	}
	if err := lua.Deregister.Run(ctx, r.rdb, []string{r.nodeKey(id), r.nodesKey(), r.sweepKey()}, id, r.Channel()).Err(); err != nil {
		return fmt.Errorf("deregister %s: %w", id, err)
	}
	return nil
}

// Node reads one live node; ErrNodeGone when its heartbeat has expired.
func (r *Registry) Node(ctx context.Context, id string) (Node, error) {
	if err := ValidNode(id); err != nil {
		return Node{}, err
	}
	h, err := r.rdb.HGetAll(ctx, r.nodeKey(id)).Result()
	if err != nil {
		return Node{}, fmt.Errorf("node %s: %w", id, err)
	}
	if len(h) == 0 {
		return Node{}, fmt.Errorf("node %s: %w", id, ErrNodeGone)
	}
	return parseNode(id, h), nil
}

// Nodes lists the live nodes, least loaded first. Members of the load index
// whose heartbeat has expired are left out (housekeeping prunes them).
func (r *Registry) Nodes(ctx context.Context) ([]Node, error) {
	ids, err := r.rdb.ZRange(ctx, r.nodesKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, r.nodeKey(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}
	out := make([]Node, 0, len(ids))
	for i, id := range ids {
		if h := cmds[i].Val(); len(h) > 0 {
			out = append(out, parseNode(id, h))
		}
	}
	return out, nil
}

// Alive reports whether the node's heartbeat key exists.
func (r *Registry) Alive(ctx context.Context, id string) (bool, error) {
	if err := ValidNode(id); err != nil {
		return false, err
	}
	n, err := r.rdb.Exists(ctx, r.nodeKey(id)).Result()
	return n == 1, err
}

// HeartbeatLeft is how long the node's heartbeat key has left to live in
// Redis; 0 when it is gone. A router waiting to steal a room from an owner
// that does not answer sleeps that long instead of polling.
func (r *Registry) HeartbeatLeft(ctx context.Context, id string) (time.Duration, error) {
	if err := ValidNode(id); err != nil {
		return 0, err
	}
	ms, err := r.rdb.PTTL(ctx, r.nodeKey(id)).Result()
	if err != nil {
		return 0, err
	}
	// go-redis passes PTTL's -2 (no key) and -1 (no TTL) on as
	// durations of -2 and -1; a key without a TTL never runs out.
	switch ms {
	case -2:
		return 0, nil
	case -1:
		return time.Duration(math.MaxInt64), nil
	}
	return ms, nil
}

// Prune drops the nodes whose heartbeat has expired from the load index and
// publishes node_down for each; it returns their ids. Housekeeping runs it
// under a lock so that one sidecar does it at a time; it is safe without.
func (r *Registry) Prune(ctx context.Context) ([]string, error) {
	ids, err := r.rdb.ZRange(ctx, r.nodesKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, 2, 2+len(ids))
	keys[0], keys[1] = r.nodesKey(), r.sweepKey()
	args := make([]any, 1, 1+len(ids))
	args[0] = r.Channel()
	for _, id := range ids {
		keys = append(keys, r.nodeKey(id))
		args = append(args, id)
	}
	removed, err := lua.Prune.Run(ctx, r.rdb, keys, args...).StringSlice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("prune: %w", err)
	}
	return removed, nil
}

func parseNode(id string, h map[string]string) Node {
	n := Node{
		ID:      id,
		Addr:    h["addr"],
		Region:  h["region"],
		State:   NodeState(h["state"]),
		Version: h["version"],
		Session: h["session"],
	}
	n.Rooms, _ = strconv.Atoi(h["rooms"])
	n.Clients, _ = strconv.Atoi(h["clients"])
	n.Capacity, _ = strconv.Atoi(h["capacity"])
	n.Load, _ = strconv.ParseFloat(h["load"], 64)
	n.Started, _ = time.Parse(time.RFC3339, h["started"])
	return n
}
