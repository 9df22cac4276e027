package router

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/registry"
)

// Defaults for Config.
const (
	DefaultAddr           = ":8080"
	DefaultAdminAddr      = "127.0.0.1:9080"
	DefaultHoldTimeout    = 10 * time.Second
	DefaultMaxWaiting     = 1000
	DefaultReadTimeout    = 10 * time.Second
	DefaultWriteTimeout   = 60 * time.Second
	DefaultIdleTimeout    = 60 * time.Second
	DefaultMaxHeaderBytes = 16 << 10
	DefaultMaxBodyBytes   = 1 << 20
	DefaultMaxConns       = 100_000
	// DefaultMaxConnsPerAddr leaves room for a school or an office behind
	// one NAT address, not for one client holding the router's sockets.
	DefaultMaxConnsPerAddr = 500
	// DefaultCreatesPerMinute is far above what people create by hand.
	DefaultCreatesPerMinute = 60
	DefaultDialTimeout      = 2 * time.Second
	DefaultUpstreamTimeout  = 60 * time.Second
	DefaultNodeRefresh      = time.Second
	DefaultListCacheTTL     = time.Second
	DefaultCacheSize        = 1 << 18
	DefaultShutdownTimeout  = 10 * time.Second
	DefaultRedisTimeout     = time.Second
)

