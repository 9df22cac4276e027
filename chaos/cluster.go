package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// cluster is one phase's processes: Redis, monoliths with their sidecars
// (each sidecar reaching Redis through a linkProxy), routers. Every address
// is fixed when the cluster starts, so a process started again comes back
// where clients and peers expect it.
//
// In a Sentinel phase the registry's Redis is a master with two replicas
// and three sentinels, which sidecars and routers reach through go-redis's
// failover client (no link proxies: the master's address comes from the
// sentinels); the monoliths, which do not speak Sentinel, keep a Redis of
// their own for their rooms' state.
type cluster struct {
	dir       string
	hb        time.Duration
	secret    string
	redisAddr string        // the registry's Redis; in a Sentinel phase, the monoliths'
	rdb       *redis.Client // the registry's Redis (through the sentinels in a Sentinel phase): FLUSHALL
	state     *redis.Client // the monoliths' Redis: their rooms' state
	serveLog  bool          // the sidecars write --serve-log files
	// The routers' --creates-per-minute and --max-conns-per-addr; 0 when
	// the binary's router has no such flag (an older roomlb).
	createsPerMinute, perAddr int

	redis   *component
	nodes   []*node
	routers []*routerProc
	// A Sentinel phase's registry: servers[0] is the first master.
	servers   []*redisServer
	sentinels []*redisServer
	exits     *exitLog
	wg        sync.WaitGroup // exit watchers
}

// sentinelMaster is the name the sentinels know the registry's master by.
const sentinelMaster = "roomlb"

// redisServer is a redis-server of a Sentinel phase: a master, a replica
// or a sentinel.
type redisServer struct {
	*component
	addr string
	// replicaOf is the master the next start replicates ("" for none):
	// a killed master comes back as a replica of the one promoted.
	replicaOf string
}

// node is a monolith and its sidecar.
type node struct {
	id       string
	monolith *component
	sidecar  *component
	link     *linkProxy
	addr     string // sidecar ingress
	serveLog string // its --serve-log file
}

// routerProc is one router.
type routerProc struct {
	*component
	addr, admin string
}

// startCluster starts Redis, the monoliths and sidecars, and the routers;
// with sentinel, the registry's Redis behind Sentinel.
func startCluster(ctx context.Context, cfg *Config, dir string, hb time.Duration, serveLog, sentinel bool) (cl *cluster, err error) {
	cl = &cluster{dir: dir, hb: hb, secret: randomHex(16), exits: &exitLog{}, serveLog: serveLog}
	defer func() {
		if err != nil {
			cl.close()
			cl = nil
		}
	}()
	ports, err := freePorts(1 + 4*cfg.Nodes + 2*cfg.Routers + 6)
	if err != nil {
		return nil, err
	}
	next := func() int { p := ports[0]; ports = ports[1:]; return p }
	if hasFlag(cfg.Binary, "router", "creates-per-minute") {
		cl.createsPerMinute = routerCreatesPerMinute(cfg)
	}
	if hasFlag(cfg.Binary, "router", "max-conns-per-addr") {
		cl.perAddr = routerPerAddr(cfg)
	}
	cl.redisAddr = addr(next())
	if err := cl.startRedis(ctx); err != nil {
		return cl, err
	}
	cl.state = cl.rdb
	registry := "redis://" + cl.redisAddr
	if sentinel {
		if registry, err = cl.startSentinel(ctx, [3]int{next(), next(), next()}, [3]int{next(), next(), next()}); err != nil {
			return cl, err
		}
	}
	for i := range cfg.Nodes {
		if err := cl.startNode(ctx, cfg, registry, fmt.Sprintf("n%d", i+1), next(), next(), next(), next()); err != nil {
			return cl, err
		}
	}
	for i := range cfg.Routers {
		if err := cl.startRouter(ctx, cfg, registry, fmt.Sprintf("router%d", i+1), next(), next()); err != nil {
			return cl, err
		}
	}
	return cl, nil
}

func (cl *cluster) newComponent(name string, start func() (child, error), ready func(context.Context) error) *component {
	return &component{name: name, start: start, ready: ready, exits: cl.exits, wg: &cl.wg}
}

