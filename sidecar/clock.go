package sidecar

import (
	"context"
	"time"
)

// clock is the lease clock: monotonic nanoseconds since the sidecar was
// built. Leases, heartbeats and serve-log stamps are all read on it, so a
// wall-clock step never moves a deadline.
type clock struct{ base time.Time }

// now is the lease clock's reading.
func (c clock) now() int64 { return int64(time.Since(c.base)) }

// at converts a time taken in this process to the lease clock (monotonic:
// time.Time keeps the monotonic reading).
func (c clock) at(t time.Time) int64 { return int64(t.Sub(c.base)) }

// wall is the wall-clock time, in Unix nanoseconds, of the lease clock
// reading t.
func (c clock) wall(t int64) int64 { return c.base.Add(time.Duration(t)).UnixNano() }

// every calls f every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f()
	}
}
