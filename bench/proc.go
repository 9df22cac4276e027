package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/internal/procattr"
	"github.com/roomlb/roomlb/registry"
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTick = 100

// cpuSeconds is the CPU time a process's threads have used so far: the sum
// of their run times in /proc/<pid>/task/*/schedstat (nanoseconds), or the
// process's user+system time in clock ticks (10 ms) when that is missing.
// A thread that exits takes its time with it; Go and Node keep theirs.
func cpuSeconds(pid int) (float64, error) {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/schedstat")
	var ns int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err == nil {
			ns += n
		}
	}
	if ns > 0 {
		return float64(ns) / 1e9, nil
	}
	return statSeconds(pid)
}

// statSeconds is the user+system CPU time of /proc/<pid>/stat.
func statSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count fields after ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bench: malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("bench: short /proc stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(ut+st) / clockTick, nil
}

// rssBytes is a process's resident set size.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("bench: no VmRSS")
}

// cpuMeter measures the CPU a process uses over a window.
type cpuMeter struct {
	pid   int
	cpu   float64
	start time.Time
}

func startCPU(pid int) cpuMeter {
	c, _ := cpuSeconds(pid)
	return cpuMeter{pid: pid, cpu: c, start: time.Now()}
}

// stop returns the CPU seconds used and the wall seconds elapsed.
func (m cpuMeter) stop() (cpu, wall float64) {
	c, _ := cpuSeconds(m.pid)
	return c - m.cpu, time.Since(m.start).Seconds()
}

// proc is a child process: redis-server, roomlb router/sidecar, haproxy, a
// load-generator worker or a Node monolith.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startProc starts a child that is killed if this process dies; its output
// goes to dir/<name>.log.
func startProc(dir, name string, argv []string, env []string) (*proc, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procattr.Tied()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill ends the process at once: the bench tears its worlds down whole
// (Redis included), so nothing needs a graceful stop, and a sidecar's drain
// would wait for its monolith's state writes.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// startServer is startProc for a server: it returns once readyURL answers
// 200 within limit, and kills the process when it does not.
func startServer(dir, name string, argv []string, readyURL string, limit time.Duration) (*proc, error) {
	p, err := startProc(dir, name, argv, nil)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(p, readyURL, limit); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// waitHTTP polls url until it answers 200, the process exits or limit
// passes.
func waitHTTP(p *proc, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	c := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if p != nil && p.exited() {
			return fmt.Errorf("bench: %s exited before it was ready: %v", p.name, p.err)
		}
		if res, err := c.Get(url); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("bench: %s not ready at %s within %v", p.name, url, limit)
}

// freeAddr asks the kernel for a free loopback port. Another process may
// take it before the child binds; the child then fails clearly.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// redisServer is a private redis-server without persistence.
type redisServer struct {
	*proc
	url string
	rdb *redis.Client
}

func startRedis(dir, name string) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("bench: no redis-server on PATH (apt-get install -y redis-server)")
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	rdir := filepath.Join(dir, name)
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return nil, err
	}
	p, err := startProc(dir, name, []string{bin, "--bind", host, "--port", port, "--save", "", "--appendonly", "no",
		"--dir", rdir, "--maxmemory-policy", "noeviction", "--maxclients", "10000"}, nil)
	if err != nil {
		return nil, err
	}
	r := &redisServer{proc: p, url: "redis://" + addr, rdb: redis.NewClient(&redis.Options{Addr: addr, PoolSize: 32})}
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := r.rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			// A new Redis: roomlb's first claims need not wait out a
			// recovery window (registry.Bootstrap).
			reg, err := registry.New(r.rdb, registry.Config{})
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err = reg.Bootstrap(ctx)
				cancel()
			}
			if err != nil {
				r.close()
				return nil, fmt.Errorf("bench: %w", err)
			}
			return r, nil
		}
		if i > 500 || p.exited() {
			r.close()
			return nil, fmt.Errorf("bench: redis-server did not come up: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *redisServer) close() {
	r.rdb.Close()
	r.kill()
}

// commandStats is INFO commandstats: calls per command.
func commandStats(ctx context.Context, rdb *redis.Client) (map[string]int64, error) {
	s, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for line := range strings.SplitSeq(s, "\n") {
		// cmdstat_get:calls=3,usec=...
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		n, err := strconv.ParseInt(calls, 10, 64)
		if err == nil {
			out[strings.TrimPrefix(name, "cmdstat_")] = n
		}
	}
	return out, nil
}
