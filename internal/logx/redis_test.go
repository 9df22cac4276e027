package logx

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/roomlb/roomlb/internal/roomlbtest"
)

func textLogger(w *roomlbtest.Buffer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

const dialFormat = "redis: connection pool: failed to dial after %d attempts: %v"

var refused = fmt.Errorf("dial tcp 127.0.0.1:6379: connect: connection refused")

// TestRedisRateLimit: a Redis that stays down gives one line per 10 s per
// kind of message, in slog's format, with the count of the lines left out.
func TestRedisRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out roomlbtest.Buffer
		r := NewRedis(textLogger(&out, slog.LevelInfo), 10*time.Second)
		ctx := context.Background()

		r.Printf(ctx, dialFormat, 3, refused)
		got := out.Take()
		want := `level=WARN msg="go-redis: connection pool: failed to dial after 3 attempts: dial tcp 127.0.0.1:6379: connect: connection refused"`
		if len(got) != 1 || got[0] != want {
			t.Fatalf("first message logged as %q, want %q", got, want)
		}

		// 175 a minute, as the operator saw: 29 in the rest of the window,
		// with varying numbers (still one kind of message).
		for i := range 29 {
			time.Sleep(340 * time.Millisecond)
			r.Printf(ctx, dialFormat, 1+i%3, refused)
		}
		// Another kind of message is logged at once.
		r.Printf(ctx, "redis: connection pool: conn[%d] rejected by hook, returning to pool", 7)
		if got := out.Take(); len(got) != 1 || !strings.Contains(got[0], "conn[7] rejected") {
			t.Fatalf("within the window: %q, want only the other message", got)
		}

		// The window ends: the latest repeat, with the count.
		time.Sleep(10*time.Second - 29*340*time.Millisecond + time.Millisecond)
		synctest.Wait()
		got = out.Take()
		if len(got) != 1 || !strings.Contains(got[0], "failed to dial after 2 attempts") || !strings.HasSuffix(got[0], " suppressed=29") {
			t.Fatalf("at the window's end: %q, want the latest repeat with suppressed=29", got)
		}

		// Still down for a minute: one line per window.
		for range 175 {
			time.Sleep(60 * time.Second / 175)
			r.Printf(ctx, dialFormat, 3, refused)
		}
		synctest.Wait()
		if got := out.Take(); len(got) != 6 {
			t.Fatalf("a minute of failures gave %d lines, want 6:\n%s", len(got), strings.Join(got, "\n"))
		}

		// Redis is back: the last repeats are counted when their window
		// ends, then nothing.
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if got := out.Take(); len(got) != 1 || !strings.Contains(got[0], "suppressed=") {
			t.Fatalf("after the failures stopped: %q, want one last count", got)
		}
		// A window without repeats ends silently; the next message is
		// logged at once, without a count.
		r.Printf(ctx, dialFormat, 3, refused)
		time.Sleep(time.Minute)
		synctest.Wait()
		r.Printf(ctx, dialFormat, 3, refused)
		if got := out.Take(); len(got) != 2 || strings.Contains(got[0]+got[1], "suppressed") {
			t.Fatalf("two messages a minute apart: %q, want both, without counts", got)
		}
	})
}

// TestRedisLevels: warnings follow the logger's level; recovered panics are
// errors; a nil logger discards.
func TestRedisLevels(t *testing.T) {
	var out roomlbtest.Buffer
	r := NewRedis(textLogger(&out, slog.LevelError), 0)
	r.Printf(context.Background(), dialFormat, 3, refused)
	r.Printf(context.Background(), "addIdleConn panic: %+v\n", "boom")
	got := out.Take()
	if len(got) != 1 || got[0] != `level=ERROR msg="go-redis: addIdleConn panic: boom"` {
		t.Fatalf("at level error: %q, want the panic alone", got)
	}
	r.SetLogger(nil)
	r.Printf(context.Background(), "addIdleConn panic: %+v", "again")
	if got := out.Take(); got != nil {
		t.Fatalf("after SetLogger(nil): %q", got)
	}
}

// TestRedisForgets: many kinds of messages do not grow the memory without
// bound.
func TestRedisForgets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := NewRedis(slog.New(slog.DiscardHandler), time.Second)
		for i := range 10 * maxKeys {
			r.Printf(context.Background(), "error %s", strings.Repeat("x", i%(2*maxKeys)))
			if i%maxKeys == 0 {
				time.Sleep(2 * time.Second)
			}
		}
		r.mu.Lock()
		n := len(r.window)
		r.mu.Unlock()
		if n > maxKeys {
			t.Fatalf("%d windows remembered, want at most %d", n, maxKeys)
		}
	})
}