func (cl *cluster) logPath(name string) string { return filepath.Join(cl.dir, name+".log") }

func (cl *cluster) startRedis(ctx context.Context) error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return errors.New("chaos: no redis-server on PATH (apt-get install -y redis-server)")
	}
	host, port, _ := net.SplitHostPort(cl.redisAddr)
	argv := []string{bin, "--bind", host, "--port", port, "--save", "", "--appendonly", "no",
		"--dir", cl.dir, "--maxmemory-policy", "noeviction", "--maxclients", "10000"}
	cl.rdb = redis.NewClient(&redis.Options{Addr: cl.redisAddr, MaxRetries: -1, ContextTimeoutEnabled: true})
	cl.redis = cl.newComponent("redis", func() (child, error) {
		return startProc(cl.logPath("redis"), argv, nil)
	}, func(ctx context.Context) error {
		return waitFor(ctx, 10*time.Second, func(ctx context.Context) error { return cl.rdb.Ping(ctx).Err() })
	})
	return cl.redis.launch(ctx)
}

// startSentinel starts the registry's Redis of a Sentinel phase on the
// ports given: a master and two replicas, and three sentinels with a
// quorum of two that take a master for down after a third of the
// heartbeat TTL (at least 500 ms). It returns the registry's --redis-url
// and makes cl.rdb a failover client.
func (cl *cluster) startSentinel(ctx context.Context, servers, sentinels [3]int) (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("chaos: no redis-server on PATH (apt-get install -y redis-server)")
	}
	for i, port := range servers {
		rs := &redisServer{addr: addr(port)}
		if i > 0 {
			rs.replicaOf = cl.servers[0].addr
		}
		name := fmt.Sprintf("registry-redis%d", i+1)
		dir := filepath.Join(cl.dir, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		rs.component = cl.newComponent(name, func() (child, error) {
			host, port, _ := net.SplitHostPort(rs.addr)
			argv := []string{bin, "--bind", host, "--port", port, "--save", "", "--appendonly", "no",
				"--dir", dir, "--maxmemory-policy", "noeviction", "--maxclients", "10000",
				// A replica started again, empty, syncs at once (the
				// default waits 5 s for more replicas to share the sync).
				"--repl-diskless-sync-delay", "0"}
			if rs.replicaOf != "" {
				mhost, mport, _ := net.SplitHostPort(rs.replicaOf)
				argv = append(argv, "--replicaof", mhost, mport)
			}
			return startProc(cl.logPath(name), argv, nil)
		}, func(ctx context.Context) error { return waitPing(ctx, rs.addr) })
		cl.servers = append(cl.servers, rs)
		if err := rs.launch(ctx); err != nil {
			return "", err
		}
	}
	down := max(cl.hb/3, 500*time.Millisecond)
	mhost, mport, _ := net.SplitHostPort(cl.servers[0].addr)
	var addrs []string
	for i, port := range sentinels {
		rs := &redisServer{addr: addr(port)}
		name := fmt.Sprintf("sentinel%d", i+1)
		dir := filepath.Join(cl.dir, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		// A sentinel rewrites its configuration file: each has its own.
		conf := filepath.Join(dir, "sentinel.conf")
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n"+
			"sentinel monitor %s %s %s 2\nsentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n",
			port, dir, sentinelMaster, mhost, mport, sentinelMaster, down.Milliseconds(), sentinelMaster, sentinelMaster)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			return "", err
		}
		rs.component = cl.newComponent(name, func() (child, error) {
			return startProc(cl.logPath(name), []string{bin, conf, "--sentinel"}, nil)
		}, func(ctx context.Context) error { return waitPing(ctx, rs.addr) })
		cl.sentinels = append(cl.sentinels, rs)
		if err := rs.launch(ctx); err != nil {
			return "", err
		}
		addrs = append(addrs, rs.addr)
	}
	if err := waitFor(ctx, 30*time.Second, cl.sentinelSettled); err != nil {
		return "", fmt.Errorf("chaos: Sentinel not ready: %w", err)
	}
	cl.rdb = redis.NewFailoverClient(&redis.FailoverOptions{MasterName: sentinelMaster, SentinelAddrs: addrs,
		MaxRetries: -1, ContextTimeoutEnabled: true})
	q := url.Values{"master_name": {sentinelMaster}, "addr": addrs[1:]}
	return "redis://" + addrs[0] + "?" + q.Encode(), nil
}

