package router

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/registry"
)

// metric reads one sample from the router's /metrics, e.g.
// `roomlb_router_retries_total{reason="moving"}`; 0 when absent.
func (c *cluster) metric(sample string) float64 {
	c.t.Helper()
	resp, err := http.Get("http://" + c.admin + "/metrics")
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				c.t.Fatalf("metric %s: %v", sample, err)
			}
			return f
		}
	}
	return 0
}

func wantStatus(t testing.TB, what string, got, want int, body string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: status %d (%q), want %d", what, got, body, want)
	}
}

func TestOwnedRoom(t *testing.T) {
	c := newCluster(t, Config{})
	a := c.node(registry.Node{ID: "node-a"})
	b := c.node(registry.Node{ID: "node-b"})
	la := c.claim("Lobby", a)
	lb := c.claim("stage", b)

	status, body, hdr := c.get("/api/room/LOBBY/queue?x=1", nil)
	wantStatus(t, "GET lobby", status, 200, body)
	if want := fmt.Sprintf("node-a lobby %d", la.Epoch); body != want {
		t.Errorf("body %q, want %q", body, want)
	}
	s := a.last()
	if s.secret != testSecret || s.epoch != strconv.FormatInt(la.Epoch, 10) || s.place != "" || s.path != "/api/room/LOBBY/queue" {
		t.Errorf("sidecar saw %+v, want the secret, epoch %d, no placement, the path as sent", s, la.Epoch)
	}
	if hdr.Get("X-Test-Node") != "node-a" {
		t.Errorf("response headers %v lack the sidecar's X-Test-Node", hdr)
	}

	status, body, _ = c.get("/api/room/stage", nil)
	if want := fmt.Sprintf("node-b stage %d", lb.Epoch); status != 200 || body != want {
		t.Errorf("GET stage = %d %q, want %q", status, body, want)
	}

	// A request body goes through; so does a large response body, streamed.
	payload := strings.Repeat("payload ", 10000)
	status, body, _ = c.do(http.MethodPost, "/api/room/lobby/body", http.Header{"Content-Type": {"text/plain"}}, payload)
	if status != 200 || body != payload {
		t.Errorf("POST body = %d with %d bytes, want the %d bytes sent", status, len(body), len(payload))
	}
	status, body, _ = c.get("/api/room/lobby/big", nil)
	if status != 200 || len(body) != bigChunks*64<<10 {
		t.Errorf("GET big = %d with %d bytes, want %d bytes", status, len(body), bigChunks*64<<10)
	}

	ws, resp, err := c.dial("/api/room/Lobby?reconnect=true", nil)
	if err != nil {
		t.Fatalf("WebSocket: %v (%v)", err, resp)
	}
	defer ws.Close()
	for i := range 3 {
		if got, want := echo(t, ws, fmt.Sprint("hi ", i)), fmt.Sprint("node-a: hi ", i); got != want {
			t.Fatalf("echo = %q, want %q", got, want)
		}
	}
	s = a.last()
	if !s.ws || s.secret != testSecret || s.epoch != strconv.FormatInt(la.Epoch, 10) || s.place != "" {
		t.Errorf("sidecar saw WebSocket handshake %+v, want the secret and epoch %d", s, la.Epoch)
	}
	if got := c.metric(`roomlb_router_connections{kind="ws"}`); got != 1 {
		t.Errorf("ws connections gauge = %v, want 1", got)
	}
}

