package router

import (
	"context"
	"sync"
	"time"

	"github.com/roomlb/roomlb/registry"
)

// owner is a cached owner of a room.
type owner struct {
	node  string
	epoch int64
	// placed marks a placement this router made and no claim has confirmed
	// yet (epoch 0): concurrent requests for the room go to the same node
	// instead of racing two claims. It is trusted until expires (unix ns).
	placed  bool
	expires int64
}

// ownerCache maps room keys to owners. Registry events keep it fresh:
// claims, moves and steals set entries (never to an older epoch), releases
// and node events drop them, a resync clears it. A lookup that missed reads
// Redis and caches its answer only if no invalidating event arrived
// meanwhile (seq), so a release that raced the read is not undone by it.
type ownerCache struct {
	max int

	mu      sync.RWMutex
	m       map[string]owner
	seq     uint64
	waiters map[string]*waiter
	flights map[string]*flight
}

// waiter is the channel the requests held for one room share; n counts
// them, so the last one to stop waiting without a wake removes it.
type waiter struct {
	ch chan struct{}
	n  int
}

// flight is one Redis lookup of a room that concurrent misses share.
type flight struct {
	done chan struct{}
	o    registry.Owner
	err  error
}

func newOwnerCache(max int) *ownerCache {
	return &ownerCache{
		max:     max,
		m:       make(map[string]owner),
		waiters: make(map[string]*waiter),
		flights: make(map[string]*flight),
	}
}

// get returns the cached owner of room; it does not allocate.
func (c *ownerCache) get(room []byte) (owner, bool) {
	c.mu.RLock()
	o, ok := c.m[string(room)]
	c.mu.RUnlock()
	if ok && o.placed && time.Now().UnixNano() > o.expires {
		return owner{}, false
	}
	return o, ok
}

// lookup reads room's owner from Redis through read, sharing the read with
// concurrent lookups of the same room, and caches the answer unless an
// event may have made it stale while it was read.
func (c *ownerCache) lookup(ctx context.Context, room string, read func(context.Context, string) (registry.Owner, error)) (registry.Owner, error) {
	c.mu.Lock()
	if f, ok := c.flights[room]; ok {
		c.mu.Unlock()
		select {
		case <-f.done:
			return f.o, f.err
		case <-ctx.Done():
			return registry.Owner{}, ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	c.flights[room] = f
	seq := c.seq
	c.mu.Unlock()

	f.o, f.err = read(ctx, room)

	c.mu.Lock()
	delete(c.flights, room)
	if f.err == nil && c.seq == seq {
		if cur, ok := c.m[room]; !ok || cur.placed || cur.epoch < f.o.Epoch {
			c.putLocked(room, owner{node: f.o.Node, epoch: f.o.Epoch})
		}
	}
	c.mu.Unlock()
	close(f.done)
	return f.o, f.err
}

// set records that node owns room at epoch (an event, a steal, a sidecar's
// hint), unless a newer epoch is known. It wakes requests held for room.
func (c *ownerCache) set(room, node string, epoch int64) {
	c.mu.Lock()
	if cur, ok := c.m[room]; !ok || cur.placed || cur.epoch < epoch {
		c.putLocked(room, owner{node: node, epoch: epoch})
	}
	c.wakeLocked(room)
	c.mu.Unlock()
}

// place records that this router placed room on node for ttl, unless an
// owner is known.
func (c *ownerCache) place(room, node string, ttl time.Duration) {
	c.mu.Lock()
	if cur, ok := c.m[room]; !ok || (cur.placed && cur.node != node) {
		c.putLocked(room, owner{node: node, placed: true, expires: time.Now().Add(ttl).UnixNano()})
	}
	c.mu.Unlock()
}

// drop forgets room's owner if it is still node at epoch (0 matches a
// placement): a sidecar said it is not.
func (c *ownerCache) drop(room, node string, epoch int64) {
	c.mu.Lock()
	if cur, ok := c.m[room]; ok && cur.node == node && cur.epoch == epoch {
		delete(c.m, room)
	}
	c.mu.Unlock()
}

// release forgets room's owner unless it is newer than epoch.
func (c *ownerCache) release(room string, epoch int64) {
	c.mu.Lock()
	c.seq++
	if cur, ok := c.m[room]; ok && (cur.placed || cur.epoch <= epoch) {
		delete(c.m, room)
	}
	c.wakeLocked(room)
	c.mu.Unlock()
}

// dropNode forgets every room owned by (or placed on) node.
func (c *ownerCache) dropNode(node string) {
	c.mu.Lock()
	c.seq++
	for room, o := range c.m {
		if o.node == node {
			delete(c.m, room)
			c.wakeLocked(room)
		}
	}
	c.mu.Unlock()
}

// clear forgets everything (events may have been missed) and wakes every
// held request.
func (c *ownerCache) clear() {
	c.mu.Lock()
	c.seq++
	clear(c.m)
	for room, w := range c.waiters {
		close(w.ch)
		delete(c.waiters, room)
	}
	c.mu.Unlock()
}

// wait returns a waiter whose channel is closed at the next ownership
// change of room. The caller must call unwait when it stops waiting: a
// room whose owner does not change (its lease just runs out) would
// otherwise keep its waiter for good.
func (c *ownerCache) wait(room string) *waiter {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.waiters[room]
	if !ok {
		w = &waiter{ch: make(chan struct{})}
		c.waiters[room] = w
	}
	w.n++
	return w
}

// unwait says one caller of wait no longer waits on w; the last one removes
// w unless a wake (which removes it itself) came first.
func (c *ownerCache) unwait(room string, w *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.waiters[room]; ok && cur == w {
		if w.n--; w.n == 0 {
			delete(c.waiters, room)
		}
	}
}

func (c *ownerCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

func (c *ownerCache) wakeLocked(room string) {
	if w, ok := c.waiters[room]; ok {
		close(w.ch)
		delete(c.waiters, room)
	}
}

// putLocked stores an entry, evicting an arbitrary one when full (map
// iteration order is random enough for a cache rebuilt from Redis anyway).
func (c *ownerCache) putLocked(room string, o owner) {
	if _, ok := c.m[room]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[room] = o
}
