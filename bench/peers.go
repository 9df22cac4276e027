package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/internal/nodemonolith"
	"github.com/roomlb/roomlb/ott/otttest"
)

// Monolith kinds.
const (
	MonolithFake = "fake" // the Go fake of ott/otttest, in this process
	MonolithNode = "node" // the Node reference monolith, a process
)

// monolith is one running monolith of either kind.
type monolith struct {
	kind         string
	balancerAddr string
	httpAddr     string
	fake         *otttest.Monolith
	node         *nodemonolith.Process
	rdb          *redis.Client // the monolith's Redis (state, sessions, refdb)
}

// pid is the monolith's process: this one for the fake.
func (m *monolith) pid() int {
	if m.node != nil {
		return nodePID(m.node)
	}
	return os.Getpid()
}

func startMonolith(kind string, app *redisServer, tweak func(*otttest.Config)) (*monolith, error) {
	m := &monolith{kind: kind, rdb: app.rdb}
	switch kind {
	case MonolithNode:
		p, err := nodemonolith.Launch(nodemonolith.Options{RedisURL: app.url})
		if err != nil {
			return nil, err
		}
		m.node, m.balancerAddr, m.httpAddr = p, p.BalancerAddr, p.HTTPAddr
	case MonolithFake, "":
		m.kind = MonolithFake
		cfg := otttest.Config{Redis: app.rdb}
		if tweak != nil {
			tweak(&cfg)
		}
		f, err := otttest.New(cfg)
		if err != nil {
			return nil, err
		}
		m.fake, m.balancerAddr, m.httpAddr = f, f.BalancerAddr(), f.HTTPAddr()
	default:
		return nil, fmt.Errorf("bench: unknown monolith %q: want fake or node", kind)
	}
	return m, nil
}

func (m *monolith) close() {
	if m.fake != nil {
		m.fake.Close()
	}
	if m.node != nil {
		m.node.Kill()
	}
}

// nodePID finds the Node monolith's pid: nodemonolith does not export its
// command, so it is looked up by the listening balancer port.
func nodePID(p *nodemonolith.Process) int {
	_, port, _ := strings.Cut(p.BalancerAddr, ":")
	pid, _ := pidListening(port)
	return pid
}

// pidListening finds the process listening on a loopback TCP port through
// /proc/net/tcp and the processes' fds.
func pidListening(port string) (int, error) {
	n, err := strconv.Atoi(port)
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0, err
	}
	want := fmt.Sprintf(":%04X", n)
	inode := ""
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		// local_address, st == 0A (LISTEN), inode is field 9.
		if len(f) > 9 && strings.HasSuffix(f[1], want) && f[3] == "0A" {
			inode = f[9]
			break
		}
	}
	if inode == "" {
		return 0, fmt.Errorf("bench: nothing listens on port %s", port)
	}
	target := "socket:[" + inode + "]"
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		if l, err := os.Readlink(fd); err == nil && l == target {
			pid, _ := strconv.Atoi(strings.Split(fd, "/")[2])
			return pid, nil
		}
	}
	return 0, fmt.Errorf("bench: no process holds port %s", port)
}

// grant gets a session token from the monolith's HTTP API.
func grant(httpAddr string) (string, error) {
	res, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + httpAddr + "/api/auth/grant")
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var g struct{ Token string }
	b, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(b, &g); err != nil || g.Token == "" {
		return "", fmt.Errorf("bench: grant: %d %s", res.StatusCode, b)
	}
	return g.Token, nil
}

// addRooms puts rooms in the monolith's database (refdb:rooms), loaded
// nowhere.
func addRooms(ctx context.Context, rdb *redis.Client, names []string) error {
	pipe := rdb.Pipeline()
	for i, n := range names {
		pipe.HSet(ctx, otttest.RefDBKey, strings.ToLower(n),
			`{"name":"`+n+`","title":"","description":"","visibility":"public","queueMode":"manual"}`)
		if i%1000 == 999 {
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
	}
	_, err := pipe.Exec(ctx)
	return err
}

func roomNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + "-" + strconv.Itoa(i)
	}
	return out
}

// roomlbProc is a `roomlb router` or `roomlb sidecar` process.
type roomlbProc struct {
	*proc
	addr  string // client address (router) or ingress (sidecar)
	admin string // router admin address; sidecar: same as addr
}

// startSidecar runs `roomlb sidecar` for the monolith, registered in the
// registry's Redis.
func startSidecar(e *env, name, nodeID, registryURL string, m *monolith, extra ...string) (*roomlbProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := append([]string{e.opts.Binary, "sidecar", "--node-id", nodeID, "--listen", addr,
		"--monolith", "ws://" + m.balancerAddr + "/", "--redis-url", registryURL, "--secret", e.secret,
		"--log-level", "warn", "--announce-channel", "-"}, extra...)
	p, err := startServer(e.dir, name, args, "http://"+addr+"/readyz", 15*time.Second)
	if err != nil {
		return nil, err
	}
	return &roomlbProc{proc: p, addr: addr, admin: addr}, nil
}

// startRouter runs `roomlb router` over the registry's Redis.
func startRouter(e *env, name, registryURL string) (*roomlbProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p, err := startServer(e.dir, name, []string{e.opts.Binary, "router", "--listen", addr, "--admin-listen", admin,
		"--redis-url", registryURL, "--secret", e.secret, "--log-level", "warn",
		// The load generator opens thousands of connections, and creates
		// rooms by the hundred, from a few loopback addresses.
		"--max-conns-per-addr", "-1", "--creates-per-minute", "-1"}, "http://"+admin+"/readyz", 15*time.Second)
	if err != nil {
		return nil, err
	}
	return &roomlbProc{proc: p, addr: addr, admin: admin}, nil
}

// startHAProxy runs HAProxy as a plain HTTP/WebSocket reverse proxy in
// front of the sidecar, adding the shared secret as a router would. It has
// no room awareness: one backend, the sidecar.
func startHAProxy(e *env, name, sidecarAddr string) (*roomlbProc, error) {
	bin := e.opts.HAProxy
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("haproxy"); err != nil {
			return nil, errNoHAProxy
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`global
  maxconn 9500
  nbthread %d
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
frontend health
  bind %s
  http-request return status 200 content-type text/plain string ok
frontend clients
  bind %s
  default_backend sidecar
backend sidecar
  http-request set-header X-Roomlb-Secret %s
  server s1 %s
`, e.cores, admin, addr, e.secret, sidecarAddr)
	path := filepath.Join(e.dir, name+".cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p, err := startServer(e.dir, name, []string{bin, "-db", "-f", path}, "http://"+admin+"/", 10*time.Second)
	if err != nil {
		return nil, err
	}
	return &roomlbProc{proc: p, addr: addr, admin: admin}, nil
}