func TestForwardedHeaders(t *testing.T) {
	spoof := http.Header{
		"X-Forwarded-For":   {"203.0.113.7"},
		"X-Forwarded-Proto": {"https"},
		"X-Roomlb-Secret":   {"guess"},
		"X-Roomlb-Place":    {"1"},
		"X-Roomlb-Epoch":    {"999999999999999999"},
		"Connection":        {"X-Hop"},
		"X-Hop":             {"1"},
		"Proxy-Foo":         {"1"},
		"X-End-To-End":      {"kept"},
		"Forwarded":         {"for=203.0.113.7;proto=https"},
		"X-Real-Ip":         {"203.0.113.7"},
		"X-Forwarded-Host":  {"evil.example"},
	}
	cases := []struct {
		name     string
		trusted  []string
		hdr      http.Header
		xff, xfp string
	}{
		{"untrusted peer spoofs", []string{"10.0.0.0/8"}, spoof, "127.0.0.1", "http"},
		{"untrusted peer, no headers", nil, nil, "127.0.0.1", "http"},
		{"trusted proxy", []string{"127.0.0.0/8"}, spoof, "203.0.113.7, 127.0.0.1", "https"},
		{"trusted proxy, no headers", []string{"127.0.0.1"}, nil, "127.0.0.1", "http"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, Config{TrustedProxies: tc.trusted})
			a := c.node(registry.Node{ID: "node-a"})
			l := c.claim("room", a)
			check := func(kind string) {
				t.Helper()
				s := a.last()
				if s.xff != tc.xff || s.xfp != tc.xfp {
					t.Errorf("%s: sidecar saw X-Forwarded-For %q, -Proto %q; want %q, %q", kind, s.xff, s.xfp, tc.xff, tc.xfp)
				}
				if s.secret != testSecret || s.place != "" || s.epoch != strconv.FormatInt(l.Epoch, 10) {
					t.Errorf("%s: client's X-Roomlb-* headers got through: %+v", kind, s)
				}
				if tc.hdr != nil && (s.hdr.Get("X-Hop") != "" || s.hdr.Get("Proxy-Foo") != "" || s.hdr.Get("X-End-To-End") != "kept") {
					t.Errorf("%s: hop-by-hop handling wrong: sidecar saw %v", kind, s.hdr)
				}
				for _, h := range []string{"Forwarded", "X-Real-Ip", "X-Forwarded-Host"} {
					if v := s.hdr.Get(h); v != "" {
						t.Errorf("%s: the client's %s: %q reached the sidecar", kind, h, v)
					}
				}
			}
			status, body, _ := c.get("/api/room/room", tc.hdr)
			wantStatus(t, "GET", status, 200, body)
			check("HTTP")
			hdr := tc.hdr.Clone()
			if hdr != nil {
				hdr.Del("Connection") // the dialer sets its own
				hdr.Del("X-Hop")
			}
			ws, _, err := c.dial("/api/room/room", hdr)
			if err != nil {
				t.Fatal(err)
			}
			ws.Close()
			check("WebSocket")
		})
	}
}

func TestCacheHitNoRedis(t *testing.T) {
	c := newCluster(t, Config{NodeRefresh: time.Hour})
	a := c.node(registry.Node{ID: "node-a"})
	c.claim("hot", a)
	c.waitEvent(registry.EventClaim) // the claim event fills the cache

	n, i := c.trips.mark()
	for range 50 {
		status, body, _ := c.get("/api/room/hot", nil)
		wantStatus(t, "GET hot", status, 200, body)
	}
	for range 5 {
		ws, _, err := c.dial("/api/room/HOT", nil)
		if err != nil {
			t.Fatal(err)
		}
		echo(t, ws, "x")
		ws.Close()
	}
	if trips, cmds := c.trips.since(n, i); trips != 0 {
		t.Errorf("55 requests of a cached room made %d Redis round trips, want 0: %q", trips, cmds)
	}

	// A miss costs one round trip, then the room is cached.
	c.blockEvents.Store(true)
	c.claim("cold", a)
	n, i = c.trips.mark()
	for range 20 {
		status, body, _ := c.get("/api/room/cold", nil)
		wantStatus(t, "GET cold", status, 200, body)
	}
	if trips, cmds := c.trips.since(n, i); trips != 1 {
		t.Errorf("20 requests of an uncached room made %d Redis round trips, want 1: %q", trips, cmds)
	}
	if hits, misses := c.metric(`roomlb_router_lookups_total{source="cache"}`), c.metric(`roomlb_router_lookups_total{source="redis"}`); hits != 74 || misses != 1 {
		t.Errorf("lookups: %v from cache, %v from redis; want 74 and 1", hits, misses)
	}
}

func TestStaleCache(t *testing.T) {
	c := newCluster(t, Config{})
	a := c.node(registry.Node{ID: "node-a"})
	b := c.node(registry.Node{ID: "node-b"})
	l := c.claim("film", a)
	c.waitEvent(registry.EventClaim)
	if status, body, _ := c.get("/api/room/film", nil); !strings.HasPrefix(body, "node-a ") {
		t.Fatalf("before the move: %d %q", status, body)
	}

	ctx := context.Background()
	c.blockEvents.Store(true) // the router keeps believing node-a owns the room
	cases := []struct {
		name   string
		noHint bool
		ws     bool
	}{
		{"421 naming the owner", false, false},
		{"421 without owner", true, false},
		{"WebSocket, 421 naming the owner", false, true},
		{"WebSocket, 421 without owner", true, true},
	}
	from, to := a, b
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if l, err = c.reg.Transfer(ctx, l, to.id(), to.session()); err != nil {
				t.Fatal(err)
			}
			from.noHint.Store(tc.noHint)
			if tc.ws {
				ws, _, err := c.dial("/api/room/film", nil)
				if err != nil {
					t.Fatal(err)
				}
				defer ws.Close()
				if got, want := echo(t, ws, "hello"), to.id()+": hello"; got != want {
					t.Fatalf("echo %q, want %q", got, want)
				}
			} else {
				status, body, _ := c.get("/api/room/film", nil)
				if want := fmt.Sprintf("%s film %d", to.id(), l.Epoch); status != 200 || body != want {
					t.Fatalf("after the move: %d %q, want %q", status, body, want)
				}
			}
			if s := from.last(); s.status != http.StatusMisdirectedRequest {
				t.Fatalf("old owner answered %d, want 421", s.status)
			}
			from, to = to, from
		})
	}
	if got := c.metric(`roomlb_router_retries_total{reason="misdirected"}`); got != 4 {
		t.Errorf("misdirected retries = %v, want 4", got)
	}
}

