package sidecar

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/ott"
	"github.com/roomlb/roomlb/registry"
)

// room is one room this node owns or is claiming. Its fields are guarded by
// Sidecar.mu, except the atomics, which the hot path reads without it.
type room struct {
	key  string
	name string // canonical casing once the monolith reported it

	lease registry.Lease
	// grant orders the leases by when this node was granted them (see
	// setLease).
	grant uint64
	// span is when the room was served at its epoch, for the serve log.
	span span
	// stale: Redis lost the registry since the lease was granted; the
	// lease is capped at Sidecar.staleUntil until the room is re-claimed
	// (see reclaim).
	stale bool
	// claimed is closed when the claim has an outcome; claimErr says which.
	claimed  chan struct{}
	claimErr error
	// until is the lease clock time (Sidecar.now) after which this node must
	// not serve the room: math.MaxInt64 while the lease is bound to the
	// heartbeat alone, the old generation's last heartbeat while it is
	// stale; 0 before the claim and after the room is fenced.
	until atomic.Int64
	// hb is the node's presence.hb: the lease is the node's for as long as
	// the session of its heartbeat key lives, and a router may take the
	// room once the key is gone, so the room is served only while the
	// heartbeat surely holds, and only in the life of the key
	// (heartbeat.life) it was claimed in: once the key lapsed, a new key
	// (a new session) does not give back what may have been taken
	// meanwhile.
	hb   *atomic.Pointer[heartbeat]
	life atomic.Uint64
	// lastChange is the lease clock time of the last thing seen that may
	// change a storable property of the room (a client request other than
	// chat and the like, a sync broadcast carrying one, an HTTP write): the
	// monolith writes the room to Redis StateDebounce later.
	lastChange atomic.Int64
	// lastSync is the lease clock time of the last sync broadcast carrying
	// a storable property: a change the monolith surely made, and whose
	// write surely follows.
	lastSync atomic.Int64
	// seenSince is the lease clock time since which the room has had joined
	// clients without a break; 0 while it has none. Only then does the
	// monolith send its changes here: before, they went unseen.
	seenSince int64
	// unloadSent: the move sent the monolith an unload of the room.
	unloadSent bool
	// seenFrom is, once the room moves, the moment since which every change
	// of it has been seen here; 0 if some may have gone unseen up to the
	// unload (see startMoving).
	seenFrom int64

	// loaded: the monolith has reported the room loaded (loaded or gossip)
	// and not unloaded since. Only then may unload be sent (§4.6).
	loaded bool
	// loader is the client whose join is loading the room; others wait.
	loader    *client
	waiting   []*client
	loadTimer *timer
	// loadSent: a load (a handoff's load, an HTTP request, or a join whose
	// client left) is in flight and loaded has not come yet.
	loadSent bool
	// loadStuck: the load in flight took longer than LoadTimeout; the next
	// gossip without the room ends it.
	loadStuck bool
	// loaderID is the client id of the last join sent to load the room.
	loaderID string

	clients map[*client]struct{} // joined
	// carried are the ids of joined clients carried over from the room's
	// previous owner whose join sequence is not over: the monolith's join
	// event for them is not passed on (see onRoomMsg).
	carried map[string]struct{}
	// The carry-over wave (see carry.go): carryWave once a carried client
	// joined; carriedExpect clients were expected back, carriedBack are;
	// while holding, client messages wait in held until holdTimer.
	carryWave     bool
	carriedExpect int
	carriedBack   int
	holdTimer     *timer
	// holding says client messages are held in held (guarded by heldMu,
	// which may be taken under Sidecar.mu and client.mu).
	holding atomic.Bool
	heldMu  sync.Mutex
	held    []heldMsg
	// movedClients is the number of clients the room had when it began
	// moving; its clients are closed once the monolith has unloaded it.
	movedClients int

	// moving: a drain is handing the room over; new clients are held.
	moving bool
	// movingNow mirrors moving for the hot path, which reads it without
	// Sidecar.mu: frames of a moving room are not forwarded.
	movingNow atomic.Bool
	// cost is how many clients the room had when it started moving.
	cost int
	// meta is the monolith's metadata of a room it loaded on its own, kept
	// until the claim succeeds and it can be written.
	meta *ott.RoomMetadata
	// The metadata as last reported, and whether the registry's copy is
	// behind it (metaLoop writes it). metaUsers is the client count
	// written.
	metaName, metaVisibility string
	metaRaw                  []byte
	metaUsers                int
	metaDirty                bool
	// unloaded is closed by the monolith's unloaded (drains wait on it).
	unloaded chan struct{}
	// gone: removed from the table; late events for it are ignored.
	gone bool
}

