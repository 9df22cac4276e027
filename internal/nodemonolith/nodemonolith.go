// Package nodemonolith starts the Node reference monolith of
// testdata/monolith: a real OpenTogetherTube-like process speaking the
// balancer protocol on loopback, for end-to-end tests and `roomlb dev`.
package nodemonolith

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/procattr"
)

// Dir is the reference monolith's folder in this checkout.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "monolith")
}

var (
	installMu sync.Mutex
	installed = map[string]bool{}
)

// Install checks that Node is there and runs `npm ci` in dir when its
// node_modules is missing (once per process).
func Install(dir string, log io.Writer) error {
	if _, err := exec.LookPath("node"); err != nil {
		return errors.New("node is not on PATH: install Node 20 (the reference monolith needs it)")
	}
	installMu.Lock()
	defer installMu.Unlock()
	if installed[dir] {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		fmt.Fprintf(log, "installing the reference monolith's packages (npm ci in %s)\n", dir)
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
		}
	}
	installed[dir] = true
	return nil
}

// Process is a running reference monolith.
type Process struct {
	HTTPAddr     string
	BalancerAddr string
	ID           string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Options says how to launch a monolith.
type Options struct {
	// Dir is the monolith's folder; "" means Dir().
	Dir      string
	RedisURL string
	// Env adds or overrides variables (KEY=value).
	Env []string
	// Log receives the monolith's stderr; nil discards it.
	Log io.Writer
}

// Launch starts a monolith with balancing enabled on ephemeral loopback
// ports and waits until it is ready. The process is killed if this process
// dies (Linux parent-death signal), so none is left behind. It runs in a
// process group of its own: a terminal's Ctrl-C, which signals the whole
// foreground group, reaches only this process, which stops the monolith
// itself (Stop) when it is done with it: `roomlb dev` after the sidecars
// have drained.
func Launch(o Options) (*Process, error) {
	if o.Dir == "" {
		o.Dir = Dir()
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if err := Install(o.Dir, o.Log); err != nil {
		return nil, err
	}
	cmd := exec.Command("node", "server.js")
	cmd.Dir = o.Dir
	cmd.Env = append(os.Environ(),
		"REDIS_URL="+o.RedisURL, "BALANCING_ENABLED=true", "PORT=0", "BALANCING_PORT=0", "LOG_LEVEL=warn")
	cmd.Env = append(cmd.Env, o.Env...)
	cmd.Stderr = o.Log
	cmd.SysProcAttr = procattr.Child()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the reference monolith: %w", err)
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if !sent && strings.HasPrefix(line, "monolith ready ") {
				for _, f := range strings.Fields(line)[2:] {
					k, v, _ := strings.Cut(f, "=")
					switch k {
					case "http":
						p.HTTPAddr = v
					case "balancer":
						p.BalancerAddr = v
					case "id":
						p.ID = v
					}
				}
				sent = true
				ready <- nil
			}
		}
		if !sent {
			ready <- errors.New("the reference monolith exited before it was ready")
		}
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	select {
	case err := <-ready:
		if err != nil {
			p.Kill()
			return nil, err
		}
	case <-time.After(15 * time.Second):
		p.Kill()
		return nil, errors.New("the reference monolith was not ready within 15s")
	}
	return p, nil
}

// Start is Launch for tests: the monolith logs to the test log and is
// killed when the test ends.
func Start(tb testing.TB, redisURL string, env ...string) *Process {
	tb.Helper()
	p, err := Launch(Options{RedisURL: redisURL, Env: env, Log: &logWriter{tb: tb}})
	if err != nil {
		tb.Fatalf("nodemonolith: %v", err)
	}
	tb.Cleanup(p.Kill)
	return p
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill kills the process and waits for it.
func (p *Process) Kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// Stop asks the monolith to shut down (SIGTERM: like the real one, it
// closes its balancer links and exits without writing its rooms) and kills
// it if it has not exited within limit.
func (p *Process) Stop(limit time.Duration) error {
	p.Signal(syscall.SIGTERM)
	if exited, err := p.Wait(limit); exited {
		return err
	}
	p.Kill()
	return fmt.Errorf("monolith did not exit within %v of SIGTERM", limit)
}

// Wait waits up to limit for the process to exit and returns its exit error
// (nil for exit 0).
func (p *Process) Wait(limit time.Duration) (exited bool, err error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(limit):
		return false, nil
	}
}

// logWriter sends the monolith's stderr to the test log.
type logWriter struct{ tb testing.TB }

func (w *logWriter) Write(b []byte) (int, error) {
	w.tb.Logf("monolith: %s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