func TestMovingHolds(t *testing.T) {
	c := newCluster(t, Config{HoldTimeout: 3 * time.Second})
	a := c.node(registry.Node{ID: "node-a"})
	b := c.node(registry.Node{ID: "node-b"})
	ctx := context.Background()

	for _, ws := range []bool{false, true} {
		room := fmt.Sprintf("show-%v", ws)
		l := c.claim(room, a)
		a.moving.Store(true)
		go func() {
			time.Sleep(300 * time.Millisecond)
			if _, err := c.reg.Transfer(ctx, l, b.id(), b.session()); err != nil {
				t.Error(err)
			}
		}()
		// Held until the move: only node-b, the room's owner after it,
		// can answer.
		if ws {
			conn, _, err := c.dial("/api/room/"+room, nil)
			if err != nil {
				t.Fatalf("WebSocket held through a move: %v", err)
			}
			if got := echo(t, conn, "x"); got != "node-b: x" {
				t.Errorf("echo %q, want node-b's", got)
			}
			conn.Close()
		} else {
			status, body, _ := c.get("/api/room/"+room, nil)
			if status != 200 || !strings.HasPrefix(body, "node-b ") {
				t.Fatalf("held request: %d %q, want node-b's answer", status, body)
			}
		}
		a.moving.Store(false)
	}
	if got := c.metric("roomlb_router_hold_seconds_count"); got != 2 {
		t.Errorf("hold_seconds count = %v, want 2", got)
	}

	// A move that does not finish: 503 with Retry-After at HoldTimeout.
	c.claim("stuck", a)
	a.moving.Store(true)
	start := time.Now()
	status, body, hdr := c.get("/api/room/stuck", nil)
	wantStatus(t, "stuck room", status, 503, body)
	if hdr.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if d := time.Since(start); d < 3*time.Second {
		t.Errorf("gave up after %v, want to hold for HoldTimeout (3s) first", d)
	}
}

func TestStealFromDeadOwner(t *testing.T) {
	c := newCluster(t, Config{HoldTimeout: 3 * time.Second})
	a := c.node(registry.Node{ID: "node-a"})
	b := c.node(registry.Node{ID: "node-b"})
	ctx := context.Background()
	la := c.claim("arena", a)
	lc := c.claim("court", a)
	c.get("/api/room/arena", nil) // cached: node-a owns it

	// Connections refused while node-a's heartbeat still runs out: the
	// router holds, then steals.
	a.crash()
	start := time.Now()
	status, body, _ := c.get("/api/room/arena", nil)
	if status != 200 || !strings.HasPrefix(body, "node-b arena ") {
		t.Fatalf("after node-a died: %d %q, want node-b's answer", status, body)
	}
	t.Logf("served elsewhere %v after the crash (heartbeat TTL %v)", time.Since(start), beatTTL)
	o, err := c.reg.Owner(ctx, "arena")
	if err != nil || o.Node != "node-b" || o.Epoch <= la.Epoch {
		t.Fatalf("owner after the steal: %+v, %v; want node-b above epoch %d", o, err, la.Epoch)
	}
	if s := b.last(); s.place != "1" || s.epoch != strconv.FormatInt(o.Epoch, 10) {
		t.Errorf("node-b saw %+v, want X-Roomlb-Place 1 and the stolen epoch %d", s, o.Epoch)
	}

	// With the heartbeat gone, a room of the dead node moves at once.
	if alive, _ := c.reg.Alive(ctx, "node-a"); alive {
		t.Fatal("node-a still alive")
	}
	held := c.metric("roomlb_router_hold_seconds_count")
	ws, _, err := c.dial("/api/room/court", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if got := echo(t, ws, "x"); got != "node-b: x" {
		t.Errorf("echo %q, want node-b's", got)
	}
	if got := c.metric("roomlb_router_hold_seconds_count"); got != held {
		t.Errorf("the dead node's room was held (hold_seconds count %v, was %v), want it taken at once", got, held)
	}
	if o, _ := c.reg.Owner(ctx, "court"); o.Node != "node-b" || o.Epoch <= lc.Epoch {
		t.Errorf("court owner %+v, want node-b above %d", o, lc.Epoch)
	}
	if got := c.metric("roomlb_router_steals_total"); got != 2 {
		t.Errorf("steals_total = %v, want 2", got)
	}
}

// TestPostAfterOwnerCrash: a POST right after the room's owner crashed,
// with keep-alive connections to it still in the router's pool, is not lost
// to a 502: the closed connections are noticed before the request goes out,
// a fresh dial is refused, and the room moves to a live node once the dead
// owner's heartbeat is gone.
func TestPostAfterOwnerCrash(t *testing.T) {
	c := newCluster(t, Config{HoldTimeout: 5 * time.Second})
	a := c.node(registry.Node{ID: "node-a"})
	c.node(registry.Node{ID: "node-b"})
	c.claim("stage", a)
	// Several connections to node-a at once, so that more than one is pooled.
	a.delay.Store(int64(50 * time.Millisecond))
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.get("/api/room/stage", nil)
		}()
	}
	wg.Wait()
	a.delay.Store(0)

	a.crash()
	for i := range 3 {
		status, body, hdr := c.do(http.MethodPost, "/api/room/stage/body", nil, fmt.Sprint("payload ", i))
		if status != 200 || body != fmt.Sprint("payload ", i) || hdr.Get("X-Test-Node") != "node-b" {
			t.Fatalf("POST %d after node-a crashed: %d %q from %q, want node-b's echo", i, status, body, hdr.Get("X-Test-Node"))
		}
	}
	for _, s := range a.seen() {
		if s.method == http.MethodPost {
			t.Errorf("node-a saw a POST: %+v", s)
		}
	}
}

