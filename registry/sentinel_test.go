package registry

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/internal/redistest"
)

// Through Sentinel, with Config.Replicas: a write that keeps or gives
// ownership counts only once a replica has it, so a failover, which
// promotes a replica, loses none a node counts on; without a replica to
// acknowledge it the write fails with ErrNotReplicated. After the failover
// the same registry goes on against the promoted replica.
func TestSentinelFailoverKeepsAcknowledgedWrites(t *testing.T) {
	master := redistest.New(t)
	replica := redistest.NewReplica(t, master)
	sentinel := redistest.NewSentinel(t, master, "roomlb", 500*time.Millisecond)
	opt, err := redis.ParseFailoverURL(sentinel.FailoverURL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewFailoverClient(opt)
	t.Cleanup(func() { rdb.Close() })
	r, err := New(rdb, Config{Logger: testLogger(t), RecoveryWindow: testRecoveryWindow, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := r.Beat(ctx, Node{ID: "node-a", Addr: "127.0.0.1:1"}, time.Minute)
	if err != nil {
		t.Fatalf("heartbeat through Sentinel, acknowledged by the replica: %v", err)
	}
	a, err := r.Claim(ctx, "lobby", "node-a", b.Session)
	if err != nil {
		t.Fatal(err)
	}

	// Without the replica nothing that gives or keeps ownership counts.
	replica.Stop()
	if _, err := r.Beat(ctx, Node{ID: "node-a", Addr: "127.0.0.1:1"}, time.Minute); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("heartbeat with no replica: %v, want ErrNotReplicated", err)
	}
	if _, err := r.Claim(ctx, "other", "node-a", b.Session); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("claim with no replica: %v, want ErrNotReplicated", err)
	}
	replica.Start()
	replica.WaitSynced()
	if _, err := r.Beat(ctx, Node{ID: "node-a", Addr: "127.0.0.1:1"}, time.Minute); err != nil {
		t.Fatalf("heartbeat with the replica back: %v", err)
	}

	// The master dies; Sentinel promotes the replica.
	old := sentinel.Master()
	master.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for sentinel.Master() == old {
		if time.Now().After(deadline) {
			t.Fatal("Sentinel promoted no replica within 20s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := sentinel.Master(); got != replica.Addr() {
		t.Fatalf("Sentinel names %s the master, want the replica %s", got, replica.Addr())
	}
	// The acknowledged claim and heartbeat survived: the room is still
	// node-a's, in the same session.
	var o Owner
	for {
		o, err = r.Owner(ctx, "lobby")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || o.Node != "node-a" || o.Session != b.Session || o.Epoch != a.Epoch {
		t.Fatalf("owner after the failover: %+v, %v; want node-a in %s at %d", o, err, b.Session, a.Epoch)
	}
	// The promoted replica has no replica of its own: writes that need one
	// fail until an operator (or Sentinel, when the old master comes back
	// as a replica) gives it one, and plain reads go on.
	if _, err := r.Beat(ctx, Node{ID: "node-a", Addr: "127.0.0.1:1"}, time.Minute); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("heartbeat on the promoted replica, which has none: %v, want ErrNotReplicated", err)
	}
}
