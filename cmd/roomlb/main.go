// Command roomlb runs the parts of roomlb: `roomlb sidecar` next to each
// monolith, `roomlb router` in front of them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// A second signal skips the graceful part.
	go func() {
		<-ctx.Done()
		stop()
		again := make(chan os.Signal, 1)
		signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
		<-again
		fmt.Fprintln(os.Stderr, "roomlb: second signal, exiting now")
		os.Exit(1)
	}()
	err := Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "roomlb:", err)
		os.Exit(1)
	}
}

const usage = `roomlb puts room-based realtime apps (OpenTogetherTube) behind stateless routers.

Usage:
  roomlb sidecar [flags]   run next to one monolith: claim its rooms, serve its clients
  roomlb router [flags]    forward clients to the node that owns their room
  roomlb dev [flags]       a whole cluster on loopback: Redis, monoliths, sidecars, routers
  roomlb ctl [flags] CMD   inspect and steer a cluster: nodes, rooms, where, drain, move
  roomlb bench [flags]     measure roomlb against HAProxy and a direct link on loopback
  roomlb chaos [flags]     inject faults into a cluster on loopback and check its promises
  roomlb help COMMAND      flags of a command

Every flag can also be set with an environment variable ROOMLB_<FLAG>, e.g.
--redis-url is ROOMLB_REDIS_URL; a flag on the command line wins.
`

// Run runs the subcommand named by args[0].
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "sidecar":
		return runSidecar(ctx, args[1:], stderr)
	case "router":
		return runRouter(ctx, args[1:], stderr)
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr)
	case "ctl":
		return runCtl(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "chaos":
		return runChaos(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		if len(args) > 1 {
			return Run(ctx, []string{args[1], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
