// Command roomlb runs the parts of roomlb: `roomlb sidecar` next to each
// monolith, `roomlb router` in front of them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/internal/logx"
)

// redisLog is go-redis's own logger in this process (main installs it): its
// messages, rate-limited, go to the process logger (newLogger sets it;
// before that, warnings to stderr in the same format; ctl discards them).
var redisLog = logx.NewRedis(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), logx.DefaultEvery)

func main() {
	redis.SetLogger(redisLog)
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
		fmt.Fprintln(os.Stderr, errorLine(os.Args[1:], err))
		os.Exit(1)
	}
}

// subcommands are the commands of Run; main reports their errors as
// "roomlb CMD: ...".
var subcommands = map[string]bool{"sidecar": true, "router": true, "dev": true, "ctl": true, "bench": true, "chaos": true}

// errorLine is how main reports err from Run(args): "roomlb CMD: ..." for
// a subcommand's error (whether or not its text names the command
// already), else "roomlb: ...".
func errorLine(args []string, err error) string {
	msg := err.Error()
	if len(args) == 0 || !subcommands[args[0]] {
		return "roomlb: " + msg
	}
	cmd := args[0]
	if strings.HasPrefix(msg, cmd+": ") || strings.HasPrefix(msg, cmd+" ") {
		return "roomlb " + msg
	}
	return "roomlb " + cmd + ": " + msg
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
  roomlb version           module version, commit and Go version of this binary

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
	case "version", "-version", "--version":
		fmt.Fprint(stdout, versionText())
		return nil
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

// versionText is what `roomlb version` prints: the module version, the
// commit the binary was built from (and whether the work tree had changes),
// and the Go version, from the build information Go stamps into binaries.
// A build without VCS information (go test, or a source tree without .git
// such as the Docker build's) says so.
func versionText() string {
	version, commit, when, dirty, goVersion := "(unknown)", "", "", "", runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = " (dirty: uncommitted changes)"
				}
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "roomlb %s\n", version)
	switch {
	case commit == "":
		b.WriteString("commit: unknown (built without VCS information)\n")
	case when != "":
		fmt.Fprintf(&b, "commit: %s %s%s\n", commit, when, dirty)
	default:
		fmt.Fprintf(&b, "commit: %s%s\n", commit, dirty)
	}
	fmt.Fprintf(&b, "go: %s %s/%s\n", goVersion, runtime.GOOS, runtime.GOARCH)
	return b.String()
}
