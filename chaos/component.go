package chaos

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// component is a process the run may kill, pause, stop and start again.
type component struct {
	name   string
	start  func() (child, error)
	ready  func(ctx context.Context) error // nil: ready when started
	exits  *exitLog
	wg     *sync.WaitGroup
	mu     sync.Mutex
	cur    child
	expect bool // the current incarnation's end is the run's doing
}

// exitLog records processes that ended on their own.
type exitLog struct {
	mu    sync.Mutex
	exits []processExit
}

// processExit is a process that ended without the run killing or stopping
// it: a crash.
type processExit struct {
	Name string
	At   time.Time
	Err  string
}

func (l *exitLog) add(e processExit) {
	l.mu.Lock()
	l.exits = append(l.exits, e)
	l.mu.Unlock()
}

func (l *exitLog) list() []processExit {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]processExit(nil), l.exits...)
}

// launch starts a new incarnation and waits until it is ready.
func (c *component) launch(ctx context.Context) error {
	ch, err := c.start()
	if err != nil {
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	c.mu.Lock()
	c.cur, c.expect = ch, false
	c.mu.Unlock()
	c.wg.Add(1)
	go c.watch(ch)
	if c.ready == nil {
		return nil
	}
	if err := c.ready(ctx); err != nil {
		return fmt.Errorf("%s not ready: %w", c.name, err)
	}
	return nil
}

// watch records the incarnation's end when the run did not cause it.
func (c *component) watch(ch child) {
	defer c.wg.Done()
	<-ch.done()
	c.mu.Lock()
	expected := c.expect || c.cur != ch
	c.mu.Unlock()
	if !expected {
		msg := "exit 0"
		if err := ch.err(); err != nil {
			msg = err.Error()
		}
		c.exits.add(processExit{Name: c.name, At: time.Now(), Err: msg})
	}
}

func (c *component) current() child {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// running reports whether the current incarnation is alive.
func (c *component) running() bool {
	ch := c.current()
	if ch == nil {
		return false
	}
	select {
	case <-ch.done():
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the end.
func (c *component) kill() {
	c.mu.Lock()
	ch := c.cur
	c.expect = true
	c.mu.Unlock()
	if ch != nil {
		ch.kill()
	}
}

// signal sends sig to the current incarnation (SIGSTOP, SIGCONT).
func (c *component) signal(sig syscall.Signal) error {
	ch := c.current()
	if ch == nil {
		return fmt.Errorf("%s is not running", c.name)
	}
	return ch.signal(sig)
}

// term sends SIGTERM (a sidecar drains) and waits up to limit for the end;
// it kills the process after that, or when ctx ends, and says so.
func (c *component) term(ctx context.Context, limit time.Duration) error {
	c.mu.Lock()
	ch := c.cur
	c.expect = true
	c.mu.Unlock()
	if ch == nil {
		return nil
	}
	ch.signal(syscall.SIGTERM)
	select {
	case <-ch.done():
		return ch.err()
	case <-time.After(limit):
		ch.kill()
		return fmt.Errorf("%s did not exit within %v of SIGTERM", c.name, limit)
	case <-ctx.Done():
		ch.kill()
		return ctx.Err()
	}
}
