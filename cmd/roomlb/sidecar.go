package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/roomlb/roomlb/registry"
	"github.com/roomlb/roomlb/sidecar"
)

func runSidecar(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	var (
		cfg      sidecar.Config
		redisURL = fs.String("redis-url", "redis://127.0.0.1:6379", "Redis of the registry")
		ottURL   = fs.String("monolith-redis-url", "", "the monolith's own Redis, where it writes room:NAME and publishes announcements (default: --redis-url)")
		prefix   = fs.String("prefix", registry.DefaultPrefix, "prefix of every registry key in Redis")
		replicas = fs.Int("redis-replicas", -1, "replicas that must acknowledge each heartbeat and claim before it counts (-1: 1 through Sentinel, 0 otherwise)")
		logLevel = fs.String("log-level", "info", "debug, info, warn or error")
	)
	fs.StringVar(&cfg.NodeID, "node-id", host, "this node's id in the registry (in Nomad: the allocation id)")
	fs.StringVar(&cfg.Listen, "listen", sidecar.DefaultListen, "address routers connect to")
	fs.StringVar(&cfg.Advertise, "advertise", "", "address routers are told to use (default: the bound --listen address)")
	fs.StringVar(&cfg.Region, "region", "", "region of this node, for same-region placement")
	fs.StringVar(&cfg.Monolith, "monolith", "ws://127.0.0.1:3002/", "the monolith's balancer WebSocket URL")
	fs.StringVar(&cfg.Secret, "secret", "", "shared secret routers must send (empty: anyone may connect; development only)")
	fs.IntVar(&cfg.Capacity, "capacity", 0, "most clients this node takes (0: no limit)")
	fs.DurationVar(&cfg.HeartbeatTTL, "heartbeat-ttl", sidecar.DefaultHeartbeatTTL, "node heartbeat lifetime; refreshed every third of it")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", sidecar.DefaultDrainTimeout, "bound of a drain on SIGTERM")
	fs.DurationVar(&cfg.AuthTimeout, "auth-timeout", sidecar.DefaultAuthTimeout, "time a client has to send its auth frame")
	fs.DurationVar(&cfg.LoadTimeout, "load-timeout", sidecar.DefaultLoadTimeout, "time the monolith has to load a room")
	fs.DurationVar(&cfg.StateDebounce, "state-debounce", sidecar.DefaultStateDebounce, "the monolith's delay between a room change and its Redis write")
	fs.DurationVar(&cfg.ShutdownFlush, "shutdown-flush", sidecar.DefaultShutdownFlush, "how long rooms are held after the monolith closed the link to shut down, before they are released")
	fs.IntVar(&cfg.MaxFrame, "max-frame", sidecar.DefaultMaxFrame, "largest client message (all its frames together), bytes (then 1009)")
	fs.IntVar(&cfg.SendQueue, "send-queue", sidecar.DefaultSendQueue, "messages that may wait for a slow client before it is disconnected")
	fs.DurationVar(&cfg.MonolithIdle, "monolith-idle", sidecar.DefaultMonolithIdle, "longest a connection to the monolith's HTTP API idles in the pool; below the monolith's keep-alive timeout (Node: 5s)")
	fs.DurationVar(&cfg.PingInterval, "ping-interval", sidecar.DefaultPingInterval, "ping period of the monolith link")
	serveLog := fs.String("serve-log", "", "append a JSON line per room served, with its epoch and first and last moment of service, and one per client joined, to this file (for roomlb chaos)")
	fs.StringVar(&cfg.AnnounceChannel, "announce-channel", sidecar.DefaultAnnounceChannel, "Redis channel of OpenTogetherTube announcements (- for none)")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	// Every line of this process names its node, once: sidecar.New adds it
	// to the sidecar's logger, nodeLog has it for the rest (go-redis's
	// lines, the registry's, ours).
	nodeLog := log.With("node", cfg.NodeID)
	redisLog.SetLogger(nodeLog)
	reg, closeRedis, err := openRegistry(*redisURL, *prefix, max(registry.DefaultRecoveryWindow, cfg.HeartbeatTTL), *replicas, nodeLog)
	if err != nil {
		return err
	}
	defer closeRedis()
	cfg.Registry = reg
	if *ottURL != "" && *ottURL != *redisURL {
		rdb, _, err := redisClient(*ottURL)
		if err != nil {
			return fmt.Errorf("--monolith-redis-url: %w", err)
		}
		defer rdb.Close()
		cfg.MonolithRedis = rdb
	}
	cfg.Logger = log
	if *serveLog != "" {
		f, err := os.OpenFile(*serveLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("--serve-log: %w", err)
		}
		defer f.Close()
		cfg.ServeLog = f
	}
	s, err := sidecar.New(cfg)
	if err != nil {
		return namedByFlags(err, fs, &cfg)
	}
	nodeLog.Info("sidecar: starting", "listen", s.Addr(), "monolith", cfg.Monolith)
	return s.Run(ctx)
}
