package chaos

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/roomlb/roomlb/internal/nodemonolith"
	"github.com/roomlb/roomlb/internal/procattr"
)

// child is one incarnation of a process: a restart makes a new one.
type child interface {
	signal(sig syscall.Signal) error
	// kill sends SIGKILL and waits for the process to end.
	kill()
	// done is closed when the process has ended; err is then its exit.
	done() <-chan struct{}
	err() error
}

// proc is a child started with os/exec: redis-server, roomlb sidecar or
// router. Its output is appended to a log file.
type proc struct {
	cmd  *exec.Cmd
	exit chan struct{}
	werr error
}

// startProc starts argv with its stdout and stderr appended to logPath. The
// child gets SIGKILL if this process dies, so none is left behind.
func startProc(logPath string, argv []string, env []string) (*proc, error) {
	logf, err := openLog(logPath)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "--- chaos: start %s at %s\n", filepath.Base(argv[0]), time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procattr.Tied()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("chaos: start %s: %w", argv[0], err)
	}
	p := &proc{cmd: cmd, exit: make(chan struct{})}
	go func() { // ends with the process; kill waits for it
		p.werr = cmd.Wait()
		logf.Close()
		close(p.exit)
	}()
	return p, nil
}

func openLog(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}

func (p *proc) signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }
func (p *proc) done() <-chan struct{}           { return p.exit }
func (p *proc) err() error                      { return p.werr }

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.exit
}

// monolithProc is a Node reference monolith started by nodemonolith.
type monolithProc struct {
	p    *nodemonolith.Process
	exit chan struct{}
	werr error
	logf io.Closer
}

// startMonolith launches the reference monolith on fixed ports, its stderr
// appended to logPath.
func startMonolith(logPath, dir, redisURL string, httpPort, balancerPort int) (*monolithProc, error) {
	logf, err := openLog(logPath)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "--- chaos: start monolith at %s\n", time.Now().Format(time.RFC3339Nano))
	p, err := nodemonolith.Launch(nodemonolith.Options{
		Dir:      dir,
		RedisURL: redisURL,
		Env:      []string{fmt.Sprintf("PORT=%d", httpPort), fmt.Sprintf("BALANCING_PORT=%d", balancerPort), "LOG_LEVEL=info"},
		Log:      &syncWriter{w: logf},
	})
	if err != nil {
		logf.Close()
		return nil, err
	}
	m := &monolithProc{p: p, exit: make(chan struct{}), logf: logf}
	go func() { // ends with the process
		_, m.werr = p.Wait(100 * 365 * 24 * time.Hour)
		close(m.exit)
	}()
	return m, nil
}

func (m *monolithProc) signal(sig syscall.Signal) error { return m.p.Signal(sig) }
func (m *monolithProc) done() <-chan struct{}           { return m.exit }
func (m *monolithProc) err() error                      { return m.werr }

func (m *monolithProc) kill() {
	m.p.Kill()
	<-m.exit
	m.logf.Close()
}

// syncWriter serializes writes: os/exec copies a non-*os.File stderr from a
// goroutine of its own.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}