// waitPing waits up to 10 s until the server at a answers PING.
func waitPing(ctx context.Context, a string) error {
	c := redis.NewClient(&redis.Options{Addr: a, ContextTimeoutEnabled: true})
	defer c.Close()
	return waitFor(ctx, 10*time.Second, func(ctx context.Context) error { return c.Ping(ctx).Err() })
}

// sentinelSettled returns nil once the registry's Redis can take a
// failover: every sentinel names the same master and knows the other two
// sentinels (they meet through the master's hello channel, every 2 s), and
// every other server replicates that master with its link up.
func (cl *cluster) sentinelSettled(ctx context.Context) error {
	master := ""
	for _, rs := range cl.sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: rs.addr, ContextTimeoutEnabled: true})
		m, err := c.Master(ctx, sentinelMaster).Result()
		c.Close()
		if err != nil {
			return err
		}
		a := net.JoinHostPort(m["ip"], m["port"])
		if master != "" && a != master {
			return fmt.Errorf("sentinels name masters %s and %s", master, a)
		}
		master = a
		if m["num-other-sentinels"] != "2" {
			return fmt.Errorf("sentinel %s knows %s other sentinels", rs.addr, m["num-other-sentinels"])
		}
	}
	for _, rs := range cl.servers {
		if rs.addr == master {
			continue
		}
		c := redis.NewClient(&redis.Options{Addr: rs.addr, ContextTimeoutEnabled: true})
		info, err := c.Info(ctx, "replication").Result()
		c.Close()
		if err != nil {
			return err
		}
		host, port, _ := net.SplitHostPort(master)
		if !strings.Contains(info, "master_host:"+host+"\r\n") || !strings.Contains(info, "master_port:"+port+"\r\n") ||
			!strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("%s not in sync with master %s", rs.addr, master)
		}
	}
	return nil
}

// master asks the sentinels for the registry's master now.
func (cl *cluster) master(ctx context.Context) (*redisServer, error) {
	var errs []error
	for _, s := range cl.sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: s.addr, ContextTimeoutEnabled: true})
		a, err := c.GetMasterAddrByName(ctx, sentinelMaster).Result()
		c.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rs := range cl.servers {
			if rs.addr == net.JoinHostPort(a[0], a[1]) {
				return rs, nil
			}
		}
		errs = append(errs, fmt.Errorf("sentinel %s names master %v, none of the run's", s.addr, a))
	}
	return nil, errors.Join(errs...)
}

// startNode starts a monolith and its sidecar, which reaches the registry
// at registry: through a link proxy of its own, unless that is a Sentinel
// URL.
func (cl *cluster) startNode(ctx context.Context, cfg *Config, registry, id string, httpPort, balancerPort, sidecarPort, proxyPort int) error {
	n := &node{id: id, addr: addr(sidecarPort), serveLog: filepath.Join(cl.dir, id+".serve.jsonl")}
	cl.nodes = append(cl.nodes, n)
	redisURL := "redis://" + cl.redisAddr
	n.monolith = cl.newComponent(id+"-monolith", func() (child, error) {
		return startMonolith(cl.logPath(id+"-monolith"), cfg.MonolithDir, redisURL, httpPort, balancerPort)
	}, nil)
	if err := n.monolith.launch(ctx); err != nil {
		return err
	}
	if len(cl.sentinels) == 0 {
		var err error
		if n.link, err = newLinkProxy(addr(proxyPort), cl.redisAddr); err != nil {
			return err
		}
		registry = "redis://" + n.link.Addr()
	}
	argv := []string{cfg.Binary, "sidecar", "--node-id", id, "--listen", n.addr,
		"--monolith", "ws://" + addr(balancerPort) + "/", "--redis-url", registry,
		"--secret", cl.secret, "--heartbeat-ttl", cl.hb.String(), "--announce-channel", "-", "--log-level", "info"}
	if cl.serveLog {
		argv = append(argv, "--serve-log", n.serveLog)
	}
	n.sidecar = cl.newComponent(id+"-sidecar", func() (child, error) {
		return startProc(cl.logPath(id+"-sidecar"), argv, nil)
	}, func(ctx context.Context) error { return waitHTTP(ctx, "http://"+n.addr+"/readyz", 20*time.Second) })
	return n.sidecar.launch(ctx)
}