func TestPlacement(t *testing.T) {
	c := newCluster(t, Config{Region: "eu", HoldTimeout: 300 * time.Millisecond})
	busy := c.node(registry.Node{ID: "eu-busy", Region: "eu", Load: 0.5})
	idle := c.node(registry.Node{ID: "eu-idle", Region: "eu", Load: 0.1})
	c.node(registry.Node{ID: "eu-draining", Region: "eu", State: registry.StateDraining})
	c.node(registry.Node{ID: "eu-full", Region: "eu", Capacity: 10, Clients: 10})
	us := c.node(registry.Node{ID: "us", Region: "us"})

	place := func(room string) string {
		t.Helper()
		status, body, _ := c.get("/api/room/"+room, nil)
		wantStatus(t, "GET "+room, status, 200, body)
		node, _, _ := strings.Cut(body, " ")
		return node
	}
	// Two eligible nodes in the region: the power of two choices always
	// draws both and takes the less loaded.
	for i := range 20 {
		if got := place(fmt.Sprint("new-", i)); got != "eu-idle" {
			t.Fatalf("room %d placed on %s, want eu-idle", i, got)
		}
	}
	if s := idle.last(); s.place != "1" || s.epoch != "" {
		t.Errorf("placement carried Place %q, Epoch %q; want 1 and none", s.place, s.epoch)
	}
	// The placed room is owned now: the next request routes by epoch.
	c.waitEvent(registry.EventClaim)
	place("new-0")
	if s := idle.last(); s.place != "" || s.epoch == "" {
		t.Errorf("request of a placed room carried Place %q, Epoch %q; want none and the epoch", s.place, s.epoch)
	}

	// A sidecar that answers 503 Draining is skipped.
	idle.draining.Store(true)
	if got := place("new-x"); got != "eu-busy" {
		t.Errorf("with eu-idle refusing placements, placed on %s, want eu-busy", got)
	}
	idle.draining.Store(false)

	// Nothing left in the region: another region.
	idle.update(func(n *registry.Node) { n.State = registry.StateDraining })
	busy.update(func(n *registry.Node) { n.Clients, n.Capacity = 7, 7 })
	c.waitNodes(func(s *nodeSet) bool {
		return s.byID["eu-idle"].State == registry.StateDraining && s.byID["eu-busy"].full()
	})
	if got := place("far"); got != "us" {
		t.Errorf("placed on %s, want us", got)
	}

	// Nothing at all: 503 with Retry-After after HoldTimeout.
	us.update(func(n *registry.Node) { n.State = registry.StateDraining })
	c.waitNodes(func(s *nodeSet) bool { return s.byID["us"].State == registry.StateDraining })
	status, body, hdr := c.get("/api/room/nowhere", nil)
	wantStatus(t, "no node", status, 503, body)
	if hdr.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if got := c.metric(`roomlb_router_retries_total{reason="draining"}`); got != 1 {
		t.Errorf("draining retries = %v, want 1", got)
	}
}

