package sidecar

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/internal/nodemonolith"
	"github.com/roomlb/roomlb/registry"
)

// randomMonolith is a monolith under the random test.
type randomMonolith struct {
	BalancerAddr string
	crashed      func() bool
}

// TestRandomNeverCrashesNode drives joins, leaves, requests, bad frames,
// lease losses, moves and drains at random against two Node reference
// monoliths: nothing the sidecars send may crash them (an unload of a room
// a monolith does not hold kills it, ott/PROTOCOL.md §4.6).
func TestRandomNeverCrashesNode(t *testing.T) {
	reg, srv := newTestRegistry(t)
	var monos []randomMonolith
	for range 2 {
		p := nodemonolith.Start(t, srv.URL(), "STATE_DEBOUNCE_MS=200")
		monos = append(monos, randomMonolith{p.BalancerAddr, func() bool { exited, _ := p.Wait(0); return exited }})
	}
	testRandom(t, reg, monos)
}

// TestRandomNeverCrashesFake is the same against the Go fake monolith.
func TestRandomNeverCrashesFake(t *testing.T) {
	reg, srv := newTestRegistry(t)
	var monos []randomMonolith
	for range 2 {
		m := startFake(t, srv)
		monos = append(monos, randomMonolith{m.BalancerAddr(), m.Crashed})
	}
	testRandom(t, reg, monos)
}

// randomSeed repeats a run of the random tests: go test ./sidecar -run
// Random -args -random.seed N (the seed a failed run logged).
var randomSeed = flag.Uint64("random.seed", 0, "seed of the random tests (0: from the clock)")

func testRandom(t *testing.T, reg *registry.Registry, monos []randomMonolith) {
	seed := *randomSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (repeat with -args -random.seed %d)", seed, seed)
	rnd := rand.New(rand.NewPCG(seed, 1))
	ctx := context.Background()
	fast := func(c *Config) {
		c.LoadTimeout = 2 * time.Second
		c.DrainTimeout = 5 * time.Second
	}
	gen := 0
	sidecars := make([]*running, len(monos))
	start := func(i int) {
		gen++
		sidecars[i] = startSidecar(t, reg, fmt.Sprintf("node-%d-%d", i, gen), monos[i].BalancerAddr, fast)
	}
	for i := range monos {
		start(i)
	}
	token := grant(t, sidecars[0].Addr())
	rooms := []string{"Alpha", "beta", "Gamma", "delta", "epsilon", "Zeta", "nope-1", "nope-2"}
	for _, r := range rooms[:6] {
		createRoom(t, sidecars[rnd.IntN(2)].Addr(), r)
	}
	var clients []*wsClient
	ops := map[string]int{}
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		op := rnd.IntN(100)
		s := sidecars[rnd.IntN(len(sidecars))]
		room := rooms[rnd.IntN(len(rooms))]
		if rnd.IntN(2) == 0 {
			room = strings.ToUpper(room)
		}
		var cl *wsClient
		if len(clients) > 0 {
			cl = clients[rnd.IntN(len(clients))]
		}
		switch {
		case op < 35:
			ops["join"]++
			c, _, err := dial(t, s.Addr(), room, token)
			if err == nil {
				clients = append(clients, c)
			}
		case op < 50 && cl != nil:
			ops["leave"]++
			cl.Conn.Close()
		case op < 65 && cl != nil:
			ops["chat"]++
			cl.trySendJSON(map[string]any{"action": "req", "request": map[string]any{"type": 11, "text": "hi"}})
		case op < 70 && cl != nil:
			ops["seek"]++
			cl.trySendJSON(map[string]any{"action": "req", "request": map[string]any{"type": 4, "value": rnd.Float64() * 100}})
		case op < 73 && cl != nil:
			ops["kickme"]++
			cl.trySendJSON(map[string]any{"action": "kickme", "reason": rnd.IntN(70000)})
		case op < 76 && cl != nil:
			ops["bad frame"]++
			bad := [][]byte{[]byte("not json"), []byte(`[1,2]`), []byte(`null`), []byte(`{"action":`), make([]byte, 70<<10)}
			cl.Conn.WriteMessage(websocket.TextMessage, bad[rnd.IntN(len(bad))])
		case op < 82:
			ops["http"]++
			call(t, s.Addr(), "GET", "/api/room/"+room, "")
		case op < 88:
			// The room's key vanishes from Redis (by hand, or lost): the
			// owner finds out at its next metadata write and re-claims
			// the room, unless another node took it first (then it
			// fences it).
			ops["lease loss"]++
			reg.Client().Del(ctx, "roomlb:room:{"+strings.ToLower(room)+"}")
		case op < 93:
			// An operator moves the room to the other node.
			ops["move"]++
			if o, err := reg.Owner(ctx, room); err == nil {
				other := sidecars[0]
				if o.Node == other.cfg.NodeID {
					other = sidecars[1]
				}
				reg.Transfer(ctx, registry.Lease{Room: strings.ToLower(room), Node: o.Node, Session: o.Session, Epoch: o.Epoch},
					other.cfg.NodeID, other.presence.hb.Load().session)
			}
		case op < 95:
			ops["drain"]++
			i := rnd.IntN(len(sidecars))
			sidecars[i].cancel()
			<-sidecars[i].done
			start(i)
		default:
			ops["idle"]++
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Duration(rnd.IntN(10)) * time.Millisecond)
	}
	t.Logf("ops: %v", ops)
	time.Sleep(1500 * time.Millisecond) // let fences and unloads land
	for i, m := range monos {
		if m.crashed() {
			t.Fatalf("monolith %d crashed: the sidecars sent it something it dies of (seed %d)", i, seed)
		}
	}
}
