package router

import (
	"bufio"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/roomlb/roomlb/registry"
)

// MaxConns bounds HTTP and WebSocket connections together, and
// MaxConnsPerAddr one client address; a connection over a bound gets 503
// before it sends anything, and a closed one gives its slot back.
func TestConnectionLimits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		reason string
	}{
		{"in all", Config{MaxConns: 4, MaxConnsPerAddr: -1}, "max_conns"},
		{"per address", Config{MaxConns: 100, MaxConnsPerAddr: 4}, "max_conns_per_addr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, tc.cfg)
			a := c.node(registry.Node{ID: "node-a"})
			c.claim("room", a)
			// Two WebSockets and two idle HTTP keep-alive connections.
			for range 2 {
				ws, _, err := c.dial("/api/room/room", nil)
				if err != nil {
					t.Fatal(err)
				}
				defer ws.Close()
			}
			var idle []net.Conn
			for range 2 {
				conn, err := net.Dial("tcp", c.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conn.Write([]byte("GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n"))
				res, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil || res.StatusCode != 200 {
					t.Fatalf("keep-alive request: %v %v", res, err)
				}
				idle = append(idle, conn)
			}
			over := func() int {
				conn, err := net.Dial("tcp", c.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				conn.Write([]byte("GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n"))
				res, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					t.Fatalf("fifth connection: %v", err)
				}
				res.Body.Close()
				return res.StatusCode
			}
			if code := over(); code != 503 {
				t.Fatalf("a fifth connection with four open (two of them WebSockets): %d, want 503", code)
			}
			if got := c.metric(`roomlb_router_refused_connections_total{reason="` + tc.reason + `"}`); got != 1 {
				t.Errorf("refused connections (%s) = %v, want 1", tc.reason, got)
			}
			idle[0].Close()
			deadline := time.Now().Add(5 * time.Second)
			for c.r.limit.count() > 3 {
				if time.Now().After(deadline) {
					t.Fatalf("a closed connection did not give its slot back: %d counted", c.r.limit.count())
				}
				time.Sleep(10 * time.Millisecond)
			}
			if code := over(); code != 200 {
				t.Fatalf("a connection after one closed: %d, want 200", code)
			}
		})
	}
}

// CreatesPerMinute bounds the rooms one client address creates: past its
// burst, 429 with Retry-After; another address (here behind a trusted
// proxy, named by X-Forwarded-For) has a budget of its own.
func TestCreateLimit(t *testing.T) {
	c := newCluster(t, Config{CreatesPerMinute: 4, TrustedProxies: []string{"127.0.0.1"}})
	c.node(registry.Node{ID: "node-a"})
	create := func(from string) (int, http.Header) {
		var hdr http.Header
		if from != "" {
			hdr = http.Header{"X-Forwarded-For": {from}}
		}
		status, _, h := c.do(http.MethodPost, "/api/room/generate", hdr, "")
		return status, h
	}
	for i := range 2 { // the burst: half the rate
		if status, _ := create("198.51.100.1"); status != 200 {
			t.Fatalf("create %d within the burst: %d", i+1, status)
		}
	}
	status, h := create("198.51.100.1")
	if status != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
		t.Fatalf("create past the burst: %d (Retry-After %q), want 429 with Retry-After", status, h.Get("Retry-After"))
	}
	if status, _ := create("198.51.100.2"); status != 200 {
		t.Fatalf("another client's create: %d, want 200", status)
	}
}