// hooks let tests order events that race in production; nil outside tests.
var hooks struct {
	// afterClaim runs when a claim's answer has come, before it is used.
	afterClaim func(room string)
	// beforeRelease runs before a background release is sent.
	beforeRelease func(registry.Lease)
	// beforeClientMsg runs when the link writer takes a client message
	// from its queue.
	beforeClientMsg func()
}

// timer wraps time.Timer so that room code can stop it when it is nil.
type timer struct{ t *time.Timer }

func (t *timer) stop() {
	if t != nil {
		t.t.Stop()
	}
}

func (s *Sidecar) newRoom(key, name string) *room {
	return &room{
		hb:       &s.presence.hb,
		key:      key,
		name:     name,
		claimed:  make(chan struct{}),
		clients:  make(map[*client]struct{}),
		unloaded: make(chan struct{}),
	}
}

// valid reports whether the lease may be used now: it has not run out and
// neither has the life of the node's heartbeat key it was claimed in.
func (r *room) valid(now int64) bool {
	u := r.until.Load()
	hb := r.hb.Load()
	return u != 0 && now < u && now < hb.until && r.life.Load() == hb.life
}

// invalidReason says why a claimed lease may not be used now, as fence
// takes it: "heartbeat" when the node's heartbeat ran out, else "expired"
// (a stale lease that was not re-claimed in time).
func (r *room) invalidReason(now int64) string {
	if u := r.until.Load(); u != 0 && now < u {
		return "heartbeat"
	}
	return "expired"
}

// claimRoom returns the room owned by this node, claiming it in Redis if
// nobody owns it. It waits for a claim another request started. The error
// is a *registry.OwnerError when another node owns the room.
func (s *Sidecar) claimRoom(ctx context.Context, key, name string) (*room, error) {
	var lk locked
	for {
		lk = s.lock()
		rm := s.rooms[key]
		if rm == nil {
			break // the lock is held: claim below
		}
		lk.unlock()
		select {
		case <-rm.claimed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		lk = s.lock()
		switch {
		case rm.gone:
			lk.unlock()
			continue // fenced or released meanwhile: look again
		case rm.claimErr != nil:
			err := rm.claimErr
			lk.unlock()
			return nil, err
		}
		lk.unlock()
		return rm, nil
	}
	// The lock is held and key is not in the table.
	rm := s.newRoom(key, name)
	s.rooms[key] = rm
	lk.unlock()
	return rm, s.finishClaim(ctx, rm)
}

// finishClaim claims rm (already in the table) in Redis and records the
// outcome; a failed claim leaves the table. A room the registry already
// gives to this node (a router stole it for this node, or an operator moved
// it here) is adopted: its epoch was handed out for this node and nobody
// has served it at that epoch. An epoch this node has given up itself is
// never adopted (see retired): the claim waits until Redis has forgotten it.
func (s *Sidecar) finishClaim(ctx context.Context, rm *room) error {
	var (
		lease registry.Lease
		err   error
	)
	var seq, life uint64
	for try := 0; ; try++ {
		lk := s.lock()
		seq = s.genSeq
		lk.unlock()
		cctx, cancel := s.cfg.redisCtx(ctx)
		err = s.presence.ensure(cctx)
		cancel()
		// The claim runs in this life of the heartbeat key or after it
		// lapsed: the room is the node's only as long as the session of
		// this life lives, and valid here only as long as this life is.
		hb := s.presence.hb.Load()
		life = hb.life
		if err == nil {
			lease, err = s.reg.Claim(ctx, rm.key, s.cfg.NodeID, hb.session)
		}
		if hooks.afterClaim != nil {
			hooks.afterClaim(rm.key)
		}
		var oe *registry.OwnerError
		if !errors.As(err, &oe) || oe.Owner.Node != s.cfg.NodeID || oe.Owner.Session != hb.session {
			break
		}
		if wait := s.retiredAt(rm.key, oe.Owner.Epoch); wait != nil && try < 3 {
			// Our own key, at an epoch this node fenced or released and
			// whose release has not reached Redis yet: once it has, the
			// room is free to claim at a new epoch.
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				err = fmt.Errorf("claim %s: waiting for its release: %w", rm.key, ctx.Err())
			}
			break
		} else if wait != nil {
			break // still ours at a retired epoch: refuse, the router retries
		}
		lease = registry.Lease{Room: rm.key, Node: s.cfg.NodeID, Session: hb.session, Epoch: oe.Owner.Epoch, Name: oe.Name, Mark: oe.Mark}
		err = nil
		break
	}
	lk := s.lock()
	defer lk.unlock()
	switch {
	case err == nil:
		s.metrics.claims.WithLabelValues("won").Inc()
	case isRedisDown(err):
		s.metrics.claims.WithLabelValues("error").Inc()
	default:
		s.metrics.claims.WithLabelValues("owned").Inc()
	}
	if err != nil {
		rm.claimErr = err
		lk.removeRoom(rm)
		close(rm.claimed)
		if rm.loaded {
			// The monolith loaded it on its own (HTTP) but it is not ours.
			lk.sendUnload(rm)
		}
		return err
	}
	lk.setLease(rm, lease)
	if rm.gone {
		// Dropped while the claim was in flight (a drain, the link lost):
		// the lease must not stay behind in Redis.
		rm.claimErr = errors.New("sidecar: room dropped while claiming")
		close(rm.claimed)
		lk.releaseLease(lease)
		return rm.claimErr
	}
	if lease.Name != "" && !rm.loaded {
		// The canonical casing the last owner recorded: the monolith finds
		// the room's state in Redis only under it (ott/PROTOCOL.md §7).
		rm.name = lease.Name
	}
	rm.life.Store(life)
	rm.until.Store(math.MaxInt64) // bound to the life alone
	if s.genSeq != seq {
		// Claimed (or adopted) before a loss of the registry found
		// meanwhile: maybe in the lost generation.
		lk.markStale(rm)
		s.signalReclaim()
	}
	close(rm.claimed)
	if rm.meta != nil {
		lk.writeMetaLocked(rm, rm.meta)
		rm.meta = nil
	}
	s.metrics.rooms.Set(float64(len(s.rooms)))
	return nil
}

