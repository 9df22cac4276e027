package main

import (
	"flag"
	"testing"
	"time"
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
