package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/redistest"
	"github.com/roomlb/roomlb/registry"
)

func TestParseEnv(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	ttl := fs.Duration("lease-ttl", time.Second, "")
	id := fs.String("node-id", "default", "")
	capacity := fs.Int("capacity", 0, "")
	t.Setenv("ROOMLB_LEASE_TTL", "7s")
	t.Setenv("ROOMLB_NODE_ID", "from-env")
	t.Setenv("ROOMLB_CAPACITY", "500")
	if err := parse(fs, []string{"--node-id", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if *ttl != 7*time.Second || *id != "from-flag" || *capacity != 500 {
		t.Fatalf("lease-ttl %v, node-id %q, capacity %d; want 7s from the environment, the flag's node id, 500", *ttl, *id, *capacity)
	}
	t.Setenv("ROOMLB_CAPACITY", "lots")
	if err := parse(flag.NewFlagSet("y", flag.ContinueOnError), nil); err != nil {
		t.Fatalf("unrelated env: %v", err)
	}
	fs2 := flag.NewFlagSet("z", flag.ContinueOnError)
	fs2.Int("capacity", 0, "")
	if err := parse(fs2, nil); err == nil {
		t.Fatal("ROOMLB_CAPACITY=lots accepted")
	}
	if err := parse(flag.NewFlagSet("w", flag.ContinueOnError), []string{"stray"}); err == nil {
		t.Fatal("stray argument accepted")
	}
}

// TestOpenRegistryHonorsContextDeadlines: a registry call whose context
// ends while Redis does not answer fails then, instead of waiting for the
// answer (go-redis ignores context deadlines on the socket without
// ContextTimeoutEnabled, and its own read timeout is 3s).
func TestOpenRegistryHonorsContextDeadlines(t *testing.T) {
	srv := redistest.New(t)
	reg, closeRedis, err := openRegistry(srv.URL(), registry.DefaultPrefix, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closeRedis()
	ctx := context.Background()
	if _, err := reg.Alive(ctx, "node-a"); err != nil { // a pooled connection, ready
		t.Fatal(err)
	}
	// Redis holds every client's commands for 1.5s: well below go-redis's
	// own read timeout, far above the call's deadline.
	if err := srv.Client().Do(ctx, "CLIENT", "PAUSE", "1500", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = reg.Alive(cctx, "node-a")
	var ne net.Error
	if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("Alive during a Redis pause with a 100ms context: %v, want a timeout", err)
	}
}
