package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a local Redis Cluster of three masters (no replicas), each a
// redis-server of its own on a free loopback port, joined with
// `redis-cli --cluster create`. It is stopped when the test ends.
type Cluster struct {
	tb      testing.TB
	Masters []*Server
}

// NewCluster starts a Redis Cluster for the test and waits until every slot
// is served. It needs redis-server and redis-cli on PATH (Debian's
// redis-server package brings both); it is skipped with REDIS_URL, which
// names one server.
func NewCluster(tb testing.TB) *Cluster {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		tb.Fatalf("redistest: %v (apt-get install -y redis-tools)", err)
	}
	c := &Cluster{tb: tb}
	args := []string{"--cluster", "create"}
	for range 3 {
		s := &Server{tb: tb, dir: tb.TempDir()}
		s.addr = "127.0.0.1:" + strconv.Itoa(freePort(tb))
		s.url = "redis://" + s.addr
		s.extra = []string{"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
			"--cluster-node-timeout", "2000"}
		s.start(bin)
		tb.Cleanup(s.stop)
		c.Masters = append(c.Masters, s)
		args = append(args, s.addr)
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	c.waitOK()
	return c
}

// waitOK waits until every master reports cluster_state:ok.
func (c *Cluster) waitOK() {
	c.tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range c.Masters {
		cl := s.Client()
		for {
			info, err := cl.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.tb.Fatalf("redistest: cluster not ok on %s after 20s: %v %s", s.addr, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Addrs are the masters' addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Masters))
	for i, s := range c.Masters {
		out[i] = s.addr
	}
	return out
}

// URL is the cluster's go-redis cluster URL:
// redis://FIRST?addr=SECOND&addr=THIRD.
func (c *Cluster) URL() string {
	u := c.Masters[0].url + "?"
	for i, s := range c.Masters[1:] {
		if i > 0 {
			u += "&"
		}
		u += "addr=" + s.addr
	}
	return u
}

// Client returns a new cluster client, closed when the test ends.
func (c *Cluster) Client() *redis.ClusterClient {
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ContextTimeoutEnabled: true})
	c.tb.Cleanup(func() { cl.Close() })
	return cl
}

// MasterOf returns the master that serves key's hash slot.
func (c *Cluster) MasterOf(key string) *Server {
	c.tb.Helper()
	m, err := c.Client().MasterForKey(context.Background(), key)
	if err != nil {
		c.tb.Fatalf("redistest: master of %s: %v", key, err)
	}
	for _, s := range c.Masters {
		if s.addr == m.Options().Addr {
			return s
		}
	}
	c.tb.Fatalf("redistest: %s is served by %s, not a master of the cluster", key, m.Options().Addr)
	return nil
}

// Restart stops every master and starts it again on its port, empty (the
// servers run without persistence; each keeps its cluster configuration
// file, so the cluster forms again), and waits until every slot is served.
func (c *Cluster) Restart() {
	c.tb.Helper()
	for _, s := range c.Masters {
		s.Stop()
	}
	for _, s := range c.Masters {
		s.Start()
	}
	c.waitOK()
}

// FlushAll empties every master.
func (c *Cluster) FlushAll() {
	c.tb.Helper()
	err := c.Client().ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
		return m.FlushAll(ctx).Err()
	})
	if err != nil {
		c.tb.Fatalf("redistest: FLUSHALL on the cluster: %v", err)
	}
}

func (c *Cluster) String() string { return fmt.Sprintf("cluster %v", c.Addrs()) }

// ClusterEnv is set to 1 in a test binary that RerunOnCluster started: its
// tests should run their Redis as a Cluster (NewCluster).
const ClusterEnv = "ROOMLB_TEST_CLUSTER"

// OnCluster reports whether the tests run on a Redis Cluster (ClusterEnv).
func OnCluster() bool { return os.Getenv(ClusterEnv) == "1" }

// RerunOnCluster runs the tests of this test binary that match the -test.run
// pattern run again, in a new process with ClusterEnv=1, and fails t with
// their output if any fails. It is skipped in that process itself, with
// -short, with REDIS_URL (one server), and without redis-server and
// redis-cli.
func RerunOnCluster(t *testing.T, run string) {
	t.Helper()
	switch {
	case OnCluster():
		t.Skip("already on a cluster")
	case testing.Short():
		t.Skip("runs tests again")
	case os.Getenv("REDIS_URL") != "":
		t.Skip("REDIS_URL names one server")
	}
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s on PATH", bin)
		}
	}
	args := []string{"-test.count=1", "-test.run", run}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), ClusterEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the tests on a Redis Cluster: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "PASS") {
		t.Fatalf("the tests on a Redis Cluster ran nothing:\n%s", out)
	}
	if testing.Verbose() {
		t.Logf("the tests on a Redis Cluster:\n%s", out)
	}
}
