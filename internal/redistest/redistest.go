// Package redistest starts real redis-server processes for tests.
//
// Every test that touches Redis gets a real server: New starts a private
// redis-server on a free loopback port (no persistence, stopped when the test
// ends), or, when REDIS_URL is set, hands out that server after FLUSHALL. Point
// REDIS_URL only at a throwaway server, and run such tests with -p 1: packages
// share it.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a Redis server for one test.
type Server struct {
	tb   testing.TB
	url  string
	addr string
	dir  string // empty for REDIS_URL servers
	// extra arguments of redis-server (a replica's REPLICAOF); conf, a
	// configuration file to start with (a sentinel's).
	extra []string
	conf  string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// New returns a Redis server for the test, empty. It fails the test with a
// clear message when there is neither a redis-server on PATH nor REDIS_URL.
func New(tb testing.TB) *Server {
	tb.Helper()
	if u := os.Getenv("REDIS_URL"); u != "" {
		opt, err := redis.ParseURL(u)
		if err != nil {
			tb.Fatalf("redistest: REDIS_URL %q: %v", u, err)
		}
		s := &Server{tb: tb, url: u, addr: opt.Addr}
		c := s.Client()
		if err := c.FlushAll(context.Background()).Err(); err != nil {
			tb.Fatalf("redistest: FLUSHALL on REDIS_URL %q: %v", u, err)
		}
		return s
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redistest: no redis-server on PATH and REDIS_URL is unset: install Redis (apt-get install -y redis-server) or set REDIS_URL to a throwaway server")
	}
	s := &Server{tb: tb, dir: tb.TempDir()}
	s.addr = "127.0.0.1:" + strconv.Itoa(freePort(tb))
	s.url = "redis://" + s.addr
	s.start(bin)
	tb.Cleanup(s.stop)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// URL is the server's redis:// URL.
func (s *Server) URL() string { return s.url }

// Client returns a new client of the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	s.tb.Helper()
	opt, err := redis.ParseURL(s.url)
	if err != nil {
		s.tb.Fatalf("redistest: %v", err)
	}
	c := redis.NewClient(opt)
	s.tb.Cleanup(func() { c.Close() })
	return c
}

// Restart stops the server and starts it again on the same port, with no
// data: the server runs without persistence, like a crashed cache. Tests that
// need it are skipped against REDIS_URL.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.Start()
}

// Stop stops a server started by New; Start starts it again (empty).
func (s *Server) Stop() {
	s.tb.Helper()
	s.requireOwn()
	s.stop()
}

// Start starts a server stopped by Stop, on the same port, with no data.
func (s *Server) Start() {
	s.tb.Helper()
	s.requireOwn()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		s.tb.Fatalf("redistest: %v", err)
	}
	s.start(bin)
}

func (s *Server) requireOwn() {
	if s.dir == "" {
		s.tb.Skip("redistest: needs a redis-server of its own; skipped with REDIS_URL")
	}
}

func (s *Server) start(bin string) {
	s.tb.Helper()
	host, port, _ := net.SplitHostPort(s.addr)
	args := []string{"--bind", host, "--port", port,
		"--save", "", "--appendonly", "no",
		"--dir", s.dir, "--daemonize", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	}
	if s.conf != "" {
		args = []string{s.conf, "--sentinel"}
	}
	cmd := exec.Command(bin, append(args, s.extra...)...)
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("redistest: start redis-server: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	if err := waitReady(s.addr, 10*time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
		s.stop()
		s.tb.Fatalf("redistest: redis-server on %s did not come up: %v\n%s", s.addr, err, lastLines(string(log), 20))
	}
}

func (s *Server) stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	cmd.Wait()
}

// waitReady polls addr with PING until the server answers.
func waitReady(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		last = ping(addr)
		if last == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return last
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return errors.New("unexpected reply " + strconv.Quote(line))
	}
	return nil
}

// freePort asks the kernel for a free loopback port. Another process may take
// it before redis-server binds; the start then fails clearly.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprint(strings.Join(lines, "\n"))
}

// NewReplica starts a redis-server of its own that replicates master
// (REPLICAOF), on a free loopback port, and waits until it is in sync.
// It is stopped when the test ends.
func NewReplica(tb testing.TB, master *Server) *Server {
	tb.Helper()
	master.requireOwn()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	host, port, _ := net.SplitHostPort(master.addr)
	s := &Server{tb: tb, dir: tb.TempDir(), extra: []string{"--replicaof", host, port}}
	s.addr = "127.0.0.1:" + strconv.Itoa(freePort(tb))
	s.url = "redis://" + s.addr
	s.start(bin)
	tb.Cleanup(s.stop)
	s.WaitSynced()
	return s
}

// WaitSynced waits until a replica's link to its master is up.
func (s *Server) WaitSynced() {
	s.tb.Helper()
	c := s.Client()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, _ := c.Info(context.Background(), "replication").Result()
		if strings.Contains(info, "master_link_status:up") {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redistest: replica %s not in sync after 10s:\n%s", s.addr, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Sentinel is a redis-server in sentinel mode that watches one master.
type Sentinel struct {
	*Server
	name string
}

// NewSentinel starts a sentinel (redis-server --sentinel) that watches
// master under name with a quorum of one, and takes it for down after
// downAfter without an answer. It is stopped when the test ends.
func NewSentinel(tb testing.TB, master *Server, name string, downAfter time.Duration) *Sentinel {
	tb.Helper()
	master.requireOwn()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	s := &Server{tb: tb, dir: tb.TempDir()}
	s.addr = "127.0.0.1:" + strconv.Itoa(freePort(tb))
	s.url = "redis://" + s.addr
	host, port, _ := net.SplitHostPort(master.addr)
	_, sport, _ := net.SplitHostPort(s.addr)
	// A sentinel rewrites its configuration file: it must be its own.
	conf := filepath.Join(s.dir, "sentinel.conf")
	body := fmt.Sprintf("port %s\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
		"sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s %d\n"+
		"sentinel failover-timeout %s 10000\nsentinel parallel-syncs %s 1\n",
		sport, s.dir, filepath.Join(s.dir, "redis.log"),
		name, host, port, name, downAfter.Milliseconds(), name, name)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	s.conf = conf
	s.start(bin)
	tb.Cleanup(s.stop)
	return &Sentinel{Server: s, name: name}
}

// FailoverURL is the go-redis failover URL of the sentinel's master:
// redis://SENTINEL?master_name=NAME.
func (s *Sentinel) FailoverURL() string { return s.url + "?master_name=" + s.name }

// Master asks the sentinel for the address of the master it knows now.
func (s *Sentinel) Master() string {
	s.tb.Helper()
	a, err := s.Client().Do(context.Background(), "SENTINEL", "get-master-addr-by-name", s.name).StringSlice()
	if err != nil || len(a) != 2 {
		s.tb.Fatalf("redistest: sentinel get-master-addr-by-name %s: %v %v", s.name, a, err)
	}
	return net.JoinHostPort(a[0], a[1])
}