func TestNoNode(t *testing.T) {
	c := newCluster(t, Config{HoldTimeout: 500 * time.Millisecond, MaxWaiting: 1})
	start := time.Now()
	status, body, hdr := c.get("/api/room/lonely", nil)
	wantStatus(t, "no node", status, 503, body)
	if hdr.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q, want 1", hdr.Get("Retry-After"))
	}
	if d := time.Since(start); d < 450*time.Millisecond {
		t.Errorf("answered after %v, want a wait of HoldTimeout", d)
	}

	// One request waits; the queue (MaxWaiting 1) is full for the next.
	first := make(chan int, 1)
	go func() {
		status, _, _ := c.get("/api/room/first", nil)
		first <- status
	}()
	for c.r.waiting.Load() != 1 {
		time.Sleep(5 * time.Millisecond)
	}
	status, body, _ = c.get("/api/room/second", nil)
	wantStatus(t, "queue full", status, 503, body)
	select {
	case <-first:
		t.Fatal("the waiting request ended before the one beyond MaxWaiting was answered, want that one refused at once")
	default:
	}
	// A node comes up while the first waits: it is served.
	c.node(registry.Node{ID: "late"})
	if got := <-first; got != 200 {
		t.Errorf("waiting request got %d after a node came up, want 200", got)
	}
}

func TestPlaceAndOtherRoutes(t *testing.T) {
	c := newCluster(t, Config{Region: "us"})
	c.node(registry.Node{ID: "eu", Region: "eu"})
	us := c.node(registry.Node{ID: "us", Region: "us", Load: 0.9})
	n, i := c.trips.mark()
	status, body, _ := c.get("/api/status", nil)
	if status != 200 || body != "OK" {
		t.Errorf("/api/status = %d %q, want 200 OK", status, body)
	}
	if trips, cmds := c.trips.since(n, i); trips != 0 {
		t.Errorf("/api/status made %d Redis round trips: %q", trips, cmds)
	}
	for range 5 {
		status, body, _ = c.do(http.MethodPost, "/api/room/generate", nil, "")
		if status != 200 || body != "us generate" {
			t.Fatalf("POST generate = %d %q, want us's answer", status, body)
		}
	}
	if s := us.last(); s.place != "1" || s.epoch != "" {
		t.Errorf("generate carried Place %q, Epoch %q; want 1 and none", s.place, s.epoch)
	}
	status, body, _ = c.get("/api/auth/grant", nil)
	if status != 200 || body != "us other" {
		t.Errorf("GET /api/auth/grant = %d %q, want us's answer", status, body)
	}
	if s := us.last(); s.place != "" || s.epoch != "" || s.secret != testSecret {
		t.Errorf("other request carried %+v, want only the secret", s)
	}
}

func TestRoomList(t *testing.T) {
	c := newCluster(t, Config{ListCacheTTL: 300 * time.Millisecond})
	a := c.node(registry.Node{ID: "node-a"})
	ctx := context.Background()
	for _, m := range []registry.Meta{
		{Name: "Alpha", Visibility: "public", Users: 2, Metadata: []byte(`{"name":"Alpha","users":2}`)},
		{Name: "beta", Visibility: "public", Users: 5, Metadata: []byte(`{"name":"beta","users":5}`)},
		{Name: "gamma", Visibility: "private", Users: 9, Metadata: []byte(`{"name":"gamma","users":9}`)},
		{Name: "Delta", Visibility: "public", Users: 2},
		{Name: "eps", Visibility: "unlisted", Users: 1},
	} {
		l := c.claim(m.Name, a)
		if err := c.reg.WriteMeta(ctx, l, m); err != nil {
			t.Fatal(err)
		}
	}
	c.claim("nometa", a)
	status, body, hdr := c.get("/api/room/list", nil)
	wantStatus(t, "list", status, 200, body)
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("list %q: %v", body, err)
	}
	var names []string
	for _, m := range got {
		names = append(names, fmt.Sprint(m["name"]))
	}
	if fmt.Sprint(names) != "[beta Alpha Delta]" {
		t.Errorf("list = %s, want beta, Alpha, Delta (public only, users desc, then name)", body)
	}

	// A burst after the cache expired costs one SCAN.
	time.Sleep(350 * time.Millisecond)
	n, i := c.trips.mark()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, body, _ := c.get("/api/room/list", nil); status != 200 {
				t.Errorf("list: %d %q", status, body)
			}
		}()
	}
	wg.Wait()
	_, cmds := c.trips.since(n, i)
	scans := 0
	for _, cmd := range cmds {
		if strings.HasPrefix(cmd, "scan") {
			scans++
		}
	}
	if scans != 1 {
		t.Errorf("20 concurrent lists sent %d SCANs, want 1", scans)
	}
}

