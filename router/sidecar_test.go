package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/internal/redistest"
	"github.com/roomlb/roomlb/registry"
)

const testSecret = "s3cret-for-tests"

// bigChunks of 64 KiB make the body of a ".../big" request.
const bigChunks = 32

// seen is what a fake sidecar recorded of one request.
type seen struct {
	method, path                   string
	secret, epoch, place, xff, xfp string
	ws                             bool
	status                         int
	hdr                            http.Header
}

// fakeSidecar plays a node's sidecar for the router: it checks the secret
// and the epoch against the registry, claims placed rooms, refuses with the
// contract's answers on demand, answers HTTP with "<node> <room> <epoch>"
// and echoes WebSocket frames prefixed with "<node>: ".
type fakeSidecar struct {
	t   testing.TB
	reg *registry.Registry
	ln  net.Listener
	srv *http.Server

	mu    sync.Mutex
	node  registry.Node
	reqs  []seen
	owned map[string]int64 // rooms it claimed, for when Redis is down

	// Knobs.
	moving   atomic.Bool // 503 Moving for every room request
	draining atomic.Bool // 503 Draining for placements
	noHint   atomic.Bool // 421 without X-Roomlb-Owner
	delay    atomic.Int64
	stuck    chan struct{} // see stuckChan

	stopBeat chan struct{}
	beatDone chan struct{}
}

func newSidecar(t testing.TB, reg *registry.Registry, n registry.Node) *fakeSidecar {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.Addr = ln.Addr().String()
	if n.State == "" {
		n.State = registry.StateActive
	}
	f := &fakeSidecar{t: t, reg: reg, ln: ln, node: n, owned: map[string]int64{},
		stopBeat: make(chan struct{}), beatDone: make(chan struct{})}
	f.srv = &http.Server{Handler: f, ReadHeaderTimeout: 5 * time.Second}
	go f.srv.Serve(ln)
	f.beat()
	go f.beatLoop()
	t.Cleanup(f.stop)
	return f
}

const beatTTL = 600 * time.Millisecond

func (f *fakeSidecar) beat() {
	f.mu.Lock()
	n := f.node
	f.mu.Unlock()
	n.Session = "" // a new key gets a new session, as a sidecar's does
	b, err := f.reg.Beat(context.Background(), n, beatTTL)
	if err != nil {
		f.t.Logf("heartbeat %s: %v", n.ID, err)
		return
	}
	f.mu.Lock()
	f.node.Session = b.Session
	f.mu.Unlock()
}

// session is the session of the node's heartbeat key.
func (f *fakeSidecar) session() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.node.Session
}

func (f *fakeSidecar) beatLoop() {
	defer close(f.beatDone)
	t := time.NewTicker(beatTTL / 4)
	defer t.Stop()
	for {
		select {
		case <-f.stopBeat:
			return
		case <-t.C:
			f.beat()
		}
	}
}

// update changes the node's registry entry and heartbeats it at once.
func (f *fakeSidecar) update(fn func(*registry.Node)) {
	f.mu.Lock()
	fn(&f.node)
	f.mu.Unlock()
	f.beat()
}

// crash stops the sidecar like a SIGKILL: no more heartbeats, connections
// refused. Its heartbeat key expires after beatTTL.
func (f *fakeSidecar) crash() {
	select {
	case <-f.stopBeat:
	default:
		close(f.stopBeat)
	}
	<-f.beatDone
	f.srv.Close()
}

func (f *fakeSidecar) stop() { f.crash() }

func (f *fakeSidecar) id() string { return f.node.ID }

func (f *fakeSidecar) own(room string, epoch int64) {
	f.mu.Lock()
	f.owned[room] = epoch
	f.mu.Unlock()
}

func (f *fakeSidecar) seen() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.reqs...)
}

func (f *fakeSidecar) last() seen {
	f.t.Helper()
	s := f.seen()
	if len(s) == 0 {
		f.t.Fatalf("sidecar %s saw no request", f.id())
	}
	return s[len(s)-1]
}