// removeRoom drops rm from the table.
func (s locked) removeRoom(rm *room) {
	if rm.gone {
		return
	}
	rm.gone = true
	rm.until.Store(0)
	s.releaseHeld(rm)
	s.endSpan(rm)
	delete(s.orphanLoads, rm.loaderID)
	rm.loadTimer.stop()
	if s.rooms[rm.key] == rm {
		delete(s.rooms, rm.key)
	}
	s.metrics.rooms.Set(float64(len(s.rooms)))
}

// sendUnload asks the monolith to unload rm, but only when the monolith has
// said it holds it: an unload of a room it does not hold kills the real
// monolith.
func (s locked) sendUnload(rm *room) (sent bool) {
	if !rm.loaded || s.link == nil || s.unloading[rm.key] {
		return false
	}
	rm.loaded = false
	// The monolith drops every client of the room with the unload: no
	// leave may follow for them.
	for c := range rm.clients {
		c.kicked = true
	}
	s.unloading[rm.key] = true
	s.link.send(ott.Unload{Room: rm.name}.Append(nil))
	return true
}

// fence stops serving rm at once: its clients are closed with a code they
// reconnect on (the routers take them to the new owner) and the monolith
// unloads it.
func (s locked) fence(rm *room, reason string) {
	if rm.gone {
		return
	}
	s.log.Warn("sidecar: room fenced", "room", rm.key, "epoch", rm.lease.Epoch, "reason", reason)
	s.metrics.leasesLost.WithLabelValues(reason).Inc()
	s.closeRoomClients(rm, contract.CloseServiceRestart, "room moved")
	s.sendUnload(rm)
	if reason != "lost" {
		// Not kept in time (the heartbeat, or a stale lease after a
		// loss of the registry), but maybe still ours in Redis: give it
		// back, or it would stay this node's until its session ends.
		s.releaseRoom(rm)
	} else {
		s.removeRoom(rm)
	}
}

// closeRoomClients closes every joined and waiting client of rm; a close
// CloseServiceRestart says how many they were and what each sent that
// went to the monolith (client.closeMoved).
func (s locked) closeRoomClients(rm *room, code int, reason string) {
	n := len(rm.clients) + len(rm.waiting)
	if rm.loader != nil {
		n++
	}
	if rm.movedClients > 0 {
		n = rm.movedClients // as it was when the room began moving
	}
	closeOne := func(c *client) {
		if code == contract.CloseServiceRestart {
			c.closeMoved(reason, n)
		} else {
			c.close(code, reason)
		}
	}
	for c := range rm.clients {
		closeOne(c)
	}
	for _, c := range rm.waiting {
		closeOne(c)
	}
	if rm.loader != nil {
		closeOne(rm.loader)
	}
	rm.waiting = nil
	rm.loader = nil
}