// raw sends a request as written and reads the answer.
func raw(t testing.TB, addr, req string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestBadInput(t *testing.T) {
	c := newCluster(t, Config{
		NodeRefresh:    time.Hour,
		ReadTimeout:    300 * time.Millisecond,
		MaxHeaderBytes: 4096,
		AllowedOrigins: []string{"https://ok.example"},
	})
	a := c.node(registry.Node{ID: "node-a"})
	c.claim("fine", a)
	c.waitEvent(registry.EventClaim)

	get := func(path string, extra ...string) string {
		return "GET " + path + " HTTP/1.1\r\nHost: x\r\n" + strings.Join(extra, "") + "\r\n"
	}
	upgrade := func(path string, extra ...string) string {
		return get(path, append([]string{
			"Connection: Upgrade\r\n", "Upgrade: websocket\r\n",
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
		}, extra...)...)
	}
	cases := []struct {
		name   string
		req    string
		status int
		body   string // in the answer, if set
	}{
		// Paths the sidecar, which routes on the normalized path, would
		// read as another room or another endpoint.
		{"dot-dot segment", get("/api/room/fine/../other"), 400, "bad path"},
		{"dot-dot to a room", get("/api/room/other/../fine"), 400, "bad path"},
		{"dot segment", get("/api/room/./fine"), 400, "bad path"},
		{"trailing dot-dot", get("/api/room/fine/.."), 400, "bad path"},
		{"empty segment", get("/api/room/fine//queue"), 400, "bad path"},
		{"leading double slash", get("//api/room/fine"), 400, "bad path"},
		{"percent-encoded dots", get("/api/room/fine/%2e%2E/other"), 400, "bad path"},
		{"percent-encoded slash", get("/api/room/fine%2F..%2Fother"), 400, "bad path"},
		{"percent-encoded letter in the prefix", get("/api/r%6Fom/fine"), 400, "bad path"},
		{"percent-encoded letter in the room", get("/api/room/%66ine"), 400, "bad path"},
		{"dot-dot on a WebSocket", upgrade("/api/room/other/../fine", "Sec-WebSocket-Version: 13\r\n"), 400, "bad path"},
		// The sidecar's own endpoints: the router adds the shared secret
		// to what it forwards, so a client must not reach them.
		{"sidecar drain", "POST /admin/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 404, "not found"},
		{"sidecar move", "POST /Admin/move HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 404, "not found"},
		{"sidecar metrics", get("/metrics"), 404, "not found"},
		{"dot in room", get("/api/room/a.b"), 400, "bad room name"},
		{"percent in room", get("/api/room/a%2Fb"), 400, ""},
		{"empty room", get("/api/room/"), 400, ""},
		{"empty room, subpath", get("/api/room//queue"), 400, ""},
		{"unicode room", get("/api/room/caf\xc3\xa9"), 400, ""},
		{"room of 65 bytes", get("/api/room/" + strings.Repeat("a", 65)), 400, ""},
		{"room of 3000 bytes", get("/api/room/" + strings.Repeat("a", 3000)), 400, ""},
		{"path beyond the header limit", get("/api/room/" + strings.Repeat("a", 10000)), 431, ""},
		{"header beyond the limit", get("/api/room/fine", "X-Big: "+strings.Repeat("b", 8000)+"\r\n"), 431, ""},
		{"malformed request line", "GARBAGE\r\n\r\n", 400, ""},
		{"TRACE", "TRACE /api/room/fine HTTP/1.1\r\nHost: x\r\n\r\n", 405, ""},
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, ""},
		{"origin not allowed", upgrade("/api/room/fine", "Sec-WebSocket-Version: 13\r\n", "Origin: https://evil.example\r\n"), 403, ""},
		{"WebSocket version", upgrade("/api/room/fine", "Sec-WebSocket-Version: 8\r\n"), 426, ""},
		{"WebSocket key", get("/api/room/fine", "Connection: Upgrade\r\n", "Upgrade: websocket\r\n", "Sec-WebSocket-Version: 13\r\n", "Sec-WebSocket-Key: short\r\n"), 400, ""},
		{"WebSocket without Connection: Upgrade", get("/api/room/fine", "Upgrade: websocket\r\n", "Sec-WebSocket-Version: 13\r\n", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), 400, ""},
		{"WebSocket to a bad room", upgrade("/api/room/a.b", "Sec-WebSocket-Version: 13\r\n"), 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, i := c.trips.mark()
			before := len(a.seen())
			resp, body := raw(t, c.addr, tc.req)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.body) {
				t.Errorf("status %d (%q), want %d %q", resp.StatusCode, body, tc.status, tc.body)
			}
			if trips, cmds := c.trips.since(n, i); trips != 0 {
				t.Errorf("%d Redis round trips for bad input: %q", trips, cmds)
			}
			if after := len(a.seen()); after != before {
				t.Errorf("bad input reached the sidecar: %+v", a.seen()[before:])
			}
		})
	}

	t.Run("allowed origin", func(t *testing.T) {
		ws, _, err := c.dial("/api/room/fine", http.Header{"Origin": {"https://OK.example"}})
		if err != nil {
			t.Fatal(err)
		}
		ws.Close()
	})

	for _, tc := range []struct {
		name, partial string
	}{
		{"slow header", "GET /api/room/fine HTTP/1.1\r\nHost: x\r\n"},
		{"slow WebSocket handshake", "GET /api/room/fine HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"},
		{"slow body", "POST /api/room/fine HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a little"},
		{"nothing sent", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", c.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			io.WriteString(conn, tc.partial)
			// Ten times ReadTimeout: the close, not its timing, is the
			// outcome.
			conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err = io.Copy(io.Discard, conn) // until the router closes
			if err != nil {
				t.Fatalf("the router did not close a stalled connection: %v", err)
			}
		})
	}
}

