package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/registry"
	"github.com/roomlb/roomlb/router"
)

// listFlag is a comma-separated list flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// defaultRouterGCPercent is the router's GOGC. A router's live heap is
// small (a few KiB per relayed WebSocket). A relay takes its buffers from a
// pool and allocates per message only the small copy of a client's message
// it keeps for a carry-over (at most 64, for 2 s); a request or a WebSocket
// handshake allocates far more, and a burst of joins leaves that garbage
// behind until the next collection. At Go's 100 the heap may hold as much garbage as live data,
// at 50 half as much: about 2 KiB less per idle WebSocket after a burst
// (roomlb bench figure 4), for collections twice as often meanwhile.
const defaultRouterGCPercent = 50

// flagSet reports whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func runRouter(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("router", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      router.Config
		redisURL = fs.String("redis-url", "redis://127.0.0.1:6379", "Redis of the registry")
		prefix   = fs.String("prefix", registry.DefaultPrefix, "prefix of every registry key in Redis")
		logLevel = fs.String("log-level", "info", "debug, info, warn or error")
		gcTarget = fs.Int("gc-percent", defaultRouterGCPercent, "the Go collector's target for this process, as GOGC: collect once the heap has grown this many percent past what is live (Go's default is 100); a GOGC in the environment wins over the default")
	)
	fs.StringVar(&cfg.Addr, "listen", router.DefaultAddr, "address clients connect to")
	fs.StringVar(&cfg.AdminAddr, "admin-listen", router.DefaultAdminAddr, "address of /healthz, /readyz, /metrics and the dashboard, unauthenticated (- for none)")
	fs.BoolVar(&cfg.DashboardPrivate, "dashboard-private", false, "list private rooms on the dashboard too")
	fs.StringVar(&cfg.Secret, "secret", "", "shared secret sent to sidecars (required)")
	fs.StringVar(&cfg.Region, "region", "", "this router's region: placement prefers nodes in it")
	fs.Var((*listFlag)(&cfg.TrustedProxies), "trusted-proxies", "comma-separated CIDRs of proxies whose X-Forwarded-For/-Proto are kept")
	fs.Var((*listFlag)(&cfg.AllowedOrigins), "allowed-origins", "comma-separated Origins allowed to open WebSockets (empty: all)")
	replicas := fs.Int("redis-replicas", -1, "replicas that must acknowledge each steal before it counts (-1: 1 through Sentinel, 0 otherwise)")
	recovery := fs.Duration("recovery-window", registry.DefaultRecoveryWindow, "after Redis lost its data, how long only the rooms' owners may claim them; at least the sidecars' --heartbeat-ttl")
	fs.DurationVar(&cfg.HoldTimeout, "hold-timeout", router.DefaultHoldTimeout, "how long a join is held while its room moves or no node can take it")
	fs.IntVar(&cfg.MaxWaiting, "max-waiting", router.DefaultMaxWaiting, "requests that may wait for a node at once")
	fs.DurationVar(&cfg.WSIdleTimeout, "ws-idle-timeout", 0, "close relayed WebSockets idle this long (0: never)")
	fs.BoolVar(&cfg.NoRelayLoops, "no-relay-loops", false, "relay each WebSocket on goroutines of its own, not in the relay loops")
	fs.DurationVar(&cfg.ReadTimeout, "read-timeout", router.DefaultReadTimeout, "bound on reading a request's header and body")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", router.DefaultWriteTimeout, "bound on writing a response, and on each write of a relayed WebSocket")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", router.DefaultIdleTimeout, "keep-alive idle timeout")
	fs.IntVar(&cfg.MaxHeaderBytes, "max-header-bytes", router.DefaultMaxHeaderBytes, "largest request line and headers")
	fs.IntVar(&cfg.MaxBodyBytes, "max-body-bytes", router.DefaultMaxBodyBytes, "largest request body")
	fs.IntVar(&cfg.MaxFrame, "max-frame", contract.DefaultMaxFrame, "largest client WebSocket message, bytes: larger ones end the client with 1009 (at most the sidecars' --max-frame; -1: no bound)")
	fs.IntVar(&cfg.MaxConns, "max-conns", router.DefaultMaxConns, "most concurrent client connections, HTTP and WebSocket together (then 503)")
	fs.IntVar(&cfg.CreatesPerMinute, "creates-per-minute", router.DefaultCreatesPerMinute, "rooms one client address may create per minute, in bursts of half as many (then 429; -1: no bound)")
	fs.IntVar(&cfg.MaxConnsPerAddr, "max-conns-per-addr", router.DefaultMaxConnsPerAddr, "most concurrent connections of one client address, trusted proxies excepted (-1: no bound)")
	fs.DurationVar(&cfg.DialTimeout, "dial-timeout", router.DefaultDialTimeout, "bound on connecting to a sidecar")
	fs.DurationVar(&cfg.UpstreamTimeout, "upstream-timeout", router.DefaultUpstreamTimeout, "bound on a sidecar's answer")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", router.DefaultShutdownTimeout, "bound of a graceful shutdown")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	if *gcTarget < 1 {
		return fmt.Errorf("router: bad config: --gc-percent %d: want 1 or more (GOGC=off has no place in a router)", *gcTarget)
	}
	if _, env := os.LookupEnv("GOGC"); !env || flagSet(fs, "gc-percent") {
		debug.SetGCPercent(*gcTarget)
	}
	reg, closeRedis, err := openRegistry(*redisURL, *prefix, *recovery, *replicas, log)
	if err != nil {
		return err
	}
	defer closeRedis()
	cfg.Registry = reg
	cfg.Logger = log
	r, err := router.New(cfg)
	if err != nil {
		return namedByFlags(err, fs, &cfg)
	}
	log.Info("router: starting", "listen", cfg.Addr, "admin", cfg.AdminAddr)
	return r.Run(ctx)
}
