package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/internal/redistest"
)

// newRegistry returns a registry over a fresh redis-server, and the server.
func newRegistry(t testing.TB) (*Registry, *testRedis) {
	t.Helper()
	srv := newTestRedis(t)
	r, err := New(srv.Client(), Config{Logger: testLogger(t), RecoveryWindow: testRecoveryWindow})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r, srv
}

// testRedis is what a test's registry runs on: one redis-server, or, when
// the tests run on a cluster (see TestOnRedisCluster), a
// local Redis Cluster of three masters.
type testRedis struct {
	t       testing.TB
	srv     *redistest.Server
	cluster *redistest.Cluster
}

func newTestRedis(t testing.TB) *testRedis {
	t.Helper()
	if onCluster() {
		return &testRedis{t: t, cluster: redistest.NewCluster(t)}
	}
	return &testRedis{t: t, srv: redistest.New(t)}
}

func onCluster() bool { return redistest.OnCluster() }

// Client is a new client of the test's Redis, closed when the test ends.
func (b *testRedis) Client() redis.UniversalClient {
	if b.cluster != nil {
		return b.cluster.Client()
	}
	return b.srv.Client()
}

// Restart loses every server's data: each is stopped and started again,
// empty.
func (b *testRedis) Restart() {
	b.t.Helper()
	if b.cluster != nil {
		b.cluster.Restart()
		return
	}
	b.srv.Restart()
}

// Stop stops every server.
func (b *testRedis) Stop() {
	b.t.Helper()
	if b.cluster != nil {
		for _, m := range b.cluster.Masters {
			m.Stop()
		}
		return
	}
	b.srv.Stop()
}