func TestShutdown(t *testing.T) {
	c := newCluster(t, Config{})
	a := c.node(registry.Node{ID: "node-a"})
	c.claim("party", a)

	var conns []*websocket.Conn
	for range 3 {
		ws, _, err := c.dial("/api/room/party", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		echo(t, ws, "before")
		conns = append(conns, ws)
	}

	// A slow request is in flight when the shutdown starts.
	a.delay.Store(int64(700 * time.Millisecond))
	inflight := make(chan string, 1)
	go func() {
		status, body, _ := c.get("/api/room/party", nil)
		inflight <- fmt.Sprint(status, " ", body)
	}()
	time.Sleep(100 * time.Millisecond)
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { done <- c.r.Shutdown(ctx) }()

	deadline := time.Now().Add(time.Second)
	for {
		resp, err := http.Get("http://" + c.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 503 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz did not turn 503 during the shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, ws := range conns {
		ws.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, _, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseServiceRestart {
			t.Errorf("WebSocket %d ended with %v, want a close frame 1012", i, err)
		}
	}
	if got := <-inflight; !strings.HasPrefix(got, "200 node-a party") {
		t.Errorf("in-flight request = %q, want node-a's answer", got)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if conn, err := net.DialTimeout("tcp", c.addr, time.Second); err == nil {
		conn.Close()
		t.Error("the router still accepts connections after Shutdown")
	}
	if err := c.r.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

// waitRelays waits until the router relays no WebSocket.
func (c *cluster) waitRelays(t testing.TB, why string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.r.relayCount() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d relays still running after 10s", why, c.r.relayCount())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWSWriteTimeout: a relayed WebSocket whose peer stops reading ends
// after WriteTimeout, in either direction, and frees its relay.
func TestWSWriteTimeout(t *testing.T) {
	c := newCluster(t, Config{WriteTimeout: 300 * time.Millisecond})
	a := c.node(registry.Node{ID: "node-a"})
	c.claim("jam", a)

	t.Run("client does not read", func(t *testing.T) {
		ws, _, err := c.dial("/api/room/jam/flood", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close() // never read
		<-a.stuckChan()
		c.waitRelays(t, "the client stopped reading")
	})

	a.mu.Lock()
	a.stuck = nil
	a.mu.Unlock()
	t.Run("sidecar does not read", func(t *testing.T) {
		ws, _, err := c.dial("/api/room/jam/deaf", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		<-a.stuckChan()
		chunk := make([]byte, 64<<10)
		for {
			ws.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			if err := ws.WriteMessage(websocket.BinaryMessage, chunk); err != nil {
				break // blocked (or the router gave up on the sidecar)
			}
		}
		c.waitRelays(t, "the sidecar stopped reading")
	})
}

// TestShutdownClientNotReading: Shutdown ends within its bound even when a
// relayed client has stopped reading and the router's write to it blocks.
func TestShutdownClientNotReading(t *testing.T) {
	c := newCluster(t, Config{})
	a := c.node(registry.Node{ID: "node-a"})
	c.claim("jam", a)
	ws, _, err := c.dial("/api/room/jam/flood", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close() // never read
	<-a.stuckChan()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.r.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a client that does not read: %v", err)
	}
}

func TestWSIdleTimeout(t *testing.T) {
	c := newCluster(t, Config{WSIdleTimeout: 300 * time.Millisecond})
	a := c.node(registry.Node{ID: "node-a"})
	c.claim("quiet", a)

	chatty, _, err := c.dial("/api/room/quiet", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer chatty.Close()
	silent, _, err := c.dial("/api/room/quiet", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	echo(t, silent, "once")

	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		silent.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := silent.ReadMessage()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Error("silent WebSocket still open after 5s with a 300ms idle timeout")
		}
		closed <- time.Since(start)
	}()
	// The chatty client keeps talking until the silent one is closed, and
	// is still served after.
	var d time.Duration
	for wait := true; wait; {
		if got := echo(t, chatty, "ping"); got != "node-a: ping" {
			t.Fatalf("echo %q", got)
		}
		select {
		case d = <-closed:
			wait = false
		case <-time.After(100 * time.Millisecond):
		}
	}
	if d < 250*time.Millisecond {
		t.Errorf("silent WebSocket closed after %v, before its 300ms idle timeout", d)
	}
	if got := echo(t, chatty, "still"); got != "node-a: still" {
		t.Errorf("chatty client after the silent one closed: echo %q", got)
	}
}

func TestConfig(t *testing.T) {
	reg, err := registry.New(redisClientStub(), registry.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no registry", Config{Secret: "x"}, "Registry is required"},
		{"no secret", Config{Registry: reg}, "Secret is required"},
		{"secret with a newline", Config{Registry: reg, Secret: "a\nb"}, "visible ASCII"},
		{"negative hold", Config{Registry: reg, Secret: "x", HoldTimeout: -1}, "HoldTimeout is negative"},
		{"bad proxy", Config{Registry: reg, Secret: "x", TrustedProxies: []string{"10.0.0.0/33"}}, "TrustedProxies"},
		{"bad origin", Config{Registry: reg, Secret: "x", AllowedOrigins: []string{"example.com"}}, "AllowedOrigins"},
		{"origin with a path", Config{Registry: reg, Secret: "x", AllowedOrigins: []string{"https://example.com/app"}}, "AllowedOrigins"},
		{"tiny header limit", Config{Registry: reg, Secret: "x", MaxHeaderBytes: 10}, "MaxHeaderBytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error about %q", err, tc.want)
			}
		})
	}
	r, err := New(Config{Registry: reg, Secret: "x", TrustedProxies: []string{"10.0.0.1", "::1/128"},
		AllowedOrigins: []string{"https://Example.com:443", "http://localhost:8080"}})
	if err != nil {
		t.Fatalf("New with a good config: %v", err)
	}
	if r.cfg.HoldTimeout != DefaultHoldTimeout || r.cfg.MaxWaiting != DefaultMaxWaiting || r.cfg.Addr != DefaultAddr {
		t.Errorf("defaults not filled in: %+v", r.cfg.Config)
	}
	if !r.originAllowed([]byte("https://example.com")) || !r.originAllowed([]byte("http://LOCALHOST:8080")) || r.originAllowed([]byte("http://localhost")) {
		t.Error("origin matching is wrong")
	}
}

func TestRedisDown(t *testing.T) {
	c := newCluster(t, Config{RedisTimeout: 500 * time.Millisecond})
	a := c.node(registry.Node{ID: "node-a"})
	c.claim("known", a)
	c.waitEvent(registry.EventClaim)
	if status, body, _ := c.get("/api/room/known", nil); status != 200 {
		t.Fatalf("before: %d %q", status, body)
	}

	c.redis.Stop()
	// Rooms the router knows keep working.
	for _, ws := range []bool{false, true} {
		if ws {
			conn, _, err := c.dial("/api/room/known", nil)
			if err != nil {
				t.Fatalf("WebSocket to a known room with Redis down: %v", err)
			}
			echo(t, conn, "x")
			conn.Close()
			continue
		}
		if status, body, _ := c.get("/api/room/known", nil); status != 200 || !strings.HasPrefix(body, "node-a known") {
			t.Errorf("known room with Redis down: %d %q", status, body)
		}
	}
	// Others fail fast with 503 and Retry-After.
	start := time.Now()
	status, body, hdr := c.get("/api/room/unknown", nil)
	wantStatus(t, "unknown room with Redis down", status, 503, body)
	if hdr.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if d := time.Since(start); d >= c.r.cfg.HoldTimeout {
		t.Errorf("took %v to fail, want no hold (HoldTimeout %v)", d, c.r.cfg.HoldTimeout)
	}
	if status, body, _ := c.get("/api/room/list", nil); status != 200 && status != 503 {
		t.Errorf("list with Redis down: %d %q", status, body)
	}
	resp, err := http.Get("http://" + c.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("/readyz with Redis down = %d, want 503", resp.StatusCode)
	}

	// Redis comes back (empty): the router resynchronizes and places again.
	c.redis.Start()
	c.waitEvent(registry.EventResync)
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, body, _ := c.get("/api/room/unknown", nil)
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Redis came back: %d %q", status, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSlowSidecar: a node that accepts connections and never answers costs a
// request UpstreamTimeout, then 504.
func TestSlowSidecar(t *testing.T) {
	c := newCluster(t, Config{UpstreamTimeout: 300 * time.Millisecond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close() // held open, never answered
		}
	}()
	mute, err := c.reg.Beat(context.Background(), registry.Node{ID: "mute", Addr: ln.Addr().String()}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c.waitNodes(func(s *nodeSet) bool { return s.byID["mute"] != nil })
	if _, err := c.reg.Claim(context.Background(), "hush", "mute", mute.Session); err != nil {
		t.Fatal(err)
	}
	for _, ws := range []bool{false, true} {
		var status int
		if ws {
			_, resp, err := c.dial("/api/room/hush", nil)
			if err == nil || resp == nil {
				t.Fatalf("WebSocket to a mute node: %v, %v", err, resp)
			}
			status = resp.StatusCode
		} else {
			status, _, _ = c.get("/api/room/hush", nil)
		}
		if status != http.StatusGatewayTimeout {
			t.Errorf("ws=%v: status %d, want 504", ws, status)
		}
	}
}
