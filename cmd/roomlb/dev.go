package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/internal/cluster"
	"github.com/roomlb/roomlb/internal/nodemonolith"
)

// runDev starts a whole cluster on loopback: Redis, reference monoliths,
// their sidecars and routers, until ctx ends; then it drains and stops
// everything.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		nodes    = fs.Int("nodes", 3, "monoliths, each with its sidecar")
		routers  = fs.Int("routers", 2, "routers")
		redisURL = fs.String("redis-url", "", "use this Redis instead of starting one (it is not flushed)")
		embedded = fs.Bool("embedded-redis", false, "use the embedded Redis even when redis-server is installed")
		monoDir  = fs.String("monolith-dir", nodemonolith.Dir(), "folder of the Node reference monolith")
		logLevel = fs.String("log-level", "warn", "debug, info, warn or error")
	)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *nodes < 1 || *routers < 1 {
		return errors.New("dev: at least one node and one router")
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	d := &devCluster{stdout: stdout, stderr: stderr, log: log, embedded: *embedded}
	defer d.stop()
	if err := d.start(ctx, *redisURL, *monoDir, *nodes, *routers); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "roomlb dev: up; open a router's address in a browser. Ctrl-C drains and stops everything.")
	<-ctx.Done()
	fmt.Fprintln(stdout, "roomlb dev: draining and stopping")
	return nil
}

// devCluster is what runDev started, to stop in reverse order.
type devCluster struct {
	stdout, stderr io.Writer
	log            *slog.Logger

	redisCmd  *exec.Cmd
	mini      *miniredis.Miniredis
	stopClock chan struct{}
	cluster   *cluster.Cluster
	tmp       string
	redisLine string // printed after the routers and nodes
	embedded  bool   // --embedded-redis
}

func (d *devCluster) start(ctx context.Context, redisURL, monoDir string, nodes, routers int) error {
	var err error
	if d.tmp, err = os.MkdirTemp("", "roomlb-dev"); err != nil {
		return err
	}
	if redisURL == "" {
		if redisURL, err = d.startRedis(); err != nil {
			return err
		}
	} else {
		d.redisLine = fmt.Sprintf("redis: %s (given)", redisURL)
	}
	redisLine := d.redisLine
	d.cluster, err = cluster.Start(ctx, cluster.Options{
		RedisURL:    redisURL,
		Nodes:       nodes,
		Routers:     routers,
		MonolithDir: monoDir,
		Log:         d.log,
		MonolithLog: d.stderr,
	})
	if err != nil {
		return err
	}
	for _, r := range d.cluster.Routers {
		fmt.Fprintf(d.stdout, "router: http://%s (admin http://%s)\n", r.Addr, r.AdminAddr)
	}
	for _, n := range d.cluster.Nodes {
		fmt.Fprintf(d.stdout, "sidecar: http://%s (node %s)\n", n.SidecarAddr, n.ID)
		fmt.Fprintf(d.stdout, "monolith: http://%s (balancer ws://%s, node %s)\n", n.HTTPAddr, n.BalancerAddr, n.ID)
	}
	fmt.Fprintln(d.stdout, redisLine)
	return nil
}

// startRedis starts redis-server from PATH, or an embedded Redis when
// there is none.
func (d *devCluster) startRedis() (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil || d.embedded {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return "", fmt.Errorf("embedded redis: %w", err)
		}
		d.mini = m
		d.stopClock = make(chan struct{})
		go embeddedClock(m, d.stopClock)
		url := "redis://" + m.Addr()
		// Said at once, not only in the summary: it is a choice made for you.
		why := "no redis-server on PATH"
		if d.embedded {
			why = "--embedded-redis"
		}
		fmt.Fprintf(d.stderr, "roomlb dev: %s: using an embedded Redis (fine for trying roomlb, not for load)\n", why)
		d.redisLine = fmt.Sprintf("redis: %s (embedded)", url)
		return url, nil
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no",
		"--dir", d.tmp, "--logfile", filepath.Join(d.tmp, "redis.log"), "--maxmemory-policy", "noeviction")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start redis-server: %w", err)
	}
	d.redisCmd = cmd
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer c.Close()
	for i := 0; ; i++ {
		if c.Ping(context.Background()).Err() == nil {
			break
		}
		if i > 500 {
			return "", errors.New("redis-server did not come up within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	url := "redis://" + addr
	d.redisLine = fmt.Sprintf("redis: %s (redis-server %s)", url, bin)
	return url, nil
}

// embeddedClock makes the embedded Redis expire keys in real time:
// miniredis only moves its TTLs when told to.
func embeddedClock(m *miniredis.Miniredis, stop chan struct{}) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			m.FastForward(now.Sub(last))
			last = now
		}
	}
}

// stop drains the sidecars, stops the routers, the monoliths and Redis.
func (d *devCluster) stop() {
	if d.cluster != nil {
		d.cluster.Stop()
	}
	if d.redisCmd != nil {
		d.redisCmd.Process.Signal(syscall.SIGTERM)
		d.redisCmd.Wait()
	}
	if d.mini != nil {
		close(d.stopClock)
		d.mini.Close()
	}
	if d.tmp != "" {
		os.RemoveAll(d.tmp)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
