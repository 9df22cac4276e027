package otttest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/ott"
)

// Defaults of the real monolith (ott/PROTOCOL.md §2.3, §2.4, §4.7, §6, §7).
const (
	DefaultRegion            = "unknown"
	DefaultStateDebounce     = 5 * time.Second
	DefaultGossipInterval    = 20 * time.Second
	DefaultUnloadAfter       = 300 * time.Second
	DefaultKeepaliveInterval = time.Second
	DefaultInitTimeout       = 10 * time.Second
	DefaultRoomExpire        = 7200 * time.Second
	DefaultShutdownDelay     = time.Second
	DefaultTickInterval      = time.Second
)

// syncDebounce is how long a room coalesces changes before one sync
// broadcast, as in the real room.
const syncDebounce = 50 * time.Millisecond

// Config configures a Monolith. Durations left zero take the defaults.
type Config struct {
	// Redis holds the monolith's state (required). The Monolith does not
	// close it.
	Redis *redis.Client
	// Region is reported in init; "" means DefaultRegion.
	Region string

	StateDebounce     time.Duration // delay of the room:<name> write after the last change
	GossipInterval    time.Duration // period of the gossip to all balancers
	UnloadAfter       time.Duration // idle time before a Keepalive unload
	KeepaliveInterval time.Duration // how often rooms are checked for reaping
	InitTimeout       time.Duration // a balancer must send init within this
	RoomExpire        time.Duration // TTL of room:<name>, whole seconds (EX)
	TickInterval      time.Duration // period of the room tick (update, then sync)
	// LoadDelay is an artificial delay in the asynchronous load path, after
	// the lookup in Redis and before the room is added: it widens the window
	// in which a second load of the same room makes a duplicate instance.
	// Zero means none.
	LoadDelay time.Duration
	// SessionDelay is an artificial delay before a join's session lookup
	// (a slow Redis): a leave of the client that comes meanwhile makes the
	// join come to nothing, without a word, as in the real server. Zero
	// means none.
	SessionDelay time.Duration
	// WriteLate is added to every state write's debounce, as a loaded
	// machine fires timers late. Zero means none.
	WriteLate time.Duration
	// ShutdownDelay is the pause of Shutdown between closing the balancer
	// links and stopping. Negative means none.
	ShutdownDelay time.Duration

	// Logger receives the fake's logs; nil discards them.
	Logger *slog.Logger
	// OnReceive, if set, is called for every frame received from a
	// balancer, in order per link and before the frame is handled, without
	// any lock held: balancerID is the link's id ("" before its init), msg
	// the decoded message, err the decode error (then msg is zero). It must
	// not block for long.
	OnReceive func(balancerID string, msg ott.B2M, err error)
}

// Log keys.
const (
	logRoom     = "room"
	logClient   = "client"
	logBalancer = "balancer"
	logRemote   = "remote"
	logReason   = "reason"
	logErr      = "err"
)

// ErrNoRedis is returned by New without Config.Redis.
var ErrNoRedis = errors.New("otttest: Config.Redis is required")

// Monolith is a running fake monolith.
type Monolith struct {
	cfg    Config
	id     string
	log    *slog.Logger
	rdb    *redis.Client
	ctx    context.Context // ends with Close: bounds every Redis call
	cancel context.CancelFunc

	httpLn, balLn   net.Listener
	httpSrv, balSrv *http.Server
	upgrader        upgrader

	stopOnce sync.Once
	wg       sync.WaitGroup // every goroutine of the monolith

	mu           sync.Mutex
	closed       bool // stopped: no new work, no new goroutines
	crashed      bool
	shuttingDown bool
	links        []*link // open links in accept order
	rooms        []*room // loaded instances in load order
	unloaded     []*room // instances unloaded by the balancer whose sync or state write is still to come
	clients      map[string]*client
	clientSeq    uint64
	sent         map[string]int
	received     map[string]int
}

