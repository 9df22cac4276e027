package sidecar

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/internal/redistest"
	"github.com/roomlb/roomlb/internal/roomlbtest"
	"github.com/roomlb/roomlb/internal/wstest"
	"github.com/roomlb/roomlb/registry"
)

const testSecret = "test-secret"

var testLogLevel = slog.LevelDebug

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: testLogLevel}))
}

// newTestRegistry returns a registry over a fresh redis-server.
func newTestRegistry(t testing.TB) (*registry.Registry, *redistest.Server) {
	t.Helper()
	srv := redistest.New(t)
	reg, err := registry.New(srv.Client(), registry.Config{Logger: testLogger(t), RecoveryWindow: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Bootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	return reg, srv
}

// running is a sidecar running in the test.
type running struct {
	*Sidecar
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // Run's result
}

// startSidecar runs a sidecar for the monolith whose balancer port is at
// balancerAddr; change adjusts its config. It waits until the node is
// registered, and stops (drains) it when the test ends.
func startSidecar(t testing.TB, reg *registry.Registry, node, balancerAddr string, change func(*Config)) *running {
	t.Helper()
	cfg := Config{
		NodeID:        node,
		Listen:        "127.0.0.1:0",
		Monolith:      "ws://" + balancerAddr + "/",
		Secret:        testSecret,
		Registry:      reg,
		HeartbeatTTL:  600 * time.Millisecond,
		DrainTimeout:  10 * time.Second,
		StateDebounce: 300 * time.Millisecond,
		ShutdownFlush: 500 * time.Millisecond,
		PingInterval:  time.Second,
		Logger:        testLogger(t).With("sidecar", node),
	}
	if change != nil {
		change(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Sidecar: s, cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = s.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			t.Errorf("sidecar %s did not stop", node)
		}
	})
	waitFor(t, 5*time.Second, "node "+node+" registered", func() bool {
		ok, _ := reg.Alive(context.Background(), node)
		return ok
	})
	return r
}

var waitFor = wstest.WaitFor

// secret is the header a router sends a sidecar with every request.
var secret = []string{contract.HeaderSecret, testSecret}

// call sends an HTTP request to a sidecar as a router would.
func call(t testing.TB, addr, method, path, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	res, b := wstest.Do(t, addr, method, path, body, append(append([]string(nil), secret...), hdr...)...)
	return res.StatusCode, res.Header, b
}

// grant gets an auth token through the sidecar.
func grant(t testing.TB, addr string) string {
	t.Helper()
	return wstest.Grant(t, addr, secret...)
}

// createRoom creates a temporary room through the sidecar.
func createRoom(t testing.TB, addr, name string) {
	t.Helper()
	wstest.CreateRoom(t, addr, name, secret...)
}

// wsClient is a browser-like client of one room, as a router would pass it
// on (with the secret).
type wsClient struct {
	*wstest.Client
	t testing.TB
}

// dial connects a client to room at a sidecar and sends its auth frame.
func dial(t testing.TB, addr, room, token string) (*wsClient, *http.Response, error) {
	t.Helper()
	h := http.Header{}
	h.Set(contract.HeaderSecret, testSecret)
	c, res, err := wstest.Dial(t, "ws://"+addr+"/api/room/"+room, h, token)
	if err != nil {
		return nil, res, err
	}
	return &wsClient{Client: c, t: t}, res, nil
}

func (c *wsClient) sendJSON(v any) {
	if err := c.Send(v); err != nil {
		c.t.Errorf("client write: %v", err)
	}
}

// trySendJSON sends v, for clients that may have been closed meanwhile.
func (c *wsClient) trySendJSON(v any) error { return c.Send(v) }

// next returns the next message whose action is want, skipping others.
func (c *wsClient) next(want string, limit time.Duration) map[string]any {
	c.t.Helper()
	return c.MustNext(want, limit)
}

// closeCode waits for the connection to end and returns its close code.
func (c *wsClient) closeCode(limit time.Duration) int {
	c.t.Helper()
	return c.CloseCode(limit)
}

// serveRecords parses a serve log (Config.ServeLog).
func serveRecords(t testing.TB, log *roomlbtest.Buffer) []ServeRecord {
	t.Helper()
	var out []ServeRecord
	for _, line := range log.Lines() {
		var r ServeRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("serve log line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// lastServed is the end of room's last serve span in a serve log.
func lastServed(t testing.TB, log *roomlbtest.Buffer, room string) time.Time {
	t.Helper()
	var last int64
	for _, r := range serveRecords(t, log) {
		if r.Room == room && r.Client == "" {
			last = max(last, r.Last)
		}
	}
	if last == 0 {
		t.Fatalf("room %s was never served", room)
	}
	return time.Unix(0, last)
}
