package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/redistest"
	"github.com/roomlb/roomlb/registry"
)

func TestParseEnv(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	ttl := fs.Duration("heartbeat-ttl", time.Second, "")
	id := fs.String("node-id", "default", "")
	capacity := fs.Int("capacity", 0, "")
	t.Setenv("ROOMLB_HEARTBEAT_TTL", "7s")
	t.Setenv("ROOMLB_NODE_ID", "from-env")
	t.Setenv("ROOMLB_CAPACITY", "500")
	if err := parse(fs, []string{"--node-id", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if *ttl != 7*time.Second || *id != "from-flag" || *capacity != 500 {
		t.Fatalf("heartbeat-ttl %v, node-id %q, capacity %d; want 7s from the environment, the flag's node id, 500", *ttl, *id, *capacity)
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
	reg, closeRedis, err := openRegistry(srv.URL(), registry.DefaultPrefix, 0, -1, slog.New(slog.DiscardHandler))
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

// TestErrorsNameFlags: the binary's config errors name the flags to
// change, not the library's Config fields.
func TestErrorsNameFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"router"}, []string{"router: bad config: --secret is required"}},
		{[]string{"router", "--hold-timeout", "-1s", "--max-header-bytes", "10"}, []string{"--secret is required", "--hold-timeout is negative (-1s)", "--max-header-bytes is 10, want at least 1024"}},
		{[]string{"router", "--secret", "x", "--hold-timeout", "-1s"}, []string{"--hold-timeout is negative (-1s)"}},
		{[]string{"router", "--secret", "x", "--max-header-bytes", "10"}, []string{"--max-header-bytes is 10, want at least 1024"}},
		{[]string{"router", "--secret", "x", "--trusted-proxies", "10.0.0.0/33"}, []string{"--trusted-proxies: "}},
		{[]string{"router", "--secret", "x", "--recovery-window", "-1s"}, []string{"--recovery-window is negative"}},
		{[]string{"router", "--secret", "x", "--log-level", "loud"}, []string{`--log-level "loud"`}},
		{[]string{"router", "--secret", "x", "--gc-percent", "0"}, []string{"--gc-percent 0: want 1 or more"}},
		{[]string{"sidecar", "--node-id", "a b", "--monolith", "http://x/", "--heartbeat-ttl", "10ms", "--drain-timeout", "-1s", "--max-frame", "10"},
			[]string{`--node-id "a b": `, `--monolith "http://x/": `, "--heartbeat-ttl is 10ms, want at least 100ms", "--drain-timeout is negative (-1s)", "--max-frame is 10, want at least 1024"}},
		{[]string{"sidecar", "--node-id", "n", "--listen", "nowhere"}, []string{`--listen "nowhere": `}},
		{[]string{"sidecar", "--node-id", "n", "--prefix", "a b"}, []string{"--prefix: "}},
	} {
		var out bytes.Buffer
		err := Run(context.Background(), tc.args, &out, &out)
		if err == nil {
			t.Errorf("%q succeeded", tc.args)
			continue
		}
		for _, want := range tc.want {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%q: %v\nwant %q in it", tc.args, err, want)
			}
		}
		if strings.Contains(err.Error(), "Config.") {
			t.Errorf("%q: %v\nnames a Config field", tc.args, err)
		}
	}
}

// A --redis-url with a master_name parameter connects through Sentinel, and
// then every heartbeat and claim waits for a replica by default (a failover
// would lose a write no replica has): with the replica stopped, a heartbeat
// fails.
func TestOpenRegistryThroughSentinel(t *testing.T) {
	master := redistest.New(t)
	replica := redistest.NewReplica(t, master)
	sentinel := redistest.NewSentinel(t, master, "roomlb", time.Second)
	reg, closeRedis, err := openRegistry(sentinel.FailoverURL(), registry.DefaultPrefix, 0, -1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closeRedis()
	ctx := context.Background()
	node := registry.Node{ID: "node-a", Addr: "127.0.0.1:1"}
	if err := reg.Heartbeat(ctx, node, time.Minute); err != nil {
		t.Fatalf("heartbeat through Sentinel: %v", err)
	}
	if n, err := master.Client().Exists(ctx, registry.DefaultPrefix+"{fleet}:node:node-a").Result(); err != nil || n != 1 {
		t.Fatalf("the heartbeat is not on the master Sentinel names: %v %v", n, err)
	}
	replica.Stop()
	if err := reg.Heartbeat(ctx, node, time.Minute); !errors.Is(err, registry.ErrNotReplicated) {
		t.Fatalf("heartbeat through Sentinel with no replica: %v, want ErrNotReplicated", err)
	}
	// Told to wait for none, it does not.
	reg0, close0, err := openRegistry(sentinel.FailoverURL(), registry.DefaultPrefix, 0, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer close0()
	if err := reg0.Heartbeat(ctx, node, time.Minute); err != nil {
		t.Fatalf("heartbeat with --redis-replicas 0: %v", err)
	}
}

// A --redis-url with addr parameters (or cluster=true) and no master_name
// is a Redis Cluster: the registry's keys land on the masters of their hash
// slots.
func TestOpenRegistryOnCluster(t *testing.T) {
	cluster := redistest.NewCluster(t)
	for _, u := range []string{cluster.URL(), cluster.Masters[0].URL() + "?cluster=true"} {
		reg, closeRedis, err := openRegistry(u, registry.DefaultPrefix, 0, -1, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		ctx := context.Background()
		// A fresh registry: no recovery window for the first claim.
		if err := reg.Bootstrap(ctx); err != nil {
			t.Fatalf("%s: bootstrap: %v", u, err)
		}
		b, err := reg.Beat(ctx, registry.Node{ID: "node-a", Addr: "127.0.0.1:1"}, time.Minute)
		if err != nil {
			t.Fatalf("%s: heartbeat: %v", u, err)
		}
		if _, err := reg.Claim(ctx, "lobby", "node-a", b.Session); err != nil {
			t.Fatalf("%s: claim: %v", u, err)
		}
		key := registry.DefaultPrefix + "room:{lobby}"
		if n, err := cluster.MasterOf(key).Client().Exists(ctx, key).Result(); err != nil || n != 1 {
			t.Fatalf("%s: the room's key is not on the master of its slot: %v %v", u, n, err)
		}
		closeRedis()
		cluster.FlushAll()
	}
	if _, _, err := openRegistry(cluster.Masters[0].URL()+"?cluster=yes", registry.DefaultPrefix, 0, -1, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("cluster=yes accepted")
	}
}
