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
func newRegistry(t testing.TB) (*Registry, *redistest.Server) {
	t.Helper()
	srv := redistest.New(t)
	r, err := New(srv.Client(), Config{Logger: testLogger(t), RecoveryWindow: testRecoveryWindow})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r, srv
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
func counted(t testing.TB, srv *redistest.Server) (*Registry, *roundTrips) {
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
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			leases[i], errs[i] = r.Claim(ctx, "Contested", fmt.Sprintf("node-%03d", i), 10*time.Second)
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
	if o.Node != winner.Node || o.Epoch != winner.Epoch || o.TTL <= 0 {
		t.Fatalf("Owner = %+v, want %s at %d with a lease", o, winner.Node, winner.Epoch)
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
			if err := r.Client().FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			flushes++
		}
		l, err := r.Claim(ctx, "phoenix", "node-a", time.Minute)
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

func TestRenewBatch(t *testing.T) {
	r, srv := newRegistry(t)
	ctx := context.Background()
	const n = 10000
	leases := make([]Lease, n)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				l, err := r.Claim(ctx, fmt.Sprintf("room-%05d", i), "node-a", 5*time.Second)
				if err != nil {
					errs <- err
					return
				}
				leases[i] = l
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}

	// Room 17 is lost and taken by node-b; room 4242 just expired.
	rdb := r.Client()
	rdb.Del(ctx, r.ownerKey("room-00017"), r.ownerKey("room-04242"))
	b, err := r.Claim(ctx, "room-00017", "node-b", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}

	cr, rt := counted(t, srv)
	for _, flush := range []bool{false, true} {
		if flush {
			rdb.ScriptFlush(ctx)
		}
		before := rt.n.Load()
		res, err := cr.Renew(ctx, "node-a", leases, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		trips := rt.n.Load() - before
		t.Logf("renew of %d rooms (script flushed: %v): %d round trips", n, flush, trips)
		if trips > 25 {
			t.Errorf("renew of %d rooms took %d round trips, want at most 25", n, trips)
		}
		if len(res.Lost) != 2 {
			t.Fatalf("lost = %+v, want rooms 17 and 4242", res.Lost)
		}
		for _, l := range res.Lost {
			switch l.Lease.Room {
			case "room-00017":
				if l.Owner.Node != "node-b" || l.Owner.Epoch != b.Epoch {
					t.Errorf("room 17 reported owned by %+v, want node-b at %d", l.Owner, b.Epoch)
				}
			case "room-04242":
				if l.Owner != (Owner{}) {
					t.Errorf("room 4242 reported owned by %+v, want nobody", l.Owner)
				}
			default:
				t.Errorf("unexpected lost room %+v", l)
			}
		}
	}
	// Renewed leases run for a minute now; the lost ones were not touched.
	if d := rdb.PTTL(ctx, r.ownerKey("room-09999")).Val(); d < 30*time.Second {
		t.Errorf("renewed room has PTTL %v, want about a minute", d)
	}
	if d := rdb.PTTL(ctx, r.ownerKey("room-00017")).Val(); d > 5*time.Second {
		t.Errorf("room taken by node-b has PTTL %v: node-a's renewal extended it", d)
	}
	if v := rdb.Get(ctx, r.ownerKey("room-00017")).Val(); v != fmt.Sprintf("node-b:%d", b.Epoch) {
		t.Errorf("room 17 owner = %q after node-a's renewal, want node-b's", v)
	}
	if n := rdb.Exists(ctx, r.ownerKey("room-04242")).Val(); n != 0 {
		t.Errorf("expired room 4242 was recreated by a renewal")
	}
}

func TestRenewRefusesOtherNodesLeases(t *testing.T) {
	r, _ := newRegistry(t)
	_, err := r.Renew(context.Background(), "node-a", []Lease{{Room: "x", Node: "node-b", Epoch: 1}}, time.Second)
	if err == nil {
		t.Fatal("renewing node-b's lease as node-a succeeded")
	}
}

func TestSteal(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	if err := r.Heartbeat(ctx, Node{ID: "node-a", Addr: "127.0.0.1:1"}, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	a, err := r.Claim(ctx, "lobby", "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	_, err = r.Steal(ctx, "lobby", "node-a", "node-b", time.Minute)
	wantOwnerErr(t, err, ErrOwnerAlive, "node-a", a.Epoch)
	_, err = r.Steal(ctx, "lobby", "node-c", "node-b", time.Minute)
	wantOwnerErr(t, err, ErrOwned, "node-a", a.Epoch)
	if o, _ := r.Owner(ctx, "lobby"); o.Node != "node-a" || o.Epoch != a.Epoch {
		t.Fatalf("after refused steals owner = %+v, want node-a at %d", o, a.Epoch)
	}

	time.Sleep(300 * time.Millisecond) // node-a's heartbeat expires; its room lease has not
	b, err := r.Steal(ctx, "lobby", "node-a", "node-b", time.Minute)
	if err != nil {
		t.Fatalf("steal from a dead node: %v", err)
	}
	if b.Node != "node-b" || b.Epoch <= a.Epoch {
		t.Fatalf("stolen lease %+v, want node-b above epoch %d", b, a.Epoch)
	}
	// The dead owner's lease is worthless now.
	res, err := r.Renew(ctx, "node-a", []Lease{a}, time.Minute)
	if err != nil || len(res.Lost) != 1 || res.Lost[0].Owner.Node != "node-b" {
		t.Fatalf("renew by the robbed node: %+v, %v; want lost to node-b", res, err)
	}
	// Steal of an unowned room is a claim.
	c, err := r.Steal(ctx, "empty", "node-a", "node-b", time.Minute)
	if err != nil || c.Node != "node-b" {
		t.Fatalf("steal of an unowned room: %+v, %v", c, err)
	}
}

func TestNonOwnerChangesNothing(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	rdb := r.Client()
	a, err := r.Claim(ctx, "den", "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	before := rdb.Get(ctx, r.ownerKey("den")).Val()
	epochBefore := rdb.Get(ctx, r.epochKey("den")).Val()

	cases := []struct {
		name string
		op   func() error
	}{
		{"release by another node", func() error { return r.Release(ctx, Lease{Room: "den", Node: "node-b", Epoch: a.Epoch}) }},
		{"release at an older epoch", func() error { return r.Release(ctx, Lease{Room: "den", Node: "node-a", Epoch: a.Epoch - 1}) }},
		{"transfer by another node", func() error {
			_, err := r.Transfer(ctx, Lease{Room: "den", Node: "node-b", Epoch: a.Epoch}, "node-c", time.Minute)
			return err
		}},
		{"transfer at an older epoch", func() error {
			_, err := r.Transfer(ctx, Lease{Room: "den", Node: "node-a", Epoch: a.Epoch - 1}, "node-c", time.Minute)
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
	c, err := r.Transfer(ctx, a, "node-c", time.Minute)
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
	old, err := r.Claim(ctx, "Cinema", "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	oldMeta := Meta{Name: "Cinema", Visibility: "public", Users: 3, Metadata: []byte(`{"name":"Cinema","users":3}`)}
	if err := r.WriteMeta(ctx, old, oldMeta); err != nil {
		t.Fatal(err)
	}
	moved, err := r.Transfer(ctx, old, "node-b", time.Minute)
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
	next, err := r.Claim(ctx, "CINEMA", "node-c", time.Minute)
	if err != nil || next.Name != "Cinema" {
		t.Fatalf("claim after release = %+v, %v; want the canonical name Cinema", next, err)
	}
	_, err = r.Claim(ctx, "cinema", "node-d", time.Minute)
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
		{"claim", func() (err error) { a, err = r.Claim(ctx, "flushed", "node-a", time.Minute); return err }},
		{"renew", func() error {
			res, err := r.Renew(ctx, "node-a", []Lease{a}, time.Minute)
			if err == nil && len(res.Lost) > 0 {
				err = fmt.Errorf("lost %+v", res.Lost)
			}
			return err
		}},
		{"fenced write", func() error { return r.WriteMeta(ctx, a, Meta{Name: "flushed"}) }},
		{"transfer", func() (err error) { a, err = r.Transfer(ctx, a, "node-b", time.Minute); return err }},
		{"steal", func() error {
			_, err := r.Steal(ctx, "flushed", "node-b", "node-a", time.Minute)
			return err // node-b never heartbeated: the steal succeeds
		}},
		{"release", func() error {
			o, err := r.Owner(ctx, "flushed")
			if err != nil {
				return err
			}
			return r.Release(ctx, Lease{Room: "flushed", Node: o.Node, Epoch: o.Epoch})
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
		{"empty room", func() error { _, err := r.Claim(ctx, "", "node-a", time.Second); return err }, ErrBadRoom},
		{"long room", func() error { _, err := r.Claim(ctx, string(long), "node-a", time.Second); return err }, ErrBadRoom},
		{"hash tag in room", func() error { _, err := r.Claim(ctx, "a}b", "node-a", time.Second); return err }, ErrBadRoom},
		{"glob in room", func() error { _, err := r.Owner(ctx, "a*"); return err }, ErrBadRoom},
		{"slash in room", func() error { _, err := r.Owner(ctx, "a/b"); return err }, ErrBadRoom},
		{"unicode in room", func() error { _, err := r.Owner(ctx, "café"); return err }, ErrBadRoom},
		{"colon in node", func() error { _, err := r.Claim(ctx, "ok", "node:1", time.Second); return err }, ErrBadNode},
		{"empty node", func() error { return r.Heartbeat(ctx, Node{}, time.Second) }, ErrBadNode},
		{"bad victim", func() error { _, err := r.Steal(ctx, "ok", "", "node-a", time.Second); return err }, ErrBadNode},
		{"hand-made lease", func() error { return r.Release(ctx, Lease{Room: "Upper", Node: "node-a", Epoch: 1}) }, ErrBadRoom},
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
	a, _ := r.Claim(bg, "Stage", "node-a", time.Minute)
	b, _ := r.Transfer(bg, a, "node-b", time.Minute)
	c, _ := r.Steal(bg, "stage", "node-b", "node-a", time.Minute) // node-b never heartbeated
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
	r.Claim(bg, "after", "node-z", time.Minute)
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
	a, _ := r.Claim(ctx, "Alpha", "node-a", time.Minute)
	r.WriteMeta(ctx, a, Meta{Name: "Alpha", Visibility: "public", Users: 2})
	b, _ := r.Claim(ctx, "beta", "node-b", time.Minute)
	rooms, err := r.Rooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Room{}
	for _, rm := range rooms {
		got[rm.Room] = rm
	}
	if len(got) != 2 {
		t.Fatalf("rooms = %+v, want alpha and beta", rooms)
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
	_, err := r.Claim(ctx, "room", "node-a", time.Second)
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
	a, _ := r.Claim(ctx, "One", "node-a", time.Minute)
	b, _ := r.Claim(ctx, "Two", "node-a", time.Minute)
	stale := Lease{Room: "two", Node: "node-a", Epoch: b.Epoch - 1}
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
