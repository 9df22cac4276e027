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
	"strings"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/internal/cluster"
	"github.com/roomlb/roomlb/internal/nodemonolith"
	"github.com/roomlb/roomlb/internal/procattr"
)

// runDev starts a whole cluster on loopback: Redis, reference monoliths,
// their sidecars and routers, until ctx ends; then it drains and stops
// everything.
//
// The processes it starts (redis-server, the Node monoliths) run in process
// groups of their own, so a terminal's Ctrl-C, which signals the whole
// foreground group, reaches roomlb only; it then stops them itself, each
// once nothing needs it any more: the routers, the sidecars (each drains
// while the monoliths and Redis still run), the monoliths, Redis last.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		nodes    = fs.Int("nodes", 3, "monoliths, each with its sidecar")
		routers  = fs.Int("routers", 2, "routers")
		redisURL = fs.String("redis-url", "", "use this Redis instead of starting one (it is not flushed)")
		embedded = fs.Bool("embedded-redis", false, "use the embedded Redis even when redis-server is installed")
		monoDir  = fs.String("monolith-dir", nodemonolith.Dir(), "folder of the Node reference monolith")
		secret   = fs.String("secret", "", "the sidecars' shared secret, for roomlb ctl drain and move (empty: a random one, printed)")
		logLevel = fs.String("log-level", "warn", "debug, info, warn or error")
	)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *nodes < 1 || *routers < 1 {
		return errors.New("dev: at least one node and one router")
	}
	// Checked before anything starts; the routers would refuse it last.
	for i := 0; i < len(*secret); i++ {
		if b := (*secret)[i]; b < 0x21 || b > 0x7e {
			return fmt.Errorf("dev: --secret: byte %d is not a visible ASCII character (it travels in a header)", i)
		}
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	d := &devCluster{stdout: stdout, stderr: stderr, log: log, embedded: *embedded}
	defer d.stop()
	if err := d.start(ctx, *redisURL, *monoDir, *secret, *nodes, *routers); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stdout, "roomlb dev: stopped before it was up")
			return nil
		}
		return err
	}
	fmt.Fprintln(stdout, "roomlb dev: up. Ctrl-C drains every node and stops everything.")
	<-ctx.Done()
	fmt.Fprintln(stdout, "roomlb dev: draining and stopping")
	return nil
}

// devRoom is the room the printed page link joins.
const devRoom = "lobby"

// devCluster is what runDev started, to stop in reverse order.
type devCluster struct {
	stdout, stderr io.Writer
	log            *slog.Logger

	redisCmd  *exec.Cmd
	mini      *miniredis.Miniredis
	stopClock chan struct{}
	cluster   *cluster.Cluster
	tmp       string
	redisURL  string
	redisLine string // printed after the routers and nodes
	embedded  bool   // --embedded-redis
}

func (d *devCluster) start(ctx context.Context, redisURL, monoDir, secret string, nodes, routers int) error {
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
	d.redisURL = redisURL
	d.cluster, err = cluster.Start(ctx, cluster.Options{
		RedisURL:    redisURL,
		Nodes:       nodes,
		Routers:     routers,
		Secret:      secret,
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
	fmt.Fprintln(d.stdout, d.redisLine)
	d.printUsage()
	return nil
}

// printUsage prints what to do with the cluster: a page link that joins a
// room at once, the first router's dashboard, and a roomlb ctl command line
// with this cluster's Redis and secret (drain and move need the secret).
func (d *devCluster) printUsage() {
	r := d.cluster.Routers[0]
	fmt.Fprintf(d.stdout, "open:      http://%s/?room=%s (the page joins room %s; any router serves it)\n", r.Addr, devRoom, devRoom)
	fmt.Fprintf(d.stdout, "dashboard: http://%s/dashboard\n", r.AdminAddr)
	// Everything after "ctl:" pastes into a shell as it is.
	fmt.Fprintf(d.stdout, "ctl:       roomlb ctl --redis-url %s --secret %s nodes  # or rooms, where ROOM, drain NODE, move ROOM NODE\n",
		shellQuote(d.redisURL), shellQuote(d.cluster.Secret))
}

// shellQuote quotes s for a POSIX shell when it needs it, so that a printed
// command line can be pasted as it is.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
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
	// Its own process group: Ctrl-C must not stop it before everything
	// that uses it has stopped (stop stops it last). Killed if roomlb dies.
	cmd.SysProcAttr = procattr.Child()
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

// stop stops the routers, drains the sidecars, stops the monoliths, then
// Redis, which all of them use.
func (d *devCluster) stop() {
	if d.cluster != nil {
		d.cluster.Stop()
	}
	if d.redisCmd != nil {
		d.redisCmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan struct{})
		go func() {
			d.redisCmd.Wait()
			close(exited)
		}()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			fmt.Fprintln(d.stderr, "roomlb dev: redis-server did not exit within 5s of SIGTERM; killing it")
			d.redisCmd.Process.Kill()
			<-exited
		}
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
