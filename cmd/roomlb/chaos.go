package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/roomlb/roomlb/chaos"
	"github.com/roomlb/roomlb/internal/nodemonolith"
)

// runChaos runs the fault run on a cluster of processes on loopback and
// prints its table; it fails when any invariant was broken.
func runChaos(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      chaos.Config
		quick    = fs.Bool("quick", false, "each kind of fault once in all, fewer clients: under 3 minutes")
		jsonFile = fs.String("json", "", "also write the report to this file as JSON")
		hbs      listFlag
		faults   listFlag
	)
	hbs.Set("3s,1s")
	fs.Int64Var(&cfg.Seed, "seed", 0, "seed of the order of faults and every random choice (0: from the clock; printed)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "cycle through the faults until this much time has passed (0: each fault once per heartbeat TTL)")
	fs.Var(&hbs, "heartbeat-ttl", "comma-separated sidecar heartbeat TTLs, one cluster each")
	fs.Var(&faults, "faults", "comma-separated kinds of fault (default: all): "+strings.Join(chaos.Kinds, ", "))
	fs.StringVar(&cfg.Dir, "dir", "", "keep the processes' logs and serve logs in this folder (default: a temporary one, removed)")
	fs.StringVar(&cfg.MonolithDir, "monolith-dir", nodemonolith.Dir(), "folder of the Node reference monolith")
	fs.IntVar(&cfg.Rooms, "rooms", 0, fmt.Sprintf("rooms created at the start (default %d, --quick %d)", chaos.DefaultRooms, chaos.QuickRooms))
	fs.IntVar(&cfg.ClientsPerRoom, "clients", 0, fmt.Sprintf("clients per room (default %d, --quick %d)", chaos.DefaultClientsPerRoom, chaos.QuickClientsPerRoom))
	fs.DurationVar(&cfg.SlowLatency, "slow-latency", 0, fmt.Sprintf("delay the link-slow fault adds to each chunk between a sidecar and Redis (default %v)", chaos.DefaultSlowLatency))
	fs.DurationVar(&cfg.Steady, "steady", 0, fmt.Sprintf("steady phase after each fault (default %v, --quick %v)", chaos.DefaultSteady, chaos.QuickSteady))
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg.Quick = *quick
	for _, s := range hbs {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("--heartbeat-ttl: %w", err)
		}
		cfg.HeartbeatTTLs = append(cfg.HeartbeatTTLs, d)
	}
	cfg.Faults = faults
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("chaos: find this binary: %w", err)
	}
	cfg.Binary = bin
	cfg.Log = stderr
	rep, runErr := chaos.Run(ctx, cfg)
	if rep == nil {
		return runErr
	}
	fmt.Fprint(stdout, rep.Table())
	if *jsonFile != "" {
		b, err := rep.JSON()
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonFile, append(b, '\n'), 0o644); err != nil {
			return errors.Join(runErr, err)
		}
	}
	if runErr != nil {
		return runErr
	}
	if rep.Violations > 0 {
		return fmt.Errorf("chaos: %d violations", rep.Violations)
	}
	return nil
}