// New starts a monolith on two loopback ports.
func New(cfg Config) (*Monolith, error) {
	if cfg.Redis == nil {
		return nil, ErrNoRedis
	}
	setDefault(&cfg.Region, DefaultRegion)
	setDefault(&cfg.StateDebounce, DefaultStateDebounce)
	setDefault(&cfg.GossipInterval, DefaultGossipInterval)
	setDefault(&cfg.UnloadAfter, DefaultUnloadAfter)
	setDefault(&cfg.KeepaliveInterval, DefaultKeepaliveInterval)
	setDefault(&cfg.InitTimeout, DefaultInitTimeout)
	setDefault(&cfg.RoomExpire, DefaultRoomExpire)
	setDefault(&cfg.ShutdownDelay, DefaultShutdownDelay)
	setDefault(&cfg.TickInterval, DefaultTickInterval)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &Monolith{
		cfg:      cfg,
		id:       uuid.NewString(),
		log:      cfg.Logger,
		rdb:      cfg.Redis,
		clients:  make(map[string]*client),
		sent:     make(map[string]int),
		received: make(map[string]int),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	var err error
	if m.httpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	if m.balLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		m.httpLn.Close()
		return nil, err
	}
	m.upgrader = newUpgrader()
	m.httpSrv = &http.Server{Handler: m.tracked(http.HandlerFunc(m.serveAPI)), ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelDebug)}
	m.balSrv = &http.Server{Handler: m.tracked(http.HandlerFunc(m.serveBalancer)), ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelDebug)}
	m.wg.Add(5)
	go func() { defer m.wg.Done(); m.httpSrv.Serve(m.httpLn) }()
	go func() { defer m.wg.Done(); m.balSrv.Serve(m.balLn) }()
	go func() { defer m.wg.Done(); m.every(m.cfg.GossipInterval, m.gossipAll) }()
	go func() { defer m.wg.Done(); m.every(m.cfg.KeepaliveInterval, m.keepalive) }()
	go func() { defer m.wg.Done(); m.every(m.cfg.TickInterval, m.tick) }()
	m.log.Info("monolith ready", "http", m.HTTPAddr(), "balancer", m.BalancerAddr(), "id", m.id, "region", cfg.Region)
	return m, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// ID is the monolith's id, as sent in init.
func (m *Monolith) ID() string { return m.id }

// HTTPAddr is the host:port of the HTTP API.
func (m *Monolith) HTTPAddr() string { return m.httpLn.Addr().String() }

// BalancerAddr is the host:port of the balancer WebSocket link; dial
// ws://<BalancerAddr>/ (any path).
func (m *Monolith) BalancerAddr() string { return m.balLn.Addr().String() }

func (m *Monolith) httpPort() int { return m.httpLn.Addr().(*net.TCPAddr).Port }

// Close stops the monolith hard, like a killed process: connections are
// dropped without close frames, pending state writes are lost. It waits for
// every goroutine. It may be called more than once, and after Shutdown or a
// crash.
func (m *Monolith) Close() error {
	m.stop()
	m.wg.Wait()
	return nil
}

// Shutdown stops the monolith like the real one on SIGTERM (§2.4): it stops
// accepting balancers, closes every balancer link with 1001 "Server shutting
// down" (no kick, no unloaded), waits ShutdownDelay, then stops like Close
// without writing any room state. The real one starts its room manager's
// shutdown without awaiting it and exits at once, so nothing reaches Redis:
// a state write still pending then is lost. During the delay the rooms live
// on as in the still running process: the room tick, the keepalive reaper,
// syncs and any state write that falls due; only gossip stops. When ctx ends
// first it stops at once and returns ctx's error.
func (m *Monolith) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	if m.closed || m.shuttingDown {
		m.mu.Unlock()
		return m.Close()
	}
	m.shuttingDown = true
	links := append([]*link(nil), m.links...)
	m.mu.Unlock()
	m.balLn.Close() // stop accepting balancers; open links are hijacked and stay
	m.log.Info("shutting down")
	for _, l := range links {
		l.close(websocketCloseGoingAway, "Server shutting down")
	}
	if d := m.cfg.ShutdownDelay; d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			m.Close()
			return ctx.Err()
		}
	}
	m.mu.Lock()
	for _, r := range slices.Concat(m.rooms, m.unloaded) {
		if r.storeTimer != nil {
			m.log.Info("pending state write lost (shutdown)", logRoom, r.st.Name)
		}
	}
	m.mu.Unlock()
	m.Close()
	return ctx.Err()
}

