package e2e

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/cluster"
	"github.com/roomlb/roomlb/internal/redistest"
	"github.com/roomlb/roomlb/internal/wstest"
	"github.com/roomlb/roomlb/ott/otttest"
	"github.com/roomlb/roomlb/sidecar"
)

// start runs a cluster of fake monoliths with fast timers for tests.
func start(t testing.TB, nodes, routers int, change func(*cluster.Options)) (*cluster.Cluster, *redistest.Server) {
	t.Helper()
	srv := redistest.New(t)
	o := cluster.Options{
		RedisURL: srv.URL(),
		Nodes:    nodes,
		Routers:  routers,
		Monolith: cluster.FakeMonolith,
		FakeConfig: func(c *otttest.Config) {
			c.StateDebounce = 200 * time.Millisecond
		},
		Sidecar: func(i int, c *sidecar.Config) {
			// Long enough that a loaded CI machine (every part in one
			// process, under -race) does not miss a heartbeat and fence
			// its rooms; the failover test shortens it.
			c.HeartbeatTTL = 2 * time.Second
			c.StateDebounce = 200 * time.Millisecond
		},
		Log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if redistest.OnCluster() {
		// The registry on a Redis Cluster; the monoliths keep the one
		// server (see TestOnRedisCluster).
		o.Registry = redistest.NewCluster(t).Client()
	}
	if change != nil {
		change(&o)
	}
	c, err := cluster.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c, srv
}

// do sends an HTTP request to a router as a browser would.
var do = wstest.Do

// grant gets an auth token through a router.
var grant = wstest.Grant

// client is a browser-like WebSocket client of one room.
type client struct {
	*wstest.Client
	t    testing.TB
	node string // the node that serves it
}

// join connects to room through a router and authenticates.
func join(t testing.TB, addr, room, token string, hdr ...string) (*client, error) {
	h := http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h.Set(hdr[i], hdr[i+1])
	}
	c, _, err := wstest.Dial(t, "ws://"+addr+"/api/room/"+room, h, token)
	if err != nil {
		return nil, err
	}
	return &client{Client: c, t: t, node: c.Node}, nil
}

func (c *client) send(v any) error       { return c.Send(v) }
func (c *client) chat(text string) error { return c.Chat(text) }

func (c *client) next(want string, limit time.Duration) (map[string]any, error) {
	return c.Next(want, limit)
}

func (c *client) mustNext(want string) map[string]any {
	c.t.Helper()
	return c.MustNext(want, 5*time.Second)
}
