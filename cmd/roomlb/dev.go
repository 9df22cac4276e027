package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/internal/nodemonolith"
	"github.com/roomlb/roomlb/registry"
	"github.com/roomlb/roomlb/router"
	"github.com/roomlb/roomlb/sidecar"
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
	d := &devCluster{stdout: stdout, stderr: stderr, log: log}
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
	embedded  *miniredis.Miniredis
	stopClock chan struct{}
	rdb       *redis.Client
	monoliths []*nodemonolith.Process
	cancel    []context.CancelFunc // sidecars then routers
	wg        sync.WaitGroup
	tmp       string
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
		fmt.Fprintf(d.stdout, "redis: %s (given)\n", redisURL)
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return fmt.Errorf("redis url: %w", err)
	}
	d.rdb = redis.NewClient(opt)
	reg, err := registry.New(d.rdb, registry.Config{Logger: d.log})
	if err != nil {
		return err
	}
	secret := randomHex(16)

	var lines []string
	for i := range nodes {
		p, err := nodemonolith.Launch(nodemonolith.Options{Dir: monoDir, RedisURL: redisURL, Log: d.stderr})
		if err != nil {
			return err
		}
		d.monoliths = append(d.monoliths, p)
		id := fmt.Sprintf("dev-node-%d", i+1)
		s, err := sidecar.New(sidecar.Config{
			NodeID:   id,
			Listen:   "127.0.0.1:0",
			Monolith: "ws://" + p.BalancerAddr + "/",
			Secret:   secret,
			Registry: reg,
			Logger:   d.log.With("node", id),
		})
		if err != nil {
			return err
		}
		d.run(func(ctx context.Context) error { return s.Run(ctx) })
		lines = append(lines,
			fmt.Sprintf("sidecar: http://%s (node %s)", s.Addr(), id),
			fmt.Sprintf("monolith: http://%s (balancer ws://%s, node %s)", p.HTTPAddr, p.BalancerAddr, id))
	}
	var routerLines []string
	for i := range routers {
		r, err := router.New(router.Config{Registry: reg, Secret: secret, Logger: d.log.With("router", i+1)})
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
		d.run(func(ctx context.Context) error { return r.Serve(ctx, ln, admin) })
		routerLines = append(routerLines, fmt.Sprintf("router: http://%s (admin http://%s)", ln.Addr(), admin.Addr()))
	}
	// Wait until every node is registered, so the first request finds one.
	deadline := time.Now().Add(10 * time.Second)
	for {
		live, err := reg.Nodes(ctx)
		if err == nil && len(live) == nodes {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dev: %d of %d nodes registered after 10s (%v)", len(live), nodes, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, l := range append(routerLines, lines...) {
		fmt.Fprintln(d.stdout, l)
	}
	return nil
}

// run runs f until stop cancels it.
func (d *devCluster) run(f func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = append(d.cancel, cancel)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := f(ctx); err != nil {
			d.log.Error("dev: component stopped", "err", err)
		}
	}()
}

// startRedis starts redis-server from PATH, or an embedded Redis when
// there is none.
func (d *devCluster) startRedis() (string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return "", fmt.Errorf("embedded redis: %w", err)
		}
		d.embedded = m
		d.stopClock = make(chan struct{})
		go embeddedClock(m, d.stopClock)
		url := "redis://" + m.Addr()
		fmt.Fprintf(d.stdout, "redis: %s (embedded: no redis-server on PATH; fine for trying roomlb, not for load)\n", url)
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
	c := redis.NewClient(&redis.Options{Addr: addr})
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
	fmt.Fprintf(d.stdout, "redis: %s (redis-server %s)\n", url, bin)
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
	for _, cancel := range d.cancel {
		cancel()
	}
	d.wg.Wait()
	var stopped sync.WaitGroup
	for _, p := range d.monoliths {
		stopped.Add(1)
		go func() {
			defer stopped.Done()
			if err := p.Stop(5 * time.Second); err != nil {
				d.log.Warn("dev: monolith", "err", err)
			}
		}()
	}
	stopped.Wait()
	if d.rdb != nil {
		d.rdb.Close()
	}
	if d.redisCmd != nil {
		d.redisCmd.Process.Signal(syscall.SIGTERM)
		d.redisCmd.Wait()
	}
	if d.embedded != nil {
		close(d.stopClock)
		d.embedded.Close()
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

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