// flushAll empties the registry's Redis: every master of a cluster.
func flushAll(t testing.TB, r *Registry) {
	t.Helper()
	ctx := context.Background()
	var err error
	if cc, ok := r.Client().(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return m.FlushAll(ctx).Err() })
	} else {
		err = r.Client().FlushAll(ctx).Err()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// testRecoveryWindow is the recovery window of test registries: short, so
// that tests that lose Redis's data do not wait long.
const testRecoveryWindow = 200 * time.Millisecond

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// roundTrips counts the round trips a client makes: one per command or
// pipeline sent.
type roundTrips struct{ n atomic.Int64 }

func (c *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}
func (c *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// counted returns a registry whose client counts its round trips.
func counted(t testing.TB, srv *testRedis) (*Registry, *roundTrips) {
	t.Helper()
	c := srv.Client()
	rt := &roundTrips{}
	c.AddHook(rt)
	r, err := New(c, Config{Logger: testLogger(t), RecoveryWindow: testRecoveryWindow})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r, rt
}

// live registers node with a heartbeat of a minute, unless it is
// registered already, and returns its session.
func live(t testing.TB, r *Registry, node string) string {
	t.Helper()
	b, err := r.Beat(context.Background(), Node{ID: node, Addr: "127.0.0.1:1"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return b.Session
}

func wantOwnerErr(t *testing.T, err error, sentinel error, node string, epoch int64) {
	t.Helper()
	var oe *OwnerError
	if !errors.As(err, &oe) || !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want *OwnerError wrapping %v", err, sentinel)
	}
	if oe.Owner.Node != node || (epoch != 0 && oe.Owner.Epoch != epoch) {
		t.Fatalf("err names owner %s at %d, want %s at %d", oe.Owner.Node, oe.Owner.Epoch, node, epoch)
	}
}

func TestClaimRace(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	const n = 200
	leases := make([]Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	sessions := make([]string, n)
	for i := range n {
		sessions[i] = live(t, r, fmt.Sprintf("node-%03d", i))
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			leases[i], errs[i] = r.Claim(ctx, "Contested", fmt.Sprintf("node-%03d", i), sessions[i])
		}()
	}
	close(start)
	wg.Wait()

	var winner Lease
	wins := 0
	for i, err := range errs {
		if err == nil {
			wins++
			winner = leases[i]
		}
	}
	if wins != 1 {
		t.Fatalf("%d claims won, want exactly 1", wins)
	}
	if winner.Room != "contested" {
		t.Errorf("lease room = %q, want the lower-case key %q", winner.Room, "contested")
	}
	for i, err := range errs {
		if err == nil {
			continue
		}
		var oe *OwnerError
		if !errors.As(err, &oe) || !errors.Is(err, ErrOwned) {
			t.Fatalf("loser %d: err = %v, want *OwnerError wrapping ErrOwned", i, err)
		}
		if oe.Owner.Node != winner.Node || oe.Owner.Epoch != winner.Epoch {
			t.Fatalf("loser %d learned owner %s at %d, want %s at %d", i, oe.Owner.Node, oe.Owner.Epoch, winner.Node, winner.Epoch)
		}
	}
	o, err := r.Owner(ctx, "CONTESTED")
	if err != nil {
		t.Fatal(err)
	}
	if o.Node != winner.Node || o.Session != winner.Session || o.Epoch != winner.Epoch {
		t.Fatalf("Owner = %+v, want %s in %s at %d", o, winner.Node, winner.Session, winner.Epoch)
	}
}

// TestEpochsIncrease claims and releases one room 1,000 times while Redis
// loses its data now and then, by FLUSHALL and by a restart without
// persistence: every epoch must be above the one before.
func TestEpochsIncrease(t *testing.T) {
	r, srv := newRegistry(t)
	ctx := context.Background()
	var last int64
	flushes, restarts := 0, 0
	for i := range 1000 {
		switch {
		case i%250 == 125:
			srv.Restart()
			restarts++
		case i%100 == 50:
			flushAll(t, r)
			flushes++
		}
		// node-a claims without heartbeating: a heartbeat after a
		// loss would open a recovery window of its own TTL.
		l, err := r.Claim(ctx, "phoenix", "node-a", "s")
		if err != nil {
			t.Fatalf("cycle %d: claim: %v", i, err)
		}
		if l.Epoch <= last {
			t.Fatalf("cycle %d: epoch %d after %d, want strictly increasing", i, l.Epoch, last)
		}
		last = l.Epoch
		if err := r.Release(ctx, l); err != nil {
			t.Fatalf("cycle %d: release: %v", i, err)
		}
	}
	t.Logf("1000 cycles, %d FLUSHALLs, %d restarts, last epoch %d", flushes, restarts, last)
}

// A room belongs to its owner's session: while the owner's heartbeat key
// lives with that session nobody else may claim it, with no renewal of the
// room itself; once the key is gone the room is free to claim at once, and
// a new key of the same node (a new session) does not give it back.
func TestOwnershipIsBoundToTheSession(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	a0, err := r.Beat(ctx, Node{ID: "node-a", Addr: "127.0.0.1:1"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	a, err := r.Claim(ctx, "lobby", "node-a", a0.Session)
	if err != nil {
		t.Fatal(err)
	}
	if n := r.Client().PTTL(ctx, r.ownerKey("lobby")).Val(); n != -1 {
		t.Fatalf("owner key has PTTL %v, want none (-1): the room lives with the session", n)
	}
	_, err = r.Claim(ctx, "lobby", "node-b", live(t, r, "node-b"))
	wantOwnerErr(t, err, ErrOwned, "node-a", a.Epoch)

	// The key runs out (deleted here, as an expiry would, with no timing
	// to wait on). node-a heartbeats again: a new session, which does
	// not own the room.
	r.Client().Del(ctx, r.nodeKey("node-a"))
	a1, err := r.Beat(ctx, Node{ID: "node-a", Addr: "127.0.0.1:1"}, time.Minute)
	if err != nil || a1.Session == a0.Session {
		t.Fatalf("beat after the key ran out: %+v, %v; want a new session", a1, err)
	}
	if _, err := r.Owner(ctx, "lobby"); !errors.Is(err, ErrNotOwned) {
		t.Fatalf("owner of a room of an ended session: %v, want ErrNotOwned", err)
	}
	b, err := r.Claim(ctx, "lobby", "node-b", live(t, r, "node-b"))
	if err != nil || b.Epoch <= a.Epoch {
		t.Fatalf("claim of a room of an ended session: %+v, %v; want a new epoch above %d", b, err, a.Epoch)
	}
	// The ended session's lease is worth nothing.
	wantOwnerErr(t, r.Release(ctx, a), ErrOwned, "node-b", b.Epoch)
	if err := r.WriteMeta(ctx, a, Meta{Name: "lobby"}); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("fenced write of the ended session: %v, want ErrStaleEpoch", err)
	}

	// A claim by the node itself in its new session: a room its old
	// session held is taken at a new epoch; one its live session holds is
	// reported owned by itself (the caller decides whether to adopt it).
	old, err := r.Claim(ctx, "den", "node-a", a0.Session)
	if err != nil {
		t.Fatal(err)
	}
	now, err := r.Claim(ctx, "den", "node-a", a1.Session)
	if err != nil || now.Epoch <= old.Epoch || now.Session != a1.Session {
		t.Fatalf("claim in the new session of a room of the old one: %+v, %v", now, err)
	}
	_, err = r.Claim(ctx, "den", "node-a", a1.Session)
	wantOwnerErr(t, err, ErrOwned, "node-a", now.Epoch)
}

// Claiming a free room is one round trip once its hash slot is known to be
// in use (the first claim of a slot by a process admits it first: two; four
// when the slot is new to the fleet: its mark, then its bit); one
// whose owner's session ended costs two more (the session is read, then the
// room taken if its value is still the one found dead). Nothing is sent for
// a room while it is owned.
func TestClaimRoundTrips(t *testing.T) {
	_, srv := newRegistry(t)
	r, rt := counted(t, srv)
	ctx := context.Background()
	sa := live(t, r, "node-a")
	sb := live(t, r, "node-b")
	if _, err := r.Claim(ctx, "warm", "node-a", sa); err != nil { // loads the scripts
		t.Fatal(err)
	}
	free := sameSlot(t, "warm", "free")
	before := rt.n.Load()
	if _, err := r.Claim(ctx, free, "node-a", sa); err != nil {
		t.Fatal(err)
	}
	if n := rt.n.Load() - before; n != 1 {
		t.Errorf("claim of a free room of a slot in use: %d round trips, want 1", n)
	}
	other := "other"
	for RoomSlot(other) == RoomSlot("warm") {
		other += "x"
	}
	before = rt.n.Load()
	if _, err := r.Claim(ctx, other, "node-a", sa); err != nil {
		t.Fatal(err)
	}
	if n := rt.n.Load() - before; n != 4 {
		t.Errorf("first claim of a slot new to the fleet: %d round trips, want 4", n)
	}
	r2, rt2 := counted(t, srv)
	// The set-up of the connection pipelines use.
	r2.Client().Pipelined(ctx, func(p redis.Pipeliner) error { return p.Ping(ctx).Err() })
	before = rt2.n.Load()
	if _, err := r2.Claim(ctx, sameSlot(t, other, "another"), "node-a", sa); err != nil {
		t.Fatal(err)
	}
	if n := rt2.n.Load() - before; n != 2 {
		t.Errorf("first claim by a process of a slot in use: %d round trips, want 2", n)
	}
	// A heartbeat and the check of its rooms' marks: one round trip on a
	// single Redis.
	held, err := r.Claim(ctx, sameSlot(t, "warm", "held"), "node-a", sa)
	if err != nil {
		t.Fatal(err)
	}
	before = rt.n.Load()
	if _, suspect, err := r.BeatVerified(ctx, Node{ID: "node-a", Addr: "127.0.0.1:1", Session: sa}, time.Minute, r.NewVerifier(), []Lease{held}); err != nil || len(suspect) != 0 {
		t.Fatalf("heartbeat with its check: %v, %v", suspect, err)
	}
	if n := rt.n.Load() - before; n != 1 && !onCluster() {
		t.Errorf("heartbeat with its check: %d round trips, want 1", n)
	}
	dead := sameSlot(t, "warm", "dead")
	if _, err := r.Claim(ctx, dead, "node-c", "gone"); err != nil {
		t.Fatal(err)
	}
	before = rt.n.Load()
	if _, err := r.Claim(ctx, dead, "node-b", sb); err != nil {
		t.Fatal(err)
	}
	if n := rt.n.Load() - before; n != 3 {
		t.Errorf("claim of a room of an ended session: %d round trips, want 3", n)
	}
}

// sameSlot returns a room name that starts with prefix and whose keys are in
// the hash slot of room's.
func sameSlot(t *testing.T, room, prefix string) string {
	t.Helper()
	for i := range 1_000_000 {
		if n := fmt.Sprintf("%s-%d", prefix, i); RoomSlot(n) == RoomSlot(room) {
			return n
		}
	}
	t.Fatalf("no room %s-N in the slot of %s", prefix, room)
	return ""
}

func TestSteal(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	sb := live(t, r, "node-b") // before node-a's short heartbeat starts
	beat, err := r.Beat(ctx, Node{ID: "node-a", Addr: "127.0.0.1:1"}, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	a, err := r.Claim(ctx, "lobby", "node-a", beat.Session)
	if err != nil {
		t.Fatal(err)
	}

	_, err = r.Steal(ctx, "lobby", "node-a", "node-b", sb)
	wantOwnerErr(t, err, ErrOwnerAlive, "node-a", a.Epoch)
	_, err = r.Steal(ctx, "lobby", "node-c", "node-b", sb)
	wantOwnerErr(t, err, ErrOwned, "node-a", a.Epoch)
	if o, _ := r.Owner(ctx, "lobby"); o.Node != "node-a" || o.Epoch != a.Epoch {
		t.Fatalf("after refused steals owner = %+v, want node-a at %d", o, a.Epoch)
	}

	time.Sleep(300 * time.Millisecond) // node-a's heartbeat expires
	b, err := r.Steal(ctx, "lobby", "node-a", "node-b", sb)
	if err != nil {
		t.Fatalf("steal from a dead node: %v", err)
	}
	if b.Node != "node-b" || b.Epoch <= a.Epoch {
		t.Fatalf("stolen lease %+v, want node-b above epoch %d", b, a.Epoch)
	}
	// The dead owner's lease is worthless now.
	wantOwnerErr(t, r.Release(ctx, a), ErrOwned, "node-b", b.Epoch)
	// Steal of an unowned room is a claim.
	c, err := r.Steal(ctx, "empty", "node-a", "node-b", sb)
	if err != nil || c.Node != "node-b" {
		t.Fatalf("steal of an unowned room: %+v, %v", c, err)
	}
}

func TestNonOwnerChangesNothing(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	rdb := r.Client()
	a, err := r.Claim(ctx, "den", "node-a", live(t, r, "node-a"))
	if err != nil {
		t.Fatal(err)
	}
	before := rdb.Get(ctx, r.ownerKey("den")).Val()
	epochBefore := rdb.Get(ctx, r.epochKey("den")).Val()

	cases := []struct {
		name string
		op   func() error
	}{
		{"release by another node", func() error {
			return r.Release(ctx, Lease{Room: "den", Node: "node-b", Session: a.Session, Epoch: a.Epoch})
		}},
		{"release at an older epoch", func() error {
			return r.Release(ctx, Lease{Room: "den", Node: "node-a", Session: a.Session, Epoch: a.Epoch - 1})
		}},
		{"release in another session", func() error {
			return r.Release(ctx, Lease{Room: "den", Node: "node-a", Session: "other", Epoch: a.Epoch})
		}},
		{"transfer by another node", func() error {
			_, err := r.Transfer(ctx, Lease{Room: "den", Node: "node-b", Session: a.Session, Epoch: a.Epoch}, "node-c", "c")
			return err
		}},
		{"transfer at an older epoch", func() error {
			_, err := r.Transfer(ctx, Lease{Room: "den", Node: "node-a", Session: a.Session, Epoch: a.Epoch - 1}, "node-c", "c")
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantOwnerErr(t, tc.op(), ErrOwned, "node-a", a.Epoch)
			if v := rdb.Get(ctx, r.ownerKey("den")).Val(); v != before {
				t.Fatalf("owner = %q, want unchanged %q", v, before)
			}
			if v := rdb.Get(ctx, r.epochKey("den")).Val(); v != epochBefore {
				t.Fatalf("epoch counter = %q, want unchanged %q", v, epochBefore)
			}
		})
	}

	// The owner can transfer, and then the old lease is worth nothing.
	c, err := r.Transfer(ctx, a, "node-c", live(t, r, "node-c"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != "node-c" || c.Epoch <= a.Epoch {
		t.Fatalf("transferred lease %+v, want node-c above %d", c, a.Epoch)
	}
	wantOwnerErr(t, r.Release(ctx, a), ErrOwned, "node-c", c.Epoch)
	if err := r.Release(ctx, c); err != nil {
		t.Fatal(err)
	}
	err = r.Release(ctx, c)
	if !errors.Is(err, ErrNotOwned) {
		t.Fatalf("second release = %v, want ErrNotOwned", err)
	}
}

func TestFencedWrite(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	old, err := r.Claim(ctx, "Cinema", "node-a", live(t, r, "node-a"))
	if err != nil {
		t.Fatal(err)
	}
	oldMeta := Meta{Name: "Cinema", Visibility: "public", Users: 3, Metadata: []byte(`{"name":"Cinema","users":3}`)}
	if err := r.WriteMeta(ctx, old, oldMeta); err != nil {
		t.Fatal(err)
	}
	moved, err := r.Transfer(ctx, old, "node-b", live(t, r, "node-b"))
	if err != nil {
		t.Fatal(err)
	}
	newMeta := Meta{Name: "Cinema", Visibility: "unlisted", Users: 1, Metadata: []byte(`{"name":"Cinema","users":1}`)}
	if err := r.WriteMeta(ctx, moved, newMeta); err != nil {
		t.Fatal(err)
	}

	err = r.WriteMeta(ctx, old, Meta{Name: "Cinema", Visibility: "private", Users: 99})
	wantOwnerErr(t, err, ErrStaleEpoch, "node-b", moved.Epoch)
	got, ok, err := r.Meta(ctx, "cinema")
	if err != nil || !ok {
		t.Fatalf("meta: %v, %v", ok, err)
	}
	if got.Visibility != "unlisted" || got.Users != 1 || got.Epoch != moved.Epoch || string(got.Metadata) != string(newMeta.Metadata) {
		t.Fatalf("after a stale write meta = %+v, want the new owner's %+v at %d", got, newMeta, moved.Epoch)
	}

	// Once the room is released nobody's epoch is current.
	if err := r.Release(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteMeta(ctx, moved, Meta{Name: "Cinema", Users: 42}); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("write after release = %v, want ErrStaleEpoch", err)
	}
	// The metadata outlives the owner: the next claim learns the canonical
	// casing from it.
	next, err := r.Claim(ctx, "CINEMA", "node-c", live(t, r, "node-c"))
	if err != nil || next.Name != "Cinema" {
		t.Fatalf("claim after release = %+v, %v; want the canonical name Cinema", next, err)
	}
	_, err = r.Claim(ctx, "cinema", "node-d", live(t, r, "node-d"))
	var oe *OwnerError
	if !errors.As(err, &oe) || oe.Name != "Cinema" || oe.Owner.Node != "node-c" {
		t.Fatalf("claim of an owned room = %v, want owned by node-c naming Cinema", err)
	}
	if got, _, _ := r.Meta(ctx, "cinema"); got.Users != 1 {
		t.Fatalf("meta users = %d after a refused write, want 1", got.Users)
	}
}

// TestScriptFlush runs every operation right after SCRIPT FLUSH: each must
// fall back from EVALSHA to EVAL.
func TestScriptFlush(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	rdb := r.Client()
	var a Lease
	ops := []struct {
		name string
		op   func() error
	}{
		{"heartbeat", func() error { return r.Heartbeat(ctx, Node{ID: "node-a"}, time.Minute) }},
		{"claim", func() (err error) { a, err = r.Claim(ctx, "flushed", "node-a", live(t, r, "node-a")); return err }},
		{"fenced write", func() error { return r.WriteMeta(ctx, a, Meta{Name: "flushed"}) }},
		{"transfer", func() (err error) { a, err = r.Transfer(ctx, a, "node-b", "b"); return err }},
		{"steal", func() (err error) {
			a, err = r.Steal(ctx, "flushed", "node-b", "node-a", live(t, r, "node-a"))
			return err // node-b never heartbeated: the steal succeeds
		}},
		{"release", func() error { return r.Release(ctx, a) }},
		{"reclaim", func() error {
			b, err := r.Claim(ctx, "other", "node-a", live(t, r, "node-a"))
			if err == nil {
				_, err = r.Reclaim(ctx, "node-a", b.Session, []Lease{b})
			}
			return err
		}},
		{"drop stale", func() error {
			if _, err := r.Claim(ctx, "orphan", "node-z", "z"); err != nil {
				return err
			}
			n, err := sweepAll(ctx, r)
			if err == nil && n != 1 {
				err = fmt.Errorf("dropped %d keys, want 1", n)
			}
			return err
		}},
		{"prune", func() error { _, err := r.Prune(ctx); return err }},
		{"deregister", func() error { return r.Deregister(ctx, "node-a") }},
	}
	for _, op := range ops {
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := op.op(); err != nil {
			t.Fatalf("%s after SCRIPT FLUSH: %v", op.name, err)
		}
	}
}

func TestBadInputNeverReachesRedis(t *testing.T) {
	_, srv := newRegistry(t)
	r, rt := counted(t, srv)
	ctx := context.Background()
	long := make([]byte, MaxRoomLen+1)
	for i := range long {
		long[i] = 'a'
	}
	cases := []struct {
		name string
		op   func() error
		want error
	}{
		{"empty room", func() error { _, err := r.Claim(ctx, "", "node-a", "s"); return err }, ErrBadRoom},
		{"long room", func() error { _, err := r.Claim(ctx, string(long), "node-a", "s"); return err }, ErrBadRoom},
		{"hash tag in room", func() error { _, err := r.Claim(ctx, "a}b", "node-a", "s"); return err }, ErrBadRoom},
		{"glob in room", func() error { _, err := r.Owner(ctx, "a*"); return err }, ErrBadRoom},
		{"slash in room", func() error { _, err := r.Owner(ctx, "a/b"); return err }, ErrBadRoom},
		{"unicode in room", func() error { _, err := r.Owner(ctx, "café"); return err }, ErrBadRoom},
		{"colon in node", func() error { _, err := r.Claim(ctx, "ok", "node:1", "s"); return err }, ErrBadNode},
		{"colon in session", func() error { _, err := r.Claim(ctx, "ok", "node-a", "s:1"); return err }, ErrBadSession},
		{"empty session", func() error { _, err := r.Claim(ctx, "ok", "node-a", ""); return err }, ErrBadSession},
		{"colon in proposed session", func() error {
			return r.Heartbeat(ctx, Node{ID: "node-a", Session: "s:1"}, time.Second)
		}, ErrBadSession},
		{"empty node", func() error { return r.Heartbeat(ctx, Node{}, time.Second) }, ErrBadNode},
		{"bad victim", func() error { _, err := r.Steal(ctx, "ok", "", "node-a", "s"); return err }, ErrBadNode},
		{"hand-made lease", func() error { return r.Release(ctx, Lease{Room: "Upper", Node: "node-a", Session: "s", Epoch: 1}) }, ErrBadRoom},
		{"lease without a session", func() error { return r.Release(ctx, Lease{Room: "ok", Node: "node-a", Epoch: 1}) }, ErrBadSession},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := rt.n.Load()
			if err := tc.op(); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if n := rt.n.Load() - before; n != 0 {
				t.Fatalf("%d round trips to Redis for bad input, want 0", n)
			}
		})
	}
}

func TestRoomKey(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"movienight", "movienight", true},
		{"MovieNight", "movienight", true},
		{"a", "a", true},
		{"9e1c2b4a-7f3d-4c59-8a1e-6b0d2f4c8e77", "9e1c2b4a-7f3d-4c59-8a1e-6b0d2f4c8e77", true},
		{"under_score-dash", "under_score-dash", true},
		{"", "", false},
		{"has space", "", false},
		{"dot.dot", "", false},
		{"../etc", "", false},
		{"percent%20", "", false},
		{"{tag}", "", false},
		{"ÄÖÜ", "", false},
	}
	for _, tc := range cases {
		got, err := RoomKey(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("RoomKey(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzRoomKey(f *testing.F) {
	for _, s := range []string{"room", "Room-1", "", "a}b", "\x00", "ÄÖ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := RoomKey(s)
		if err != nil {
			return
		}
		if len(k) == 0 || len(k) > MaxRoomLen || len(k) != len(s) {
			t.Fatalf("RoomKey(%q) = %q", s, k)
		}
		for i := 0; i < len(k); i++ {
			c := k[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
				t.Fatalf("RoomKey(%q) = %q has byte %q", s, k, c)
			}
		}
		if k2, err := RoomKey(k); err != nil || k2 != k {
			t.Fatalf("RoomKey not idempotent on %q: %q, %v", k, k2, err)
		}
	})
}

func TestNodes(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	started := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for _, n := range []Node{
		{ID: "node-a", Addr: "127.0.0.1:7001", Region: "ewr", Rooms: 10, Clients: 50, Load: 0.5, Capacity: 100, Version: "dev", Started: started},
		{ID: "node-b", Addr: "127.0.0.1:7002", Region: "ewr", Load: 0.1},
		{ID: "node-c", Addr: "127.0.0.1:7003", Region: "ams", State: StateDraining, Load: 0.9},
	} {
		if err := r.Heartbeat(ctx, n, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Heartbeat(ctx, Node{ID: "node-dead", Load: 0}, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)

	nodes, err := r.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	if fmt.Sprint(ids) != "[node-b node-a node-c]" {
		t.Fatalf("live nodes by load = %v, want [node-b node-a node-c]", ids)
	}
	a := nodes[1]
	if a.Session == "" {
		t.Fatalf("node-a has no session")
	}
	a.Session = ""
	want := Node{ID: "node-a", Addr: "127.0.0.1:7001", Region: "ewr", State: StateActive, Rooms: 10, Clients: 50, Load: 0.5, Capacity: 100, Version: "dev", Started: started}
	if a != want {
		t.Fatalf("node-a = %+v, want %+v", a, want)
	}
	if nodes[2].State != StateDraining {
		t.Fatalf("node-c state = %q, want draining", nodes[2].State)
	}

	removed, err := r.Prune(ctx)
	if err != nil || fmt.Sprint(removed) != "[node-dead]" {
		t.Fatalf("prune = %v, %v; want [node-dead]", removed, err)
	}
	if _, err := r.Node(ctx, "node-dead"); !errors.Is(err, ErrNodeGone) {
		t.Fatalf("dead node lookup = %v, want ErrNodeGone", err)
	}
	if err := r.Deregister(ctx, "node-b"); err != nil {
		t.Fatal(err)
	}
	if alive, _ := r.Alive(ctx, "node-b"); alive {
		t.Fatal("deregistered node is alive")
	}
	if n := r.Client().ZCard(ctx, r.nodesKey()).Val(); n != 2 {
		t.Fatalf("load index has %d nodes, want 2", n)
	}
	if err := r.Heartbeat(ctx, Node{ID: "node-x", State: "sleeping"}, time.Second); err == nil {
		t.Fatal("heartbeat with an unknown state succeeded")
	}
}

func TestHousekeeper(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	if err := r.Heartbeat(ctx, Node{ID: "ghost"}, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := r.Heartbeat(ctx, Node{ID: "alive"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	kept, err := r.Claim(ctx, "kept", "alive", live(t, r, "alive"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2500 { // more than one pass's SCAN steps look at
		if _, err := r.Claim(ctx, fmt.Sprintf("orphan-%d", i), "ghost", "ghostly"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)

	h1 := r.NewHousekeeper(time.Second)
	h2 := r.NewHousekeeper(time.Second)
	var pruned []string
	h1.OnPrune = func(ids []string) { pruned = append(pruned, ids...) }
	h2.OnPrune = h1.OnPrune
	if !h1.Pass(ctx) {
		t.Fatal("first housekeeper did not get the lock")
	}
	if h2.Pass(ctx) {
		t.Fatal("second housekeeper got the lock while the first holds it")
	}
	if !h1.Pass(ctx) {
		t.Fatal("holder lost the lock on its next pass")
	}
	if fmt.Sprint(pruned) != "[ghost]" {
		t.Fatalf("pruned %v, want [ghost]", pruned)
	}
	if ids := r.Client().ZRange(ctx, r.nodesKey(), 0, -1).Val(); fmt.Sprint(ids) != "[alive]" {
		t.Fatalf("load index = %v, want [alive]", ids)
	}
	// The owner keys of the ghost's rooms go, a bounded batch per pass;
	// the live node's room stays.
	for pass := 0; ; pass++ {
		left := r.Client().Keys(ctx, r.prefix+"room:{orphan-*}").Val()
		if len(left) == 0 {
			break
		}
		if pass > 10 {
			t.Fatalf("%d orphaned owner keys left after %d passes", len(left), pass)
		}
		h1.Pass(ctx)
	}
	if o, err := r.Owner(ctx, "kept"); err != nil || o.Epoch != kept.Epoch {
		t.Fatalf("room of a live node after housekeeping: %+v, %v", o, err)
	}
	// At rest no sweep runs: nothing says a session ended since the last
	// one (a key of an ended session written by hand stays)...
	if _, err := r.Claim(ctx, "late-orphan", "ghost", "ghostly"); err != nil {
		t.Fatal(err)
	}
	h1.Pass(ctx)
	if n := r.Client().Exists(ctx, r.ownerKey("late-orphan")).Val(); n != 1 {
		t.Fatal("a pass at rest swept the room keys")
	}
	// ...until one does: a node leaves.
	if err := r.Deregister(ctx, "alive"); err != nil {
		t.Fatal(err)
	}
	for pass := 0; r.Client().Exists(ctx, r.ownerKey("late-orphan")).Val() == 1; pass++ {
		if pass > 10 {
			t.Fatal("the orphan is still there 10 passes after a node left")
		}
		h1.Pass(ctx)
	}
	if n := r.Client().Exists(ctx, r.ownerKey("kept")).Val(); n != 0 {
		t.Fatal("the room of the node that left is still there after the sweep")
	}

	// The holder stops and hands the lock back: the other takes over.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	h1.Run(cctx)
	if !h2.Pass(ctx) {
		t.Fatal("second housekeeper did not take over after the first stopped")
	}
}

func TestWatch(t *testing.T) {
	r, srv := newRegistry(t)
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan Event, 64)
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx, func(e Event) { events <- e }) }()
	next := func() Event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5s")
			return Event{}
		}
	}
	if e := next(); e.Kind != EventResync {
		t.Fatalf("first event %+v, want resync", e)
	}

	bg := context.Background()
	r.Heartbeat(bg, Node{ID: "node-a"}, time.Minute)
	a, _ := r.Claim(bg, "Stage", "node-a", live(t, r, "node-a"))
	b, _ := r.Transfer(bg, a, "node-b", "b")
	c, _ := r.Steal(bg, "stage", "node-b", "node-a", a.Session) // node-b never heartbeated
	r.Release(bg, c)
	r.Heartbeat(bg, Node{ID: "node-a", State: StateDraining}, time.Minute)
	r.Deregister(bg, "node-a")
	want := []Event{
		{Kind: EventNodeUp, Node: "node-a"},
		{Kind: EventClaim, Room: "stage", Node: "node-a", Epoch: a.Epoch},
		{Kind: EventMove, Room: "stage", Node: "node-b", Epoch: b.Epoch},
		{Kind: EventSteal, Room: "stage", Node: "node-a", Epoch: c.Epoch},
		{Kind: EventRelease, Room: "stage", Node: "node-a", Epoch: c.Epoch},
		{Kind: EventNodeDraining, Node: "node-a"},
		{Kind: EventNodeDown, Node: "node-a"},
	}
	for _, w := range want {
		if e := next(); e != w {
			t.Fatalf("event %+v, want %+v", e, w)
		}
	}

	// A lost subscription is re-established and says so.
	srv.Restart()
	if e := next(); e.Kind != EventResync {
		t.Fatalf("after a Redis restart: event %+v, want resync", e)
	}
	r.Claim(bg, "after", "node-z", "z")
	if e := next(); e.Kind != EventClaim || e.Room != "after" {
		t.Fatalf("after resubscribing: event %+v, want the claim of after", e)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watch returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after its context ended")
	}
}

func TestRooms(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	a, _ := r.Claim(ctx, "Alpha", "node-a", live(t, r, "node-a"))
	r.WriteMeta(ctx, a, Meta{Name: "Alpha", Visibility: "public", Users: 2})
	b, _ := r.Claim(ctx, "beta", "node-b", live(t, r, "node-b"))
	r.Claim(ctx, "gamma", "node-c", "ended") // node-c has no such session
	rooms, err := r.Rooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Room{}
	for _, rm := range rooms {
		got[rm.Room] = rm
	}
	if len(got) != 2 {
		t.Fatalf("rooms = %+v, want alpha and beta (not gamma, whose owner's session ended)", rooms)
	}
	if g := got["alpha"]; g.Owner.Node != "node-a" || g.Owner.Epoch != a.Epoch || g.Meta.Name != "Alpha" || g.Meta.Users != 2 {
		t.Errorf("alpha = %+v", g)
	}
	if g := got["beta"]; g.Owner.Node != "node-b" || g.Owner.Epoch != b.Epoch || g.Meta.Name != "" {
		t.Errorf("beta = %+v", g)
	}
}

func TestRedisDown(t *testing.T) {
	r, srv := newRegistry(t)
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := r.Claim(ctx, "room", "node-a", "s")
	var oe *OwnerError
	if err == nil || errors.As(err, &oe) {
		t.Fatalf("claim with Redis down = %v, want a connection error", err)
	}
	if _, err := r.Nodes(ctx); err == nil {
		t.Fatal("nodes with Redis down succeeded")
	}
}

func TestWriteMetas(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	a, _ := r.Claim(ctx, "One", "node-a", live(t, r, "node-a"))
	b, _ := r.Claim(ctx, "Two", "node-a", live(t, r, "node-a"))
	stale := Lease{Room: "two", Node: "node-a", Session: b.Session, Epoch: b.Epoch - 1}
	r.Client().ScriptFlush(ctx)
	errs, err := r.WriteMetas(ctx, []LeaseMeta{
		{a, Meta{Name: "One", Users: 1}},
		{b, Meta{Name: "Two", Users: 2}},
		{stale, Meta{Name: "Two", Users: 99}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], ErrStaleEpoch) {
		t.Fatalf("errs = %v, want nil, nil, ErrStaleEpoch", errs)
	}
	if m, _, _ := r.Meta(ctx, "two"); m.Users != 2 || m.Epoch != b.Epoch {
		t.Fatalf("meta of two = %+v, want the current owner's", m)
	}
	if m, _, _ := r.Meta(ctx, "one"); m.Users != 1 {
		t.Fatalf("meta of one = %+v", m)
	}
}

// Beat tells a node that its key is new: the first time, and again after
// Redis lost it.
func TestBeatReportsLostKey(t *testing.T) {
	r, srv := newRegistry(t)
	ctx := context.Background()
	n := Node{ID: "node-a", Addr: "127.0.0.1:1"}
	var gen string
	for i, want := range []bool{true, false} {
		b, err := r.Beat(ctx, n, time.Minute)
		if err != nil || b.Fresh != want || b.Generation == "" || b.Recovery != 0 {
			t.Fatalf("beat %d: %+v, %v; want fresh %v, a generation, no recovery", i, b, err, want)
		}
		gen = b.Generation
	}
	srv.Restart()
	b, err := r.Beat(ctx, n, time.Second)
	if err != nil || !b.Fresh || b.Generation == gen || b.Recovery <= 0 || b.Recovery > time.Second {
		t.Fatalf("beat after a restart without persistence: %+v, %v; want fresh, a new generation, a recovery window of at most 1s", b, err)
	}
}

// A node key keeps the session it was created with for as long as it
// lives, whatever later heartbeats propose; a key created again (it
// expired, or was deleted) takes the session its creator proposed, so the
// node learns that it lapsed in between.
func TestBeatSession(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	beat := func(session string) string {
		t.Helper()
		b, err := r.Beat(ctx, Node{ID: "node-a", Addr: "127.0.0.1:1", Session: session}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return b.Session
	}
	if got := beat("one"); got != "one" {
		t.Fatalf("first beat: session %q, want one", got)
	}
	if got := beat("two"); got != "one" {
		t.Fatalf("second beat: session %q, want one (the key's)", got)
	}
	if n, err := r.Node(ctx, "node-a"); err != nil || n.Session != "one" {
		t.Fatalf("Node: %+v, %v; want session one", n, err)
	}
	if err := r.Deregister(ctx, "node-a"); err != nil {
		t.Fatal(err)
	}
	if got := beat("three"); got != "three" {
		t.Fatalf("beat after the key was gone: session %q, want three", got)
	}
	if got := beat(""); got != "three" {
		t.Fatalf("beat with no session: %q, want three", got)
	}
	if err := r.Deregister(ctx, "node-a"); err != nil {
		t.Fatal(err)
	}
	if got := beat(""); got == "" || got == "three" {
		t.Fatalf("new key without a proposed session: %q, want a fresh random one", got)
	}
}

func TestHeartbeatLeft(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	if left, err := r.HeartbeatLeft(ctx, "node-a"); err != nil || left != 0 {
		t.Fatalf("no heartbeat yet: %v, %v; want 0", left, err)
	}
	if err := r.Heartbeat(ctx, Node{ID: "node-a"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if left, err := r.HeartbeatLeft(ctx, "node-a"); err != nil || left <= 50*time.Second || left > time.Minute {
		t.Fatalf("after a 1m heartbeat: %v, %v", left, err)
	}
	if _, err := r.HeartbeatLeft(ctx, "bad node!"); !errors.Is(err, ErrBadNode) {
		t.Fatalf("bad node id: %v, want ErrBadNode", err)
	}
}

// sweepAll runs a whole sweep for stale owner keys (every master's
// keyspace) and returns how many it dropped.
func sweepAll(ctx context.Context, r *Registry) (int, error) {
	var c SweepCursor
	total := 0
	for {
		next, n, err := r.DropStale(ctx, c)
		if err != nil {
			return total, err
		}
		total += n
		if next == (SweepCursor{}) {
			return total, nil
		}
		c = next
	}
}