func (cl *cluster) startRouter(ctx context.Context, cfg *Config, registry, name string, port, adminPort int) error {
	r := &routerProc{addr: addr(port), admin: addr(adminPort)}
	argv := []string{cfg.Binary, "router", "--listen", r.addr, "--admin-listen", r.admin,
		"--redis-url", registry, "--secret", cl.secret, "--log-level", "info"}
	// Every usual client is on 127.0.0.1, the attackers of hostile-clients
	// on attackerIP: the bounds are set for the one and met by the other
	// (routerCreatesPerMinute, routerPerAddr).
	if cl.createsPerMinute > 0 {
		argv = append(argv, "--creates-per-minute", strconv.Itoa(cl.createsPerMinute))
	}
	if cl.perAddr > 0 {
		argv = append(argv, "--max-conns-per-addr", strconv.Itoa(cl.perAddr))
	}
	r.component = cl.newComponent(name, func() (child, error) {
		return startProc(cl.logPath(name), argv, nil)
	}, func(ctx context.Context) error { return waitHTTP(ctx, "http://"+r.admin+"/readyz", 20*time.Second) })
	cl.routers = append(cl.routers, r)
	return r.launch(ctx)
}

// routerAddrs are the routers' client addresses.
func (cl *cluster) routerAddrs() []string {
	out := make([]string, len(cl.routers))
	for i, r := range cl.routers {
		out[i] = r.addr
	}
	return out
}

func (cl *cluster) node(id string) *node {
	for _, n := range cl.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

// components lists every process of the cluster.
func (cl *cluster) components() []*component {
	var out []*component
	if cl.redis != nil {
		out = append(out, cl.redis)
	}
	for _, rs := range append(slices.Clone(cl.servers), cl.sentinels...) {
		out = append(out, rs.component)
	}
	for _, n := range cl.nodes {
		out = append(out, n.monolith)
		if n.sidecar != nil {
			out = append(out, n.sidecar)
		}
	}
	for _, r := range cl.routers {
		out = append(out, r.component)
	}
	return out
}

// revive starts again every process that is not running (one that crashed,
// or was stopped by a fault) and resumes every paused one, Redis first.
func (cl *cluster) revive(ctx context.Context) error {
	var errs []error
	for _, c := range cl.components() {
		if c.running() {
			c.signal(syscall.SIGCONT)
			continue
		}
		if err := c.launch(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range cl.nodes {
		if n.link != nil {
			n.link.setStalled(false)
			n.link.setLatency(0)
		}
	}
	return errors.Join(errs...)
}

// close kills every process and waits for them; it is safe on a cluster
// that started only in part.
func (cl *cluster) close() {
	for _, c := range cl.components() {
		c.kill()
	}
	for _, n := range cl.nodes {
		if n.link != nil {
			n.link.close()
		}
	}
	cl.wg.Wait()
	if cl.rdb != nil {
		cl.rdb.Close()
	}
	if cl.state != nil && cl.state != cl.rdb {
		cl.state.Close()
	}
}

// logFiles are the processes' log files.
func (cl *cluster) logFiles() []string {
	var out []string
	for _, c := range cl.components() {
		out = append(out, cl.logPath(c.name))
	}
	return out
}

// waitHTTP polls url until it answers 200 or limit passes.
func waitHTTP(ctx context.Context, url string, limit time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	return waitFor(ctx, limit, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		res, err := c.Do(req)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			return fmt.Errorf("%s: HTTP %d", url, res.StatusCode)
		}
		return nil
	})
}

// waitFor calls try every 20ms until it succeeds, limit passes or ctx ends.
func waitFor(ctx context.Context, limit time.Duration, try func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		tctx, tcancel := context.WithTimeout(ctx, time.Second)
		err := try(tctx)
		tcancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freePorts asks the kernel for n distinct free loopback ports. Another
// process may take one before its owner binds it; that start then fails.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	out := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
