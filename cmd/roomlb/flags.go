package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/registry"
)

// envName is the environment variable of a flag: --redis-url is
// ROOMLB_REDIS_URL.
func envName(flagName string) string {
	return "ROOMLB_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse parses args into fs, then fills every flag not given on the command
// line from its ROOMLB_ environment variable.
func parse(fs *flag.FlagSet, args []string) error {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage of roomlb %s (each flag also as ROOMLB_<FLAG>):\n", fs.Name())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %v", envName(f.Name), v, e)
			}
		}
	})
	return err
}

// openRegistry connects to the registry at redisURL; close closes the
// connection. recovery is the registry's recovery window (0: the default).
func openRegistry(redisURL, prefix string, recovery time.Duration, log *slog.Logger) (reg *registry.Registry, close func() error, err error) {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("--redis-url: %w", err)
	}
	// Without it go-redis bounds socket reads and writes by its own
	// ReadTimeout and WriteTimeout (3s) and ignores the deadlines of the
	// contexts the registry calls are given (the router's RedisTimeout, the
	// sidecar's lease renewals).
	opt.ContextTimeoutEnabled = true
	rdb := redis.NewClient(opt)
	reg, err = registry.New(rdb, registry.Config{Prefix: prefix, RecoveryWindow: recovery, Logger: log})
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	return reg, rdb.Close, nil
}

// newLogger makes the process logger: text to stderr at level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
