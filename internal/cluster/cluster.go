// Package cluster starts a whole roomlb cluster in one process, on
// loopback: monoliths (the Node reference monolith or the Go fake), a
// sidecar for each, and routers, over a given Redis. `roomlb dev` and the
// end-to-end tests use it.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/internal/nodemonolith"
	"github.com/roomlb/roomlb/ott/otttest"
	"github.com/roomlb/roomlb/registry"
	"github.com/roomlb/roomlb/router"
	"github.com/roomlb/roomlb/sidecar"
)

// MonolithKind says which monolith the nodes run.
type MonolithKind int

const (
	// NodeMonolith is the Node reference monolith of testdata/monolith, a
	// process.
	NodeMonolith MonolithKind = iota
	// FakeMonolith is the Go fake of ott/otttest, in this process.
	FakeMonolith
)

// Options configures a cluster. RedisURL is required.
type Options struct {
	RedisURL string
	// Registry, when set, is the registry's Redis (a Redis Cluster's
	// client, say); RedisURL is then the monoliths' own Redis only, which
	// the sidecars read as their --monolith-redis-url. The cluster does not
	// close it.
	Registry redis.UniversalClient
	Nodes    int // 0 means 3
	Routers  int // 0 means 2
	Monolith MonolithKind
	// MonolithDir is the Node reference monolith's folder; "" means
	// nodemonolith.Dir().
	MonolithDir string
	// Secret is the sidecars' shared secret; "" means a random one.
	Secret string
	// MonolithEnv is extra environment for Node monoliths (KEY=value).
	MonolithEnv []string
	// FakeConfig adjusts the config of FakeMonolith monoliths.
	FakeConfig func(*otttest.Config)
	// Sidecar and Router adjust the config of node i's sidecar and of
	// router i.
	Sidecar func(i int, c *sidecar.Config)
	Router  func(i int, c *router.Config)
	// Log receives the components' logs; MonolithLog the Node monoliths'
	// stderr. nil discards them.
	Log         *slog.Logger
	MonolithLog io.Writer
}

// Cluster is a running cluster.
type Cluster struct {
	Registry *registry.Registry
	Secret   string
	Routers  []*Router
	Nodes    []*Node

	opts Options
	rdb  *redis.Client
	wg   sync.WaitGroup
}

// Router is one running router.
type Router struct {
	Addr, AdminAddr string
	stop            context.CancelFunc
	done            chan struct{}
}

// Node is one monolith with its sidecar.
type Node struct {
	ID          string
	SidecarAddr string
	// HTTPAddr and BalancerAddr are the monolith's.
	HTTPAddr, BalancerAddr string
	Sidecar                *sidecar.Sidecar
	// Fake is the Go fake monolith (nil for Node monoliths); Process the
	// Node one (nil for fakes).
	Fake    *otttest.Monolith
	Process *nodemonolith.Process

	stop context.CancelFunc
	done chan struct{}
	err  error
}

