package router

import (
	"context"
	"testing"
	"time"
)

// TestHoldForgetsItsWaiter: a held request that times out (no event for its
// room ever comes, e.g. a lease that just runs out) leaves nothing behind in
// the cache's waiters, and does not take the channel away from a request
// still held for the same room.
func TestHoldForgetsItsWaiter(t *testing.T) {
	r := &Router{cache: newOwnerCache(16), life: context.Background()}
	hold := func(d time.Duration) bool {
		c := &call{r: r, room: "lobby", deadline: time.Now().Add(time.Minute)}
		return c.holdFor(d)
	}
	waiters := func() int {
		r.cache.mu.Lock()
		defer r.cache.mu.Unlock()
		return len(r.cache.waiters)
	}

	if !hold(time.Millisecond) {
		t.Fatal("hold reported its deadline passed")
	}
	if n := waiters(); n != 0 {
		t.Fatalf("after a hold timed out: %d rooms in waiters, want 0", n)
	}

	// A long hold and a short one share the room's channel: the short one
	// leaving must not stop an event from waking the long one.
	woken := make(chan struct{})
	go func() {
		hold(time.Minute)
		close(woken)
	}()
	for waiters() == 0 {
		time.Sleep(time.Millisecond)
	}
	hold(time.Millisecond)
	if n := waiters(); n != 1 {
		t.Fatalf("with one hold left: %d rooms in waiters, want 1", n)
	}
	r.cache.set("lobby", "node-a", 7)
	select {
	case <-woken:
	case <-time.After(10 * time.Second):
		t.Fatal("an ownership change did not wake the remaining hold")
	}
	if n := waiters(); n != 0 {
		t.Fatalf("after the wake: %d rooms in waiters, want 0", n)
	}
}
