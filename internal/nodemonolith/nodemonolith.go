// Package nodemonolith starts the Node reference monolith of
// testdata/monolith for end-to-end tests: a real OpenTogetherTube-like
// process speaking the balancer protocol on loopback.
package nodemonolith

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Dir is the reference monolith's folder.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "monolith")
}

var installOnce sync.Once
var installErr error

// Install runs `npm ci` in Dir once per process when node_modules is
// missing, and fails the test with a clear message when Node is not there.
func Install(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		tb.Fatal("nodemonolith: node is not on PATH: install Node 20 (the reference monolith needs it)")
	}
	installOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(Dir(), "node_modules")); err == nil {
			return
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = Dir()
		if out, err := cmd.CombinedOutput(); err != nil {
			installErr = fmt.Errorf("npm ci in %s: %v\n%s", Dir(), err, out)
		}
	})
	if installErr != nil {
		tb.Fatal(installErr)
	}
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

// Start starts a monolith with balancing enabled on ephemeral loopback
// ports against redisURL; env adds or overrides variables (KEY=value). It is
// killed when the test ends, if still running.
func Start(tb testing.TB, redisURL string, env ...string) *Process {
	tb.Helper()
	Install(tb)
	cmd := exec.Command("node", "server.js")
	cmd.Dir = Dir()
	cmd.Env = append(os.Environ(),
		"REDIS_URL="+redisURL, "BALANCING_ENABLED=true", "PORT=0", "BALANCING_PORT=0", "LOG_LEVEL=warn")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = &logWriter{tb: tb}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("nodemonolith: start: %v", err)
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
			ready <- fmt.Errorf("exited before it was ready")
		}
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	select {
	case err := <-ready:
		if err != nil {
			tb.Fatalf("nodemonolith: %v", err)
		}
	case <-time.After(15 * time.Second):
		tb.Fatal("nodemonolith: not ready within 15s")
	}
	return p
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

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
