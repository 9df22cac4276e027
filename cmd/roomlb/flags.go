package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"regexp"
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

// redisClient connects to the Redis at u: a redis:// or rediss:// URL; or,
// with a master_name parameter, go-redis's Sentinel form
// (redis://SENTINEL:26379?master_name=NAME&addr=SENTINEL2:26379&...), for a
// client that follows the master Sentinel names (sentinel says so); or,
// with addr parameters and no master_name, or cluster=true, go-redis's
// Cluster form (redis://NODE1:6379?addr=NODE2:6379&addr=NODE3:6379), for a
// Redis Cluster client.
func redisClient(u string) (rdb redis.UniversalClient, sentinel bool, err error) {
	pu, perr := url.Parse(u)
	if perr == nil && pu.Query().Has("master_name") {
		opt, err := redis.ParseFailoverURL(u)
		if err != nil {
			return nil, false, err
		}
		opt.ContextTimeoutEnabled = true
		return redis.NewFailoverClient(opt), true, nil
	}
	if q := pu.Query(); perr == nil && (q.Has("addr") || q.Has("cluster")) {
		switch c := q.Get("cluster"); c {
		case "", "true":
		default:
			return nil, false, fmt.Errorf("cluster=%q: the only value is true", c)
		}
		q.Del("cluster")
		pu.RawQuery = q.Encode()
		opt, err := redis.ParseClusterURL(pu.String())
		if err != nil {
			return nil, false, err
		}
		opt.ContextTimeoutEnabled = true
		return redis.NewClusterClient(opt), false, nil
	}
	opt, err := redis.ParseURL(u)
	if err != nil {
		return nil, false, err
	}
	// Without it go-redis bounds socket reads and writes by its own
	// ReadTimeout and WriteTimeout (3s) and ignores the deadlines of the
	// contexts the registry calls are given (the router's RedisTimeout, the
	// sidecar's heartbeats).
	opt.ContextTimeoutEnabled = true
	return redis.NewClient(opt), false, nil
}

// openRegistry connects to the registry at redisURL; close closes the
// connection. recovery is the registry's recovery window (0: the default);
// replicas how many replicas must acknowledge a write that gives or keeps
// ownership (below 0: 1 through Sentinel, 0 otherwise).
func openRegistry(redisURL, prefix string, recovery time.Duration, replicas int, log *slog.Logger) (reg *registry.Registry, close func() error, err error) {
	if recovery < 0 {
		return nil, nil, fmt.Errorf("--recovery-window is negative (%v)", recovery)
	}
	rdb, sentinel, err := redisClient(redisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("--redis-url: %w", err)
	}
	if replicas < 0 {
		replicas = 0
		if sentinel {
			replicas = 1
		}
	}
	reg, err = registry.New(rdb, registry.Config{Prefix: prefix, RecoveryWindow: recovery, Replicas: replicas, Logger: log})
	if err != nil {
		// The one config error left: a prefix Redis patterns cannot hold.
		rdb.Close()
		return nil, nil, fmt.Errorf("--prefix: %w", err)
	}
	return reg, rdb.Close, nil
}

// newLogger makes the process logger: text to stderr at level. go-redis's
// own messages go to it too, rate-limited (see redisLog).
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
	redisLog.SetLogger(log)
	return log, nil
}

// flagNames maps each field of the struct cfg points to that a flag of fs
// sets (fs.XxxVar(&cfg.Field, ...)) to the flag: {"HeartbeatTTL": "--heartbeat-ttl"}.
func flagNames(fs *flag.FlagSet, cfg any) map[string]string {
	v := reflect.ValueOf(cfg).Elem()
	field := map[uintptr]string{}
	for i := range v.NumField() {
		if f := v.Type().Field(i); f.IsExported() && f.Type.Size() > 0 {
			field[v.Field(i).Addr().Pointer()] = f.Name
		}
	}
	names := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if p := reflect.ValueOf(f.Value); p.Kind() == reflect.Pointer {
			if name, ok := field[p.Pointer()]; ok {
				names[name] = "--" + f.Name
			}
		}
	})
	return names
}

// configField is how the sidecar and router packages name a setting in
// their errors: Config.HeartbeatTTL.
var configField = regexp.MustCompile(`\bConfig\.([A-Z][A-Za-z0-9]*)`)

// flagError is a library's error reworded for the binary's user: the
// settings it names are the flags that set them.
type flagError struct {
	msg string
	err error
}

func (e *flagError) Error() string { return e.msg }
func (e *flagError) Unwrap() error { return e.err }

// namedByFlags rewords err, from a package configured by flags of fs that
// set the fields of cfg, so that each Config.Field it names that a flag sets
// is named by the flag: "Config.Secret is required" is "--secret is
// required".
func namedByFlags(err error, fs *flag.FlagSet, cfg any) error {
	if err == nil {
		return nil
	}
	names := flagNames(fs, cfg)
	msg := configField.ReplaceAllStringFunc(err.Error(), func(m string) string {
		if f, ok := names[strings.TrimPrefix(m, "Config.")]; ok {
			return f
		}
		return m
	})
	return &flagError{msg, err}
}
