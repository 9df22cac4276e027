package e2e

import (
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/cluster"
)

// The monolith's HTTP server closes a keep-alive connection after 5 s of
// idleness (Node's default, as the real OpenTogetherTube server has it). A
// write after a longer idle time must not reuse the connection the monolith
// is closing and fail with 502.
func TestWriteAfterIdle(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the monolith's keep-alive timeout")
	}
	c, _ := start(t, 1, 1, func(o *cluster.Options) { o.Monolith = cluster.NodeMonolith })
	r := c.Routers[0].Addr
	if res, body := do(t, r, "POST", "/api/room/create", `{"name":"Before","isTemporary":true}`); res.StatusCode != 200 {
		t.Fatalf("create: %d %s", res.StatusCode, body)
	}
	time.Sleep(6500 * time.Millisecond)
	for _, name := range []string{"After1", "After2", "After3"} {
		if res, body := do(t, r, "POST", "/api/room/create", `{"name":"`+name+`","isTemporary":true}`); res.StatusCode != 200 {
			t.Fatalf("create %s after 6.5 s idle: %d %s", name, res.StatusCode, body)
		}
	}
}
