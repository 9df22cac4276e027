package sidecar

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/internal/roomlbtest"
	"github.com/roomlb/roomlb/registry"
)

// A node never adopts an epoch it has fenced. The race, ordered by hooks:
// a room is fenced and its release waits (Redis paused, in the field); a
// client rejoins and the node's claim finds the room still owned by the
// node at that epoch; only then does the release reach Redis and delete
// the key. Adopting the old epoch would serve the room with no key in
// Redis, free for any other node to claim.
func TestFencedEpochNeverAdopted(t *testing.T) {
	reg, srv := newTestRegistry(t)
	mono := startFake(t, srv)
	sc := startSidecar(t, reg, "node-a", mono.BalancerAddr(), nil)
	createRoom(t, sc.Addr(), "Harbour")
	token := grant(t, sc.Addr())
	cl, _, err := dial(t, sc.Addr(), "harbour", token)
	if err != nil {
		t.Fatal(err)
	}
	cl.next("you", 5*time.Second)
	ctx := context.Background()
	waitFor(t, 5*time.Second, "the room's state in Redis", func() bool {
		return srv.Client().Exists(ctx, "room:Harbour").Val() == 1
	})
	fenced, err := reg.Owner(ctx, "harbour")
	if err != nil {
		t.Fatal(err)
	}

	release := make(chan struct{})  // lets the held release go
	released := make(chan struct{}) // the key is gone from Redis
	var once sync.Once
	hooks.beforeRelease = func(l registry.Lease) {
		if l.Room == "harbour" {
			<-release
		}
	}
	hooks.afterClaim = func(room string) {
		if room != "harbour" {
			return
		}
		once.Do(func() {
			close(release)
			waitFor(t, 5*time.Second, "the release to reach Redis", func() bool {
				_, err := reg.Owner(ctx, "harbour")
				return err != nil
			})
			close(released)
		})
	}
	t.Cleanup(func() { hooks.beforeRelease, hooks.afterClaim = nil, nil })

	lk := sc.lock()
	lk.fence(sc.rooms["harbour"], "test")
	lk.unlock()
	if code := cl.closeCode(5 * time.Second); code != contract.CloseServiceRestart {
		t.Fatalf("client of the fenced room closed with %d, want %d", code, contract.CloseServiceRestart)
	}

	waitFor(t, 5*time.Second, "the monolith to unload the room", func() bool {
		lk := sc.lock()
		defer lk.unlock()
		return !sc.unloading["harbour"]
	})
	// The client comes back; its claim reads the old key, still there.
	cl2, res, err := dial(t, sc.Addr(), "harbour", token)
	<-released
	if err != nil {
		// Refused is fine too (the router retries); serving is not.
		if res == nil || res.StatusCode == 200 || res.StatusCode == 101 {
			t.Fatalf("rejoin: %v", err)
		}
		if cl2, _, err = dial(t, sc.Addr(), "harbour", token); err != nil {
			t.Fatalf("second rejoin: %v", err)
		}
	}
	cl2.next("you", 5*time.Second)
	now, err := reg.Owner(ctx, "harbour")
	if err != nil {
		t.Fatalf("the node serves the room with no key in Redis (it adopted fenced epoch %d): %v", fenced.Epoch, err)
	}
	lk = sc.lock()
	held := sc.rooms["harbour"].lease
	lk.unlock()
	if now.Node != "node-a" || now.Epoch <= fenced.Epoch || held.Epoch != now.Epoch {
		t.Fatalf("owner %+v, node holds epoch %d; want node-a at a new epoch above the fenced %d", now, held.Epoch, fenced.Epoch)
	}
}

// A client message is checked against its room's lease again when the link
// writer takes it from the queue: a backed-up link (the queue holds 65,536
// messages, each write may take writeWait) must not deliver it to the
// monolith after the node stopped serving the room.
func TestQueuedClientMsgExpires(t *testing.T) {
	reg, srv := newTestRegistry(t)
	mono := startFake(t, srv)
	sc := startSidecar(t, reg, "node-a", mono.BalancerAddr(), nil)
	createRoom(t, sc.Addr(), "Quay")
	cl, _, err := dial(t, sc.Addr(), "quay", grant(t, sc.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	cl.next("you", 5*time.Second)

	taken := make(chan struct{})
	resume := make(chan struct{})
	var once sync.Once
	hooks.beforeClientMsg = func() {
		once.Do(func() {
			close(taken)
			<-resume
		})
	}
	t.Cleanup(func() { hooks.beforeClientMsg = nil })
	cl.Chat("late")
	<-taken // valid when read and queued; the writer holds it now
	// The lease runs out while the message waits (as if the link were
	// backed up past the lease's deadline).
	lk := sc.lock()
	sc.rooms["quay"].until.Store(sc.now())
	lk.unlock()
	close(resume)
	// The writer drops it instead of writing it.
	waitFor(t, 5*time.Second, "the expired message to be dropped", func() bool {
		return roomlbtest.Counter(t, sc.Gatherer(), "roomlb_sidecar_client_messages_expired_total") == 1
	})
}

// The bounds of Redis calls follow the heartbeat TTL: a call that outlives
// half of it cannot keep the node's rooms served anyway, and a claim for a
// client may wait out one recovery window (a heartbeat TTL).
func TestTimeoutsFollowTheHeartbeat(t *testing.T) {
	for _, tc := range []struct{ hb, redis, claim time.Duration }{
		{100 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond},
		{600 * time.Millisecond, 300 * time.Millisecond, 900 * time.Millisecond},
		{3 * time.Second, 1500 * time.Millisecond, 4500 * time.Millisecond},
		{10 * time.Second, 2 * time.Second, 12 * time.Second},
	} {
		s := &Sidecar{cfg: Config{HeartbeatTTL: tc.hb}}
		if got := s.cfg.redisTimeout(); got != tc.redis {
			t.Errorf("heartbeat %v: Redis call bound %v, want %v", tc.hb, got, tc.redis)
		}
		if got := s.cfg.claimTimeout(); got != tc.claim {
			t.Errorf("heartbeat %v: claim bound %v, want %v", tc.hb, got, tc.claim)
		}
	}
}