func (f *fakeSidecar) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	s := seen{
		method: req.Method,
		path:   req.URL.Path,
		secret: req.Header.Get(contract.HeaderSecret),
		epoch:  req.Header.Get(contract.HeaderEpoch),
		place:  req.Header.Get(contract.HeaderPlace),
		xff:    strings.Join(req.Header.Values(headerXFF), "|"),
		xfp:    req.Header.Get(headerXFP),
		ws:     websocket.IsWebSocketUpgrade(req),
		hdr:    req.Header.Clone(),
	}
	f.mu.Lock()
	i := len(f.reqs)
	f.reqs = append(f.reqs, s)
	f.mu.Unlock()
	status := f.serve(w, req, s)
	f.mu.Lock()
	f.reqs[i].status = status
	f.mu.Unlock()
}

func (f *fakeSidecar) serve(w http.ResponseWriter, req *http.Request, s seen) int {
	id := f.id()
	if s.secret != testSecret {
		http.Error(w, "bad secret", http.StatusForbidden)
		return http.StatusForbidden
	}
	if d := time.Duration(f.delay.Load()); d > 0 {
		time.Sleep(d)
	}
	rest, isRoom := strings.CutPrefix(strings.ToLower(req.URL.Path), "/api/room/")
	room, _, _ := strings.Cut(rest, "/")
	if !isRoom || room == "list" {
		fmt.Fprintf(w, "%s other", id)
		return http.StatusOK
	}
	if room == "generate" || room == "create" {
		if s.place != "1" {
			http.Error(w, "placement without X-Roomlb-Place", http.StatusBadRequest)
			return http.StatusBadRequest
		}
		if f.draining.Load() {
			return refuse(w, contract.HeaderDraining)
		}
		fmt.Fprintf(w, "%s %s", id, room)
		return http.StatusOK
	}
	if f.moving.Load() {
		return refuse(w, contract.HeaderMoving)
	}
	ctx, cancel := context.WithTimeout(req.Context(), 300*time.Millisecond)
	defer cancel()
	var epoch int64
	switch {
	case s.epoch != "":
		e, err := strconv.ParseInt(s.epoch, 10, 64)
		o, oerr := f.reg.Owner(ctx, room)
		var oe *registry.OwnerError
		if oerr != nil && !errors.As(oerr, &oe) {
			// Redis is down: a sidecar keeps serving what it holds.
			f.mu.Lock()
			o = registry.Owner{Node: id, Epoch: f.owned[room]}
			f.mu.Unlock()
			oerr = nil
		}
		if err != nil || oerr != nil || o.Node != id || o.Epoch != e {
			return f.misdirect(w, o)
		}
		epoch = e
	case s.place == "1":
		if f.draining.Load() {
			return refuse(w, contract.HeaderDraining)
		}
		l, err := f.reg.Claim(ctx, room, id, f.session())
		var oe *registry.OwnerError
		switch {
		case err == nil:
			epoch = l.Epoch
			f.own(room, epoch)
		case errors.As(err, &oe) && oe.Owner.Node == id:
			epoch = oe.Owner.Epoch // a second placement of a room we claimed
		case errors.As(err, &oe):
			return f.misdirect(w, oe.Owner)
		default:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return http.StatusInternalServerError
		}
	default:
		http.Error(w, "room request without epoch or placement", http.StatusBadRequest)
		return http.StatusBadRequest
	}
	if s.ws {
		switch {
		case strings.HasSuffix(req.URL.Path, "/flood"):
			f.flood(w, req)
		case strings.HasSuffix(req.URL.Path, "/deaf"):
			f.deaf(w, req)
		default:
			f.echo(w, req, fmt.Sprintf("%s: ", id))
		}
		return http.StatusSwitchingProtocols
	}
	w.Header().Set("X-Test-Node", id)
	if strings.HasSuffix(req.URL.Path, "/body") {
		b, _ := io.ReadAll(req.Body) // all of it before answering (HTTP/1.x)
		w.Write(b)
		return http.StatusOK
	}
	if strings.HasSuffix(req.URL.Path, "/big") {
		// A body larger than any buffer, streamed in chunks.
		chunk := []byte(strings.Repeat("0123456789abcdef", 4096))
		for range bigChunks {
			w.Write(chunk)
		}
		return http.StatusOK
	}
	fmt.Fprintf(w, "%s %s %d", id, room, epoch)
	return http.StatusOK
}

