package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// After Redis lost its data, only the node that served a room may take it
// during the recovery window: plain claims and steals of the unowned room
// wait (or fail with ErrRecovering when they cannot wait), Reclaim takes it
// at a new epoch; after the window claims work again.
func TestRecoveryWindow(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	a, err := r.Claim(ctx, "lobby", "node-a", live(t, r, "node-a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.Claim(ctx, "other", "node-b", live(t, r, "node-b"))
	if err != nil {
		t.Fatal(err)
	}
	flushAll(t, r)

	// After the loss the test's nodes use sessions without heartbeating:
	// a heartbeat after a loss opens a window of its own TTL.
	short, cancel := context.WithTimeout(ctx, testRecoveryWindow/4)
	_, err = r.Claim(short, "lobby", "node-c", "c")
	cancel()
	var re *RecoveryError
	if !errors.As(err, &re) || !errors.Is(err, ErrRecovering) || re.Left <= 0 || re.Left > testRecoveryWindow {
		t.Fatalf("claim of a lost room in the window: %v, want a RecoveryError with at most %v left", err, testRecoveryWindow)
	}
	short, cancel = context.WithTimeout(ctx, testRecoveryWindow/4)
	_, err = r.Steal(short, "lobby", "node-a", "node-c", "c")
	cancel()
	if !errors.Is(err, ErrRecovering) {
		t.Fatalf("steal of a lost room in the window: %v, want ErrRecovering", err)
	}
	// The claims found the room's slot without its mark: a window of the
	// slot's own (the fleet's keys are touched by heartbeats and reclaims).
	if left := r.Client().PTTL(ctx, r.slotRecoveryKey(RoomSlot("lobby"))).Val(); left <= 0 {
		t.Fatalf("recovery window of lobby's slot: %v left", left)
	}

	// node-b took "other" back already (a router placed a client there:
	// the key is b's again); node-a reclaims both rooms it believes it holds.
	b2, err := r.Reclaim(ctx, "node-b", "b2", []Lease{b})
	if err != nil || b2.Leases[0].Epoch <= b.Epoch || len(b2.Lost) != 0 {
		t.Fatalf("reclaim by b: %+v, %v; want a new epoch above %d", b2, err, b.Epoch)
	}
	gen, left, err := r.Generation(ctx)
	if err != nil || gen == "" || left <= 0 {
		t.Fatalf("generation after the first reclaim: %q, %v, %v", gen, left, err)
	}
	stale := Lease{Room: "other", Node: "node-a", Session: a.Session, Epoch: b.Epoch}
	res, err := r.Reclaim(ctx, "node-a", "a2", []Lease{a, stale})
	if err != nil {
		t.Fatal(err)
	}
	if res.Generation != gen || res.Leases[0].Epoch <= a.Epoch || res.Leases[1].Epoch != 0 {
		t.Fatalf("reclaim by a: %+v; want generation %s, lobby at a new epoch above %d, other lost", res, gen, a.Epoch)
	}
	if len(res.Lost) != 1 || res.Lost[0].Owner.Node != "node-b" {
		t.Fatalf("reclaim by a: lost %+v, want other owned by node-b", res.Lost)
	}
	if _, err := r.Beat(ctx, Node{ID: "node-a", Addr: "127.0.0.1:1", Session: "a2"}, testRecoveryWindow); err != nil {
		t.Fatal(err)
	}
	if o, err := r.Owner(ctx, "lobby"); err != nil || o.Node != "node-a" || o.Session != "a2" || o.Epoch != res.Leases[0].Epoch {
		t.Fatalf("owner of lobby: %+v, %v", o, err)
	}
	// A second reclaim at the held epoch changes nothing.
	again, err := r.Reclaim(ctx, "node-a", "a2", res.Leases[:1])
	if err != nil || again.Leases[0].Epoch != res.Leases[0].Epoch {
		t.Fatalf("reclaim at the held epoch: %+v, %v", again, err)
	}

	// After the window a plain claim of an unowned room goes through; a
	// claim that has time waits the window out instead of failing.
	flushAll(t, r)
	start := time.Now()
	c, err := r.Claim(ctx, "lobby", "node-c", "c")
	if err != nil || c.Epoch <= res.Leases[0].Epoch {
		t.Fatalf("claim after the window: %+v, %v", c, err)
	}
	if waited := time.Since(start); waited < testRecoveryWindow/2 {
		t.Fatalf("claim right after a loss went through after %v, before the %v window", waited, testRecoveryWindow)
	}
}

// Bootstrap starts a generation on a fresh Redis without a window, and does
// not touch an existing one.
func TestBootstrap(t *testing.T) {
	r, _ := newRegistry(t) // bootstrapped
	ctx := context.Background()
	gen, left, err := r.Generation(ctx)
	if err != nil || gen == "" || left != 0 {
		t.Fatalf("after bootstrap: %q, %v, %v", gen, left, err)
	}
	if err := r.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	if again, _, _ := r.Generation(ctx); again != gen {
		t.Fatalf("a second bootstrap changed the generation %s to %s", gen, again)
	}
	if _, err := r.Claim(ctx, "lobby", "node-a", live(t, r, "node-a")); err != nil {
		t.Fatalf("claim right after bootstrap: %v", err)
	}
}

// After Redis lost its data, a room its owner has re-claimed cannot be
// stolen during the recovery window although the owner's heartbeat key is
// still gone: the loss took every heartbeat key, and a live owner's is
// back only at its next heartbeat. (A router that took the missing key for
// a dead owner gave a re-claimed room, still loaded on its owner, to
// another node, whose monolith found no state for it: the room was lost.)
func TestNoStealInRecoveryWindow(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	a, err := r.Claim(ctx, "lobby", "node-a", live(t, r, "node-a"))
	if err != nil {
		t.Fatal(err)
	}
	flushAll(t, r)
	// node-a re-claims in the session its next heartbeat will create.
	res, err := r.Reclaim(ctx, "node-a", "next", []Lease{a})
	if err != nil || res.Leases[0].Epoch <= a.Epoch {
		t.Fatalf("reclaim: %+v, %v", res, err)
	}
	short, cancel := context.WithTimeout(ctx, testRecoveryWindow/4)
	_, err = r.Steal(short, "lobby", "node-a", "node-b", "b")
	cancel()
	if !errors.Is(err, ErrRecovering) {
		t.Fatalf("steal of a re-claimed room in the window, its owner not heartbeating yet: %v, want ErrRecovering", err)
	}
	want := fmt.Sprintf("node-a:next:%d", res.Leases[0].Epoch)
	if v := r.Client().Get(ctx, r.ownerKey("lobby")).Val(); v != want {
		t.Fatalf("owner value of lobby: %q, want %q", v, want)
	}
	// The owner heartbeats again: after the window the steal finds it alive.
	if _, err := r.Beat(ctx, Node{ID: "node-a", Addr: "127.0.0.1:1", Session: "next"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err = r.Steal(ctx, "lobby", "node-a", "node-b", live(t, r, "node-b")); !errors.Is(err, ErrOwnerAlive) {
		t.Fatalf("steal after the window from a live owner: %v, want ErrOwnerAlive", err)
	}
}

// A shard of a Redis Cluster may lose its data alone: the rooms' keys and
// their slots' marks gone, the fleet's keys (the generation) kept. Nobody
// takes a room of a slot of that shard during the slot's recovery window,
// and its owner's next heartbeat's check (BeatVerified) finds the loss, so that it re-claims
// the room within the window. On a Redis Cluster the shard is the master
// of a room's slot that does not hold the fleet's keys, flushed; on a
// single Redis the loss is one slot's keys deleted.
func TestSlotLossIsNoticed(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	sa := live(t, r, "node-a")
	cc, cluster := r.Client().(*redis.ClusterClient)
	master := func(key string) string {
		if !cluster {
			return ""
		}
		m, err := cc.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return m.Options().Addr
	}
	fleet := master(r.nodesKey())
	name := "old"
	for i := 0; cluster && master(r.ownerKey(name)) == fleet; i++ {
		name = fmt.Sprintf("old%d", i)
	}
	shard := master(r.ownerKey(name))
	old, err := r.Claim(ctx, name, "node-a", sa)
	if err != nil || old.Mark == "" {
		t.Fatalf("claim: %+v, %v; want a lease with the slot's mark", old, err)
	}
	lobby, err := r.Claim(ctx, sameSlot(t, name, "lobby"), "node-a", sa)
	if err != nil || lobby.Mark != old.Mark {
		t.Fatalf("claim in the same slot: %+v, %v; want mark %s", lobby, err, old.Mark)
	}
	var held []Lease
	for i := range 8 {
		l, err := r.Claim(ctx, fmt.Sprintf("other%d", i), "node-a", sa)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
	}
	held = append([]Lease{old, lobby}, held...)
	v := r.NewVerifier()
	verify := func(leases []Lease) ([]int, error) {
		_, suspect, err := r.BeatVerified(ctx, Node{ID: "node-a", Addr: "127.0.0.1:1", Session: sa}, time.Minute, v, leases)
		return suspect, err
	}
	if suspect, err := verify(held); err != nil || len(suspect) != 0 {
		t.Fatalf("verify before the loss: %v, %v", suspect, err)
	}
	gen, _, _ := r.Generation(ctx)

	slot := RoomSlot(name)
	if cluster {
		m, _ := cc.MasterForKey(ctx, r.ownerKey(name))
		if err := m.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	} else if err := r.Client().Del(ctx, r.ownerKey(name), r.epochKey(name), r.ownerKey(lobby.Room), r.epochKey(lobby.Room),
		r.slotMarkKey(slot), r.slotRecoveryKey(slot)).Err(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, testRecoveryWindow/4)
	_, err = r.Claim(short, name, "node-b", live(t, r, "node-b"))
	cancel()
	if !errors.Is(err, ErrRecovering) {
		t.Fatalf("claim of a room of a slot that lost its keys: %v, want ErrRecovering", err)
	}
	if g, _, _ := r.Generation(ctx); g != gen {
		t.Fatalf("generation changed from %s to %s: the loss was the shard's only", gen, g)
	}
	// Every lease of the shard is suspect (a shard loses every slot at
	// once), found by the check of its oldest lease's slot; on a single
	// Redis that is every lease.
	var want []int
	for i, l := range held {
		if master(r.ownerKey(l.Room)) == shard {
			want = append(want, i)
		}
	}
	suspect, err := verify(held)
	if err != nil || !slices.Equal(suspect, want) {
		t.Fatalf("verify after the loss: %v, %v; want %v suspect", suspect, err, want)
	}
	res, err := r.Reclaim(ctx, "node-a", sa, held)
	if err != nil || len(res.Lost) != 0 {
		t.Fatalf("reclaim in the slot's window: %+v, %v", res, err)
	}
	if res.Leases[0].Epoch <= old.Epoch || res.Leases[0].Mark == old.Mark {
		t.Fatalf("reclaim: %+v; want %s at a new epoch and mark", res.Leases[0], name)
	}
	for i, l := range held {
		if !slices.Contains(want, i) && res.Leases[i] != l {
			t.Fatalf("reclaim changed %+v, of a shard that lost nothing, to %+v", l, res.Leases[i])
		}
	}
	if suspect, err := verify(res.Leases); err != nil || len(suspect) != 0 {
		t.Fatalf("verify after the reclaim: %v, %v", suspect, err)
	}
	if o, err := r.Owner(ctx, name); err != nil || o.Node != "node-a" || o.Epoch != res.Leases[0].Epoch {
		t.Fatalf("owner of %s: %+v, %v", name, o, err)
	}
}