// stop ends everything at once without waiting: the common part of Close
// and a crash.
func (m *Monolith) stop() {
	m.stopOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		links := append([]*link(nil), m.links...)
		for _, r := range m.rooms {
			r.stopTimers()
		}
		for _, r := range m.unloaded {
			r.stopTimers()
		}
		m.unloaded = nil
		m.mu.Unlock()
		m.cancel()
		m.httpSrv.Close()
		m.balSrv.Close()
		for _, l := range links {
			l.kill()
		}
	})
}

// crash is what an unhandled rejection does to the real monolith: the
// process is gone. Called with m.mu held.
func (m *Monolith) crashLocked(room string) {
	m.log.Error("unload of a room that is not loaded: crashing", logRoom, room)
	m.crashed = true
	m.goLocked(m.stop) // stop takes m.mu
	m.closed = true    // nothing else happens from now on
}

// Crashed reports whether the monolith crashed (an unload of a room it had
// not loaded).
func (m *Monolith) Crashed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.crashed
}

// goLocked runs f in a goroutine that Close waits for, unless the monolith
// is stopped. m.mu must be held.
func (m *Monolith) goLocked(f func()) {
	if m.closed {
		return
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
}

// enter registers a goroutine that Close waits for; false if the monolith
// is stopped. The caller calls m.wg.Done when enter returned true.
func (m *Monolith) enter() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	return true
}

// afterFunc is time.AfterFunc with f waited for by Close and skipped once
// the monolith is stopped.
func (m *Monolith) afterFunc(d time.Duration, f func()) *time.Timer {
	return time.AfterFunc(d, func() {
		if !m.enter() {
			return
		}
		defer m.wg.Done()
		f()
	})
}

// tracked makes Close wait for h's running handlers and refuses requests
// once the monolith is stopped.
func (m *Monolith) tracked(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !m.enter() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		defer m.wg.Done()
		h.ServeHTTP(w, r)
	})
}

// every calls f every d until the monolith stops.
func (m *Monolith) every(d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			f()
		case <-m.ctx.Done():
			return
		}
	}
}

// send queues one message on a link and counts it. m.mu must be held.
func (m *Monolith) sendLocked(l *link, t ott.Type, frame []byte) {
	if l.enqueue(frame) {
		m.sent[t.String()]++
	}
}

// sendAllLocked sends a message to every initialised link. m.mu must be
// held.
func (m *Monolith) sendAllLocked(t ott.Type, frame []byte) {
	for _, l := range m.links {
		if l.initialised {
			m.sendLocked(l, t, frame)
		}
	}
}

// Sent returns how many messages of the type ("room_msg", "kick", ...) the
// monolith has queued on balancer links.
func (m *Monolith) Sent(typ string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sent[typ]
}

// Received returns how many frames of the type ("join", ...) the monolith
// has received, including ones dropped before the balancer's init;
// "invalid" counts frames that failed validation.
func (m *Monolith) Received(typ string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.received[typ]
}

// RoomInfo describes one loaded room name in Rooms.
type RoomInfo struct {
	Name      string  // canonical name of the first instance
	LoadEpoch int64   // of the first instance
	Epochs    []int64 // of every instance, in load order
	Clients   int     // joined clients over all instances
	Instances int     // more than 1 after a duplicate load (§8 item 4)
}

// Rooms returns the loaded rooms, one entry per case-insensitive name, in
// load order of their first instance.
func (m *Monolith) Rooms() []RoomInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []RoomInfo
	index := make(map[string]int)
	for _, r := range m.rooms {
		key := lower(r.st.Name)
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, RoomInfo{Name: r.st.Name, LoadEpoch: r.loadEpoch})
		}
		out[i].Epochs = append(out[i].Epochs, r.loadEpoch)
		out[i].Clients += len(r.members)
		out[i].Instances++
	}
	return out
}

// State returns the current in-memory state of the loaded room (first
// instance, matched case-insensitively): the JSON the monolith writes to
// room:<name>. Nil if the room is not loaded.
func (m *Monolith) State(room string) json.RawMessage {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.findLoadedLocked(room)
	if r == nil {
		return nil
	}
	return r.stateJSON()
}

// Links returns the number of open balancer links, initialised or not.
func (m *Monolith) Links() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.links)
}