func refuse(w http.ResponseWriter, header string) int {
	w.Header().Set(header, "1")
	w.Header().Set("Retry-After", "1")
	http.Error(w, "refused", http.StatusServiceUnavailable)
	return http.StatusServiceUnavailable
}

func (f *fakeSidecar) misdirect(w http.ResponseWriter, o registry.Owner) int {
	if o.Node != "" && !f.noHint.Load() {
		w.Header().Set(contract.HeaderOwner, fmt.Sprintf("%s:%d", o.Node, o.Epoch))
	}
	http.Error(w, "misdirected", http.StatusMisdirectedRequest)
	return http.StatusMisdirectedRequest
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (f *fakeSidecar) echo(w http.ResponseWriter, req *http.Request, prefix string) {
	conn, err := upgrader.Upgrade(w, req, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	for {
		typ, msg, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if err := conn.WriteMessage(typ, append([]byte(prefix), msg...)); err != nil {
			return
		}
	}
}

// stuck is closed when a flooding WebSocket's write has been blocked for
// 200ms (its reader does not read) or a deaf one has been upgraded.
func (f *fakeSidecar) stuckChan() chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stuck == nil {
		f.stuck = make(chan struct{})
	}
	return f.stuck
}

func (f *fakeSidecar) setStuck() {
	ch := f.stuckChan()
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// flood writes 64 KiB frames to the client until a write is blocked for
// 200ms, then holds the connection open without reading until the sidecar
// stops.
func (f *fakeSidecar) flood(w http.ResponseWriter, req *http.Request) {
	conn, err := upgrader.Upgrade(w, req, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	chunk := make([]byte, 64<<10)
	for {
		conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if err := conn.WriteMessage(websocket.BinaryMessage, chunk); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				f.setStuck()
			}
			break
		}
	}
	<-f.stopBeat
}

// deaf never reads from the client, until the sidecar stops.
func (f *fakeSidecar) deaf(w http.ResponseWriter, req *http.Request) {
	conn, err := upgrader.Upgrade(w, req, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	f.setStuck()
	<-f.stopBeat
}

// roundTrips records the commands a Redis client sends: one round trip per
// command or pipeline.
type roundTrips struct {
	mu   sync.Mutex
	n    int
	cmds []string
}

func (c *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.record(cmd)
		return next(ctx, cmd)
	}
}
func (c *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.record(cmds...)
		return next(ctx, cmds)
	}
}

func (c *roundTrips) record(cmds ...redis.Cmder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	for _, cmd := range cmds {
		c.cmds = append(c.cmds, fmt.Sprint(cmd.Args()...))
	}
}

// since returns the round trips and commands after mark (from mark()).
func (c *roundTrips) mark() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, len(c.cmds)
}

func (c *roundTrips) since(n, i int) (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n - n, append([]string(nil), c.cmds[i:]...)
}