// Config configures a Router. Registry and Secret are required; every other
// field has a working zero value.
type Config struct {
	// Registry is the room registry the router reads owners and nodes from.
	Registry *registry.Registry
	// Secret is sent to sidecars in X-Roomlb-Secret; they refuse requests
	// without it. Required.
	Secret string

	// Addr is the client listener used by Run; "" means DefaultAddr.
	Addr string
	// AdminAddr is the listener for /healthz, /readyz, /metrics and the
	// dashboard used by Run; "" means DefaultAdminAddr (loopback), "-"
	// means none.
	AdminAddr string
	// DashboardPrivate shows private rooms (visibility "private") on the
	// dashboard too; by default they are left out (and counted). The admin
	// listener has no authentication: keep it on loopback or a private
	// network.
	DashboardPrivate bool
	// Region is this router's region: placement prefers nodes in it. ""
	// means no preference.
	Region string

	// TrustedProxies are the CIDRs (or single addresses) of proxies in front
	// of the router whose X-Forwarded-For and X-Forwarded-Proto are kept.
	// From any other peer those headers are replaced. Empty trusts nobody.
	TrustedProxies []string
	// AllowedOrigins lists the Origin values ("https://example.com") allowed
	// to open WebSockets; others get 403. Empty allows every origin.
	// Requests without an Origin header (non-browser clients) are allowed.
	AllowedOrigins []string

	// HoldTimeout bounds how long a request is held while its room moves
	// between nodes or while no node can take it; 0 means
	// DefaultHoldTimeout.
	HoldTimeout time.Duration
	// MaxWaiting is how many requests may wait for a node at once when none
	// is available; beyond it they get 503 at once. 0 means
	// DefaultMaxWaiting; negative means none wait.
	MaxWaiting int
	// WSIdleTimeout closes a relayed WebSocket after this long without a
	// byte in either direction. 0 means never.
	WSIdleTimeout time.Duration
	// NoRelayLoops relays every WebSocket on two goroutines of its own
	// rather than in the process's relay loops (README "The hot path"),
	// which relay all but the rare cases with fewer wake-ups per message.
	NoRelayLoops bool

	// ReadTimeout bounds reading a request's header and body, from the
	// first byte (slow clients); 0 means DefaultReadTimeout.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response to a client, and each write
	// of a relayed WebSocket in either direction: a peer that stops reading
	// for this long is dropped. 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long; 0 means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's line and headers (larger ones get
	// 431); 0 means DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// MaxBodyBytes bounds a request body (larger ones get 413); bodies are
	// read whole so that a request can be retried on another node. 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int
	// MaxConns bounds concurrent client connections, HTTP and relayed
	// WebSockets together; a connection over it is answered 503 at once.
	// 0 means DefaultMaxConns.
	MaxConns int
	// MaxConnsPerAddr bounds the concurrent connections of one client
	// address (trusted proxies are not bound by it); 0 means
	// DefaultMaxConnsPerAddr, -1 no bound.
	MaxConnsPerAddr int
	// MaxFrame bounds a client's WebSocket message, all its frames
	// together, as the sidecar's own bound does: a larger one ends the
	// client with 1009 at the router, before a byte of it reaches a
	// sidecar. Keep it at most the sidecars' (--max-frame of both). 0
	// means contract.DefaultMaxFrame, -1 no bound.
	MaxFrame int
	// CreatesPerMinute bounds the rooms one client address may create
	// (generate or create) per minute, with bursts of half as many; more
	// get 429. 0 means DefaultCreatesPerMinute, -1 no bound.
	CreatesPerMinute int

	// DialTimeout bounds connecting to a sidecar; 0 means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// UpstreamTimeout bounds a sidecar's answer, body included, and a
	// WebSocket handshake with it; 0 means DefaultUpstreamTimeout.
	UpstreamTimeout time.Duration
	// RedisTimeout bounds one registry operation on the request path; 0
	// means DefaultRedisTimeout.
	RedisTimeout time.Duration

	// NodeRefresh is how often the node list is re-read (node events
	// trigger a re-read too); 0 means DefaultNodeRefresh.
	NodeRefresh time.Duration
	// ListCacheTTL is how long an /api/room/list answer is reused; 0 means
	// DefaultListCacheTTL.
	ListCacheTTL time.Duration
	// CacheSize bounds the owner cache (rooms); 0 means DefaultCacheSize.
	CacheSize int
	// ShutdownTimeout bounds the graceful shutdown Run does when its context
	// ends; 0 means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// settings is a checked Config with defaults filled in.
type settings struct {
	Config
	trusted []netip.Prefix
	origins map[string]bool
}

// check fills in c's defaults and checks it, reporting every problem at
// once.
func (c Config) check() (*settings, error) {
	var errs []error
	if c.Registry == nil {
		errs = append(errs, errors.New("Config.Registry is required"))
	}
	if c.Secret == "" {
		errs = append(errs, errors.New("Config.Secret is required (sidecars refuse requests without it)"))
	}
	for i := 0; i < len(c.Secret); i++ {
		if b := c.Secret[i]; b < 0x21 || b > 0x7e {
			errs = append(errs, fmt.Errorf("Config.Secret: byte %d is not a visible ASCII character (it travels in a header)", i))
			break
		}
	}
	for _, f := range []struct {
		p    *time.Duration
		name string
		d    time.Duration
	}{
		{&c.HoldTimeout, "HoldTimeout", DefaultHoldTimeout},
		{&c.ReadTimeout, "ReadTimeout", DefaultReadTimeout},
		{&c.WriteTimeout, "WriteTimeout", DefaultWriteTimeout},
		{&c.IdleTimeout, "IdleTimeout", DefaultIdleTimeout},
		{&c.DialTimeout, "DialTimeout", DefaultDialTimeout},
		{&c.UpstreamTimeout, "UpstreamTimeout", DefaultUpstreamTimeout},
		{&c.RedisTimeout, "RedisTimeout", DefaultRedisTimeout},
		{&c.NodeRefresh, "NodeRefresh", DefaultNodeRefresh},
		{&c.ListCacheTTL, "ListCacheTTL", DefaultListCacheTTL},
		{&c.ShutdownTimeout, "ShutdownTimeout", DefaultShutdownTimeout},
	} {
		if *f.p < 0 {
			errs = append(errs, fmt.Errorf("Config.%s is negative (%v)", f.name, *f.p))
		}
		if *f.p == 0 {
			*f.p = f.d
		}
	}
	if c.WSIdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("Config.WSIdleTimeout is negative (%v)", c.WSIdleTimeout))
	}
	for _, f := range []struct {
		p    *int
		name string
		d    int
		min  int
	}{
		{&c.MaxHeaderBytes, "MaxHeaderBytes", DefaultMaxHeaderBytes, 1024},
		{&c.MaxBodyBytes, "MaxBodyBytes", DefaultMaxBodyBytes, 1},
		{&c.MaxConns, "MaxConns", DefaultMaxConns, 1},
		{&c.CacheSize, "CacheSize", DefaultCacheSize, 1},
		{&c.MaxConnsPerAddr, "MaxConnsPerAddr", DefaultMaxConnsPerAddr, -1},
		{&c.CreatesPerMinute, "CreatesPerMinute", DefaultCreatesPerMinute, -1},
		{&c.MaxFrame, "MaxFrame", contract.DefaultMaxFrame, -1},
	} {
		if *f.p == 0 {
			*f.p = f.d
		}
		if *f.p < f.min {
			errs = append(errs, fmt.Errorf("Config.%s is %d, want at least %d", f.name, *f.p, f.min))
		}
	}
	if c.MaxFrame > 0 && c.MaxFrame < 1024 {
		errs = append(errs, fmt.Errorf("Config.MaxFrame is %d, want at least 1024 (bytes), or -1 for no bound", c.MaxFrame))
	}
	switch {
	case c.MaxWaiting == 0:
		c.MaxWaiting = DefaultMaxWaiting
	case c.MaxWaiting < 0:
		c.MaxWaiting = 0
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.AdminAddr == "" {
		c.AdminAddr = DefaultAdminAddr
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}

	s := &settings{Config: c}
	for _, p := range c.TrustedProxies {
		pfx, err := parsePrefix(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("Config.TrustedProxies: %w", err))
			continue
		}
		s.trusted = append(s.trusted, pfx)
	}
	if len(c.AllowedOrigins) > 0 {
		s.origins = make(map[string]bool, len(c.AllowedOrigins))
		for _, o := range c.AllowedOrigins {
			norm, err := normalizeOrigin(o)
			if err != nil {
				errs = append(errs, fmt.Errorf("Config.AllowedOrigins: %w", err))
				continue
			}
			s.origins[norm] = true
		}
	}
	if len(errs) > 0 {
		// Every problem at once, as the sidecar's Config does.
		return nil, fmt.Errorf("router: bad config: %w", errors.Join(errs...))
	}
	return s, nil
}

// parsePrefix accepts a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: %w", s, err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR nor an address: %w", s, err)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// normalizeOrigin checks an allowed origin and returns it in the form
// browsers send: lower-case scheme://host[:port], without a default port.
func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(o))
	if err != nil {
		return "", fmt.Errorf("origin %q: %w", o, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("origin %q: want scheme://host[:port], as browsers send in Origin", o)
	}
	host := strings.ToLower(u.Host)
	if u.Scheme == "http" {
		host = strings.TrimSuffix(host, ":80")
	} else {
		host = strings.TrimSuffix(host, ":443")
	}
	return u.Scheme + "://" + host, nil
}