// releaseIfIdle gives back a room that was claimed for a request that came
// to nothing (a failed auth, an HTTP request for a room that does not
// exist): nothing is loaded, loading or joined.
func (s *Sidecar) releaseIfIdle(rm *room) {
	lk := s.lock()
	defer lk.unlock()
	if !rm.loaded && rm.loader == nil && !rm.loadSent && len(rm.clients) == 0 && len(rm.waiting) == 0 && !rm.moving {
		lk.releaseRoom(rm)
	}
}

// releaseRoom drops rm and gives its lease back in the background.
func (s locked) releaseRoom(rm *room) {
	if rm.gone {
		return
	}
	s.removeRoom(rm)
	if rm.lease.Epoch == 0 {
		return
	}
	s.log.Debug("sidecar: releasing room", "room", rm.key, "epoch", rm.lease.Epoch, "loaded", rm.loaded, "clients", len(rm.clients))
	s.releaseLease(rm.lease)
}

// retiredLease is an epoch of a room this node has fenced or released. A
// claim that finds the room still owned by this node at that epoch must not
// adopt it: the release may reach Redis just after the claim did, and the
// node would serve a room with no key (another node could claim it).
type retiredLease struct {
	epoch int64
	// gone is closed once Redis no longer holds the room at epoch (the
	// release went through or found it taken); at is then the lease clock
	// time it happened.
	gone chan struct{}
	at   int64
}

// retire records that this node gives lease up.
func (s locked) retire(lease registry.Lease) {
	if r := s.retired[lease.Room]; r != nil && r.epoch >= lease.Epoch {
		return
	}
	s.retired[lease.Room] = &retiredLease{epoch: lease.Epoch, gone: make(chan struct{})}
}

// retiredAt returns, when this node has given room up at epoch (or later)
// and Redis may still hold it, a channel closed once it no longer does.
func (s *Sidecar) retiredAt(room string, epoch int64) <-chan struct{} {
	lk := s.lock()
	defer lk.unlock()
	if r := s.retired[room]; r != nil && r.epoch >= epoch {
		// Closed already when Redis forgot it after the claim read it: a
		// new claim finds the room free.
		return r.gone
	}
	return nil
}

// forgotten marks lease as no longer held in Redis.
func (s *Sidecar) forgotten(lease registry.Lease) {
	lk := s.lock()
	defer lk.unlock()
	if r := s.retired[lease.Room]; r != nil && r.epoch == lease.Epoch && r.at == 0 {
		r.at = s.now()
		close(r.gone)
	}
}

// pruneRetired forgets retired epochs Redis dropped more than a claim's
// timeout and a heartbeat TTL ago: every claim that could have read them has
// long returned (claims are bounded by claimTimeout).
func (s locked) pruneRetired(now int64) {
	for room, r := range s.retired {
		if r.at != 0 && now-r.at > int64(s.cfg.HeartbeatTTL+s.cfg.claimTimeout()) {
			delete(s.retired, room)
		}
	}
}

// release gives a lease back now; released is false when the room was no
// longer held at that epoch (someone else's by now: no error). When Redis
// cannot be reached the release is retried in the background and the error
// returned.
func (s *Sidecar) release(ctx context.Context, lease registry.Lease) (released bool, err error) {
	lk := s.lock()
	lk.retire(lease)
	lk.unlock()
	err = s.reg.Release(ctx, lease)
	var oe *registry.OwnerError
	if err == nil || errors.As(err, &oe) {
		s.forgotten(lease)
		return err == nil, nil
	}
	lk = s.lock()
	lk.releaseLease(lease)
	lk.unlock()
	return false, err
}

// releaseLease gives a lease back in the background, retrying while Redis
// cannot be reached, until it has or the sidecar stops.
func (s locked) releaseLease(lease registry.Lease) {
	s.retire(lease)
	s.wg.Add(1)
	go func() {
		s := s.Sidecar // runs without the lock
		defer s.wg.Done()
		if hooks.beforeRelease != nil {
			hooks.beforeRelease(lease)
		}
		backoff := s.cfg.HeartbeatTTL / 10
		for {
			ctx, cancel := s.cfg.redisCtx(context.Background())
			err := s.reg.Release(ctx, lease)
			cancel()
			var oe *registry.OwnerError
			if err == nil || errors.As(err, &oe) {
				s.forgotten(lease)
				return
			}
			s.log.Debug("sidecar: release", "room", lease.Room, "epoch", lease.Epoch, "err", err)
			select {
			case <-s.stopped:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		}
	}()
}