// cluster is a router in front of fake sidecars, all on one real Redis.
type cluster struct {
	t      *testing.T
	redis  *redistest.Server
	reg    *registry.Registry // the tests' own, not counted
	r      *Router
	addr   string // the router's client address
	admin  string
	trips  *roundTrips // the router's Redis commands
	served chan error

	blockEvents atomic.Bool
	events      chan registry.Event

	mu       sync.Mutex
	sidecars map[string]*fakeSidecar // by node id, those c.node started
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newCluster starts Redis and a router configured by cfg (Registry, Secret
// and Logger are filled in; short test timeouts unless set).
func newCluster(t *testing.T, cfg Config) *cluster {
	t.Helper()
	srv := redistest.New(t)
	c := &cluster{t: t, redis: srv, trips: &roundTrips{}, served: make(chan error, 1), events: make(chan registry.Event, 256)}
	var err error
	if c.reg, err = registry.New(srv.Client(), registry.Config{Logger: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	// A new Redis: no recovery window before the first claims.
	if err := c.reg.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	rc := srv.Client()
	rc.AddHook(c.trips)
	if cfg.Registry, err = registry.New(rc, registry.Config{Logger: testLogger(t), RecoveryWindow: beatTTL}); err != nil {
		t.Fatal(err)
	}
	cfg.Secret = testSecret
	cfg.Logger = testLogger(t)
	if cfg.HoldTimeout == 0 {
		cfg.HoldTimeout = 2 * time.Second
	}
	if cfg.NodeRefresh == 0 {
		cfg.NodeRefresh = 100 * time.Millisecond
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 2 * time.Second
	}
	c.r, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.r.eventFilter = func(registry.Event) bool { return !c.blockEvents.Load() }
	c.r.eventApplied = func(e registry.Event) {
		select {
		case c.events <- e:
		default:
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adm, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr, c.admin = ln.Addr().String(), adm.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { c.served <- c.r.Serve(ctx, ln, adm) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-c.served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	c.waitEvent(registry.EventResync)
	return c
}

// waitEvent waits for the router to apply an event of kind.
func (c *cluster) waitEvent(kind registry.EventKind) registry.Event {
	c.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e := <-c.events:
			if e.Kind == kind {
				return e
			}
		case <-deadline:
			c.t.Fatalf("router saw no %s event within 5s", kind)
		}
	}
}

// node starts a fake sidecar and waits until the router knows it.
func (c *cluster) node(n registry.Node) *fakeSidecar {
	c.t.Helper()
	f := newSidecar(c.t, c.reg, n)
	c.mu.Lock()
	if c.sidecars == nil {
		c.sidecars = map[string]*fakeSidecar{}
	}
	c.sidecars[n.ID] = f
	c.mu.Unlock()
	c.waitNodes(func(s *nodeSet) bool {
		got, ok := s.byID[n.ID]
		return ok && got.State == f.node.State
	})
	return f
}

// sidecar is the fake sidecar of node id that c.node started.
func (c *cluster) sidecar(id string) *fakeSidecar {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.sidecars[id]
	if f == nil {
		c.t.Fatalf("no sidecar %s", id)
	}
	return f
}

// waitNodes waits until the router's node set satisfies ok.
func (c *cluster) waitNodes(ok func(*nodeSet) bool) {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok(c.r.nodes.load()) {
		if time.Now().After(deadline) {
			c.t.Fatal("the router's node list did not change as expected within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// claim makes node own room.
func (c *cluster) claim(room string, f *fakeSidecar) registry.Lease {
	c.t.Helper()
	l, err := c.reg.Claim(context.Background(), room, f.id(), f.session())
	if err != nil {
		c.t.Fatal(err)
	}
	f.own(l.Room, l.Epoch)
	return l
}

func (c *cluster) url(path string) string { return "http://" + c.addr + path }

// get sends a request through the router and returns status and body.
func (c *cluster) get(path string, hdr http.Header) (int, string, http.Header) {
	c.t.Helper()
	return c.do(http.MethodGet, path, hdr, "")
}

var testClient = &http.Client{Timeout: 10 * time.Second}

func (c *cluster) do(method, path string, hdr http.Header, body string) (int, string, http.Header) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.url(path), rd)
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := testClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// dial opens a WebSocket through the router.
func (c *cluster) dial(path string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	return d.Dial("ws://"+c.addr+path, hdr)
}

// echo sends msg on ws and returns the answer.
func echo(t testing.TB, ws *websocket.Conn, msg string) string {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	_, got, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(got)
}

// redisClientStub is a client of no server, for tests that never reach
// Redis.
func redisClientStub() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
}