// Start starts a cluster and waits until every node is registered.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Routers == 0 {
		o.Routers = 2
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	opt, err := redis.ParseURL(o.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("cluster: redis url: %w", err)
	}
	opt.ContextTimeoutEnabled = true // as roomlb's own commands: context deadlines bound socket I/O
	if o.Secret == "" {
		o.Secret = randomHex(16)
	}
	c := &Cluster{opts: o, rdb: redis.NewClient(opt), Secret: o.Secret}
	var reg redis.UniversalClient = c.rdb
	if o.Registry != nil {
		reg = o.Registry
	}
	c.Registry, err = registry.New(reg, registry.Config{Logger: o.Log})
	if err != nil {
		return nil, err
	}
	// The cluster's Redis is a new one (dev's own, a test's): its first
	// claims need not wait out a recovery window.
	if err := c.Registry.Bootstrap(ctx); err != nil {
		c.rdb.Close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	for i := range o.Nodes {
		if _, err := c.AddNode(ctx, fmt.Sprintf("node-%d", i+1)); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for i := range o.Routers {
		if err := c.addRouter(i); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// AddNode starts one more monolith with its sidecar and waits until it is
// registered.
func (c *Cluster) AddNode(ctx context.Context, id string) (*Node, error) {
	o := c.opts
	n := &Node{ID: id, done: make(chan struct{})}
	switch o.Monolith {
	case NodeMonolith:
		p, err := nodemonolith.Launch(nodemonolith.Options{Dir: o.MonolithDir, RedisURL: o.RedisURL, Env: o.MonolithEnv, Log: o.MonolithLog})
		if err != nil {
			return nil, err
		}
		n.Process, n.HTTPAddr, n.BalancerAddr = p, p.HTTPAddr, p.BalancerAddr
	case FakeMonolith:
		cfg := otttest.Config{Redis: c.rdb, Logger: o.Log.With("monolith", id)}
		if o.FakeConfig != nil {
			o.FakeConfig(&cfg)
		}
		m, err := otttest.New(cfg)
		if err != nil {
			return nil, err
		}
		n.Fake, n.HTTPAddr, n.BalancerAddr = m, m.HTTPAddr(), m.BalancerAddr()
	}
	cfg := sidecar.Config{
		NodeID:   id,
		Listen:   "127.0.0.1:0",
		Monolith: "ws://" + n.BalancerAddr + "/",
		Secret:   c.Secret,
		Registry: c.Registry,
		Logger:   o.Log, // the sidecar adds node=ID itself
	}
	if o.Registry != nil {
		cfg.MonolithRedis = c.rdb
	}
	if o.Sidecar != nil {
		o.Sidecar(len(c.Nodes), &cfg)
	}
	s, err := sidecar.New(cfg)
	if err != nil {
		n.stopMonolith()
		return nil, err
	}
	n.Sidecar, n.SidecarAddr = s, s.Addr()
	sctx, stop := context.WithCancel(context.Background())
	n.stop = stop
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		n.err = s.Run(sctx)
		close(n.done)
	}()
	c.Nodes = append(c.Nodes, n)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ok, _ := c.Registry.Alive(ctx, id); ok {
			return n, nil
		}
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("cluster: node %s not registered within 10s", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *Cluster) addRouter(i int) error {
	cfg := router.Config{Registry: c.Registry, Secret: c.Secret, Logger: c.opts.Log.With("router", i+1)}
	if c.opts.Router != nil {
		c.opts.Router(i, &cfg)
	}
	r, err := router.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	rt := &Router{Addr: ln.Addr().String(), AdminAddr: admin.Addr().String(), stop: stop, done: make(chan struct{})}
	c.Routers = append(c.Routers, rt)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(rt.done)
		if err := r.Serve(ctx, ln, admin); err != nil {
			c.opts.Log.Error("cluster: router stopped", "err", err)
		}
	}()
	return nil
}

// Drain drains node n (as SIGTERM would) and waits for its sidecar to stop;
// it returns what the sidecar's Run returned. The monolith stays up.
func (n *Node) Drain() error {
	n.stop()
	<-n.done
	return n.err
}

// Done is closed when the node's sidecar has stopped.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is what the sidecar's Run returned, once Done is closed.
func (n *Node) Err() error { return n.err }

// Kill kills the node at once, monolith and sidecar alike, as a crashed
// machine: nothing is released or drained.
func (n *Node) Kill() {
	n.Sidecar.Kill()
	n.stop()
	<-n.done
	if n.Process != nil {
		n.Process.Kill()
	}
	if n.Fake != nil {
		n.Fake.Close()
	}
}

// KillSidecar kills the node's sidecar alone, as a crashed process: its
// clients' connections end without a close frame and nothing is released;
// the monolith goes on, its link to the sidecar gone.
func (n *Node) KillSidecar() {
	n.Sidecar.Kill()
	n.stop()
	<-n.done
}

func (n *Node) stopMonolith() {
	if n.Process != nil {
		n.Process.Stop(5 * time.Second) // killed if it does not exit
	}
	if n.Fake != nil {
		n.Fake.Close()
	}
}

// Stop stops the whole cluster, in the order that leaves nothing talking to
// a part already gone: the routers first (their clients get a close they
// reconnect on, and no router is left to dial a stopped sidecar), then every
// sidecar drains, side by side, while the monoliths and Redis still run;
// once all have stopped the monoliths are stopped, and the cluster's Redis
// connection is closed last. The caller stops Redis after Stop.
func (c *Cluster) Stop() {
	for _, r := range c.Routers {
		r.stop()
	}
	for _, r := range c.Routers {
		<-r.done
	}
	for _, n := range c.Nodes {
		n.stop()
	}
	for _, n := range c.Nodes {
		<-n.done
	}
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.stopMonolith()
		}()
	}
	wg.Wait()
	c.wg.Wait()
	c.rdb.Close()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
