// Package logx adapts other libraries' logging to slog.
package logx

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultEvery is the window of Redis's rate limit: at most one line per
// distinct message per window.
const DefaultEvery = 10 * time.Second

// maxKeys bounds the kinds of messages Redis remembers: past it, windows
// that ended without repeats are forgotten, and if that is not enough, new
// kinds are logged without a limit until there is room.
const maxKeys = 256

// Redis is go-redis's logger (redis.SetLogger takes it): it sends the
// library's messages through a slog.Logger, at warn level (error level for
// recovered panics), as "go-redis: MESSAGE", and rate-limits them.
//
// Messages are distinct when they differ in more than their numbers
// (attempt counts, connection ids). The first of a kind is logged at once;
// its repeats within the window are counted, and when the window ends the
// latest of them is logged once with suppressed=N, the number of lines left
// out since the previous one, which starts a new window. A Redis that stays
// down thus gives one line per window per kind of message, each with its
// count, and the count of the last repeats is logged when the window they
// fell in ends.
type Redis struct {
	every  time.Duration
	target atomic.Pointer[slog.Logger]

	mu     sync.Mutex
	window map[string]*window
}

// window is one kind of message's current window.
type window struct {
	until      time.Time
	suppressed int
	last       string     // the latest suppressed message
	level      slog.Level // of last
	timer      *time.Timer
}

// NewRedis returns a go-redis logger that logs to log, at most one line per
// distinct message per every (0: DefaultEvery).
func NewRedis(log *slog.Logger, every time.Duration) *Redis {
	if every <= 0 {
		every = DefaultEvery
	}
	r := &Redis{every: every, window: map[string]*window{}}
	r.SetLogger(log)
	return r
}

// SetLogger makes log the logger of the messages from now on; nil discards
// them.
func (r *Redis) SetLogger(log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r.target.Store(log)
}

var numbers = regexp.MustCompile(`[0-9]+`)

// Printf logs one message of go-redis (the interface of redis.SetLogger).
func (r *Redis) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	msg = strings.TrimPrefix(msg, "redis: ")
	level := slog.LevelWarn
	if strings.Contains(msg, "panic") {
		level = slog.LevelError
	}
	if !r.target.Load().Enabled(ctx, level) {
		return
	}
	key := numbers.ReplaceAllString(msg, "N")
	now := time.Now()

	r.mu.Lock()
	w := r.window[key]
	if w != nil && now.Before(w.until) {
		w.suppressed++
		w.last, w.level = msg, level
		if w.timer == nil {
			w.timer = time.AfterFunc(w.until.Sub(now), func() { r.flush(key, w) })
		}
		r.mu.Unlock()
		return
	}
	// A new window. Repeats of the window that ended are counted in this
	// line (its timer has not logged them yet).
	suppressed := 0
	if w != nil {
		suppressed = w.suppressed
		if w.timer != nil {
			w.timer.Stop()
		}
	}
	if len(r.window) >= maxKeys {
		r.forget(now)
	}
	if len(r.window) < maxKeys || w != nil {
		r.window[key] = &window{until: now.Add(r.every)}
	} // else too many kinds at once: this one is logged, not limited
	r.mu.Unlock()
	r.log(ctx, level, msg, suppressed)
}

// flush logs the repeats of window w of key when it ends, and starts the
// next window.
func (r *Redis) flush(key string, w *window) {
	r.mu.Lock()
	if r.window[key] != w || w.suppressed == 0 {
		r.mu.Unlock()
		return
	}
	r.window[key] = &window{until: time.Now().Add(r.every)}
	r.mu.Unlock()
	r.log(context.Background(), w.level, w.last, w.suppressed)
}

// forget drops the windows that ended without repeats to count.
func (r *Redis) forget(now time.Time) {
	for k, w := range r.window {
		if !now.Before(w.until) && w.suppressed == 0 {
			delete(r.window, k)
		}
	}
}

func (r *Redis) log(ctx context.Context, level slog.Level, msg string, suppressed int) {
	var attrs []any
	if suppressed > 0 {
		attrs = []any{"suppressed", suppressed}
	}
	r.target.Load().Log(ctx, level, "go-redis: "+msg, attrs...)
}
