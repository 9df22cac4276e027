package sidecar

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/internal/nodemonolith"
	"github.com/roomlb/roomlb/internal/redistest"
	"github.com/roomlb/roomlb/internal/roomlbtest"
	"github.com/roomlb/roomlb/registry"
)

// sidecarProcess runs `roomlb sidecar` as its own process, so that it can
// be paused and killed.
type sidecarProcess struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
	err  error
}

func startSidecarProcess(t testing.TB, redisURL, node, balancerAddr string, args ...string) *sidecarProcess {
	t.Helper()
	cmd := exec.Command(roomlbtest.Binary(t), append([]string{"sidecar",
		"--node-id", node, "--listen", "127.0.0.1:0", "--monolith", "ws://" + balancerAddr + "/",
		"--secret", testSecret, "--redis-url", redisURL, "--log-level", "debug"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &sidecarProcess{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			t.Logf("%s: %s", node, line)
			if i := strings.Index(line, " listen="); i >= 0 && strings.Contains(line, "sidecar: starting") {
				f := strings.Fields(line[i+len(" listen="):])
				addr <- f[0]
			}
		}
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		<-p.done
	})
	select {
	case p.addr = <-addr:
	case <-time.After(10 * time.Second):
		t.Fatal("sidecar process did not start")
	}
	return p
}

// TestPausedOwnerFences pauses a sidecar (SIGSTOP) past its lease while
// another node takes its room: once resumed it serves nothing for the room
// and unloads it from its monolith.
func TestPausedOwnerFences(t *testing.T) {
	reg, srv := newTestRegistry(t)
	monoA := nodemonolith.Start(t, srv.URL(), "STATE_DEBOUNCE_MS=300")
	monoB := nodemonolith.Start(t, srv.URL(), "STATE_DEBOUNCE_MS=300")
	obs := newObserver()
	obs.watch(t, "a", monoA.BalancerAddr)
	a := startSidecarProcess(t, srv.URL(), "node-a", monoA.BalancerAddr, "--heartbeat-ttl", "600ms")
	b := startSidecar(t, reg, "node-b", monoB.BalancerAddr, nil)
	ctx := context.Background()
	waitFor(t, 5*time.Second, "node-a registered", func() bool { ok, _ := reg.Alive(ctx, "node-a"); return ok })

	createRoom(t, a.addr, "Paused")
	token := grant(t, a.addr)
	cl, _, err := dial(t, a.addr, "paused", token)
	if err != nil {
		t.Fatal(err)
	}
	cl.next("you", 5*time.Second)
	before, _ := reg.Owner(ctx, "paused")

	a.cmd.Process.Signal(syscall.SIGSTOP)
	waitFor(t, 5*time.Second, "the paused node's lease to expire", func() bool {
		_, err := reg.Owner(ctx, "paused")
		return err != nil
	})
	// The room moves to node-b while node-a sleeps.
	cb, _, err := dial(t, b.Addr(), "paused", token)
	if err != nil {
		t.Fatal(err)
	}
	cb.next("you", 5*time.Second)
	after, _ := reg.Owner(ctx, "paused")
	if after.Node != "node-b" || after.Epoch <= before.Epoch {
		t.Fatalf("room owned by %+v after the pause, want node-b above epoch %d", after, before.Epoch)
	}
	// A request that reaches node-a while it is paused waits in its socket.
	cl.sendJSON(map[string]any{"action": "req", "request": map[string]any{"type": 11, "text": "from the past"}})
	time.Sleep(100 * time.Millisecond)
	a.cmd.Process.Signal(syscall.SIGCONT)

	// node-a closes its client without having served the request...
	deadline := time.After(5 * time.Second)
	for closed := false; !closed; {
		select {
		case m, ok := <-cl.Msgs:
			if !ok {
				closed = true
				break
			}
			if m["action"] == "chat" {
				t.Fatalf("the resumed node served its old room: %v", m)
			}
		case <-deadline:
			t.Fatal("the resumed node did not close its client of the moved room")
		}
	}
	if code := <-cl.Closed; code != contract.CloseServiceRestart {
		t.Errorf("client of the fenced room closed with %d, want %d", code, contract.CloseServiceRestart)
	}
	// ...unloads the room from its monolith...
	waitFor(t, 5*time.Second, "monolith a to unload the room", func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return len(obs.where["paused"]) == 0 && len(obs.trace["paused"]) >= 2
	})
	// ...and sends newcomers to the new owner.
	code, hdr, _ := call(t, a.addr, "GET", "/api/room/paused", "")
	if code != 421 || !strings.HasPrefix(hdr.Get(contract.HeaderOwner), "node-b:") {
		t.Fatalf("request to the old owner: %d owner %q, want 421 naming node-b", code, hdr.Get(contract.HeaderOwner))
	}
	// The chat never reached node-b's room either.
	select {
	case m := <-cb.Msgs:
		if m["action"] == "chat" {
			t.Fatalf("the stale request reached the new owner: %v", m)
		}
	case <-time.After(200 * time.Millisecond):
	}
}

// TestMonolithKilledReleasesRooms: when the monolith dies, the sidecar
// releases every room at once.
func TestMonolithKilledReleasesRooms(t *testing.T) {
	reg, srv := newTestRegistry(t)
	mono := nodemonolith.Start(t, srv.URL())
	sc := startSidecar(t, reg, "node-a", mono.BalancerAddr, nil)
	ctx := context.Background()
	const n = 50
	for i := range n {
		createRoom(t, sc.Addr(), fmt.Sprintf("doomed-%02d", i))
	}
	killed := time.Now()
	mono.Signal(syscall.SIGKILL)
	var took time.Duration
	waitFor(t, 5*time.Second, "every room released", func() bool {
		// The owner keys themselves are gone, not only ownership (which
		// ends with the node's session when it deregisters).
		keys, err := reg.Client().Keys(ctx, reg.Prefix()+"room:{doomed-*}").Result()
		if err != nil || len(keys) > 0 {
			return false
		}
		took = time.Since(killed)
		return true
	})
	t.Logf("%d rooms released %v after the monolith was killed", n, took)
	// The node takes no placements without its monolith.
	code, hdr, _ := call(t, sc.Addr(), "GET", "/api/room/doomed-00", "")
	if code != 503 || hdr.Get(contract.HeaderDraining) != "1" {
		t.Fatalf("request with the monolith down: %d, want 503 with %s", code, contract.HeaderDraining)
	}
	waitFor(t, 5*time.Second, "node deregistered", func() bool {
		alive, _ := reg.Alive(ctx, "node-a")
		return !alive
	})
	if code, _, _ := call(t, sc.Addr(), "GET", "/readyz", ""); code != 503 {
		t.Errorf("/readyz with the monolith down = %d, want 503", code)
	}
	_ = registry.StateActive
}

// With Redis gone, a node stops serving its rooms before anyone could take
// them: before the node's heartbeat key can expire (its rooms are free to
// claim then, and a router may steal them). The client chats all along, so
// the room is served for as long as the sidecar lets it; the serve log
// shows until when that was, which must be before the deadline the sidecar
// computed from its last heartbeat sent (0.9 of its TTL after it was sent,
// so before the key could expire). Without the check the room was served
// until Redis came back.
func TestSelfFencing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		beat   time.Duration
		reason string
	}{
		{"heartbeat runs out", time.Second, "heartbeat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var served roomlbtest.Buffer
			f := startFencing(t, func(c *Config) {
				c.HeartbeatTTL = tc.beat
				c.ServeLog = &served
			})
			go func() {
				for f.cl.Chat("still here") == nil {
					time.Sleep(20 * time.Millisecond)
				}
			}()
			f.cl.next("chat", 5*time.Second)
			// The room's deadline as the sidecar last set it: the fence
			// clears it, so it is sampled until then.
			var until atomic.Int64
			go func() {
				for u := f.rm.until.Load(); u != 0; u = f.rm.until.Load() {
					until.Store(min(u, f.sc.presence.hb.Load().until))
					time.Sleep(time.Millisecond)
				}
			}()
			f.srv.Stop()
			if code := f.cl.closeCode(10 * time.Second); code != contract.CloseServiceRestart {
				t.Fatalf("client closed with %d, want %d", code, contract.CloseServiceRestart)
			}
			deadline := time.Unix(0, f.sc.wall(until.Load()))
			f.sc.flushServeLog()
			last := lastServed(t, &served, "harbour")
			if last.After(deadline) {
				t.Fatalf("room served until %s, %v past its deadline %s", last.Format("15:04:05.000000"), last.Sub(deadline), deadline.Format("15:04:05.000000"))
			}
			if got := roomlbtest.Counter(t, f.sc.Sidecar.Gatherer(), `roomlb_sidecar_leases_lost_total{reason="`+tc.reason+`"}`); got != 1 {
				t.Errorf("leases_lost{reason=%s} = %v, want 1", tc.reason, got)
			}
			if mfs, err := f.sc.metrics.reg.Gather(); err != nil || !slices.ContainsFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == "go_goroutines" }) {
				t.Errorf("Go runtime metrics not exported (%v)", err)
			}
			waitFor(t, 5*time.Second, "the room unloaded", func() bool {
				f.obs.mu.Lock()
				defer f.obs.mu.Unlock()
				return len(f.obs.where["harbour"]) == 0
			})
			f.srv.Start() // so that the sidecar can deregister when the test ends
		})
	}
}

// fencing is a node with one room, Harbour, and one joined client.
type fencing struct {
	reg *registry.Registry
	srv *redistest.Server
	obs *observer
	sc  *running
	rm  *room
	cl  *wsClient
}

// startFencing starts a fencing setup on the Node reference monolith.
func startFencing(t *testing.T, change func(*Config)) *fencing {
	f := &fencing{obs: newObserver()}
	f.reg, f.srv = newTestRegistry(t)
	mono := nodemonolith.Start(t, f.srv.URL())
	f.obs.watch(t, "a", mono.BalancerAddr)
	f.sc = startSidecar(t, f.reg, "node-a", mono.BalancerAddr, change)
	createRoom(t, f.sc.Addr(), "Harbour")
	var err error
	if f.cl, _, err = dial(t, f.sc.Addr(), "harbour", grant(t, f.sc.Addr())); err != nil {
		t.Fatal(err)
	}
	f.cl.next("you", 5*time.Second)
	lk := f.sc.lock()
	f.rm = f.sc.rooms["harbour"]
	lk.unlock()
	return f
}

// A heartbeat that reaches Redis after the node's key expired (a slow
// link: it was sent in time) creates the key again. In between, a router
// may have stolen the node's rooms; the late heartbeat must not make them
// valid here again. Here the key is deleted, a room stolen, and the next
// heartbeat goes through: at its return the room must no longer be served.
// Without the session check the heartbeat moved the deadline on and the
// node served the stolen room alongside its new owner (until the next
// renewal found it lost, 1.1-2.0 s in a 30-minute chaos run, when rooms
// still had leases of their own; for good, now that they do not).
func TestLapsedHeartbeatRevivesNoRoom(t *testing.T) {
	f := startFencing(t, func(c *Config) {
		c.HeartbeatTTL = time.Second
	})
	reg, sc, cl := f.reg, f.sc, f.cl
	ctx := context.Background()
	before, err := reg.Owner(ctx, "harbour")
	if err != nil {
		t.Fatal(err)
	}

	// The key lapses and a router steals the room for node-b, while the
	// node's own heartbeats wait.
	sc.presence.mu.Lock()
	err = reg.Deregister(ctx, "node-a")
	var stolen registry.Lease
	if err == nil {
		stolen, err = reg.Steal(ctx, "harbour", "node-a", "node-b", "b")
	}
	sc.presence.mu.Unlock()
	if err != nil || stolen.Epoch <= before.Epoch {
		t.Fatalf("steal: %+v, %v", stolen, err)
	}
	// The late heartbeat (or the node's own, if it came first).
	if up, err := sc.presence.beat(ctx); !up || err != nil {
		t.Fatalf("beat: up %v, %v", up, err)
	}
	lk := sc.lock()
	rm := sc.rooms["harbour"]
	served := rm != nil && rm.valid(sc.now())
	lk.unlock()
	if served {
		t.Fatalf("node-a still serves room harbour at epoch %d after node-b stole it at epoch %d", before.Epoch, stolen.Epoch)
	}
	if code := cl.closeCode(5 * time.Second); code != contract.CloseServiceRestart {
		t.Fatalf("client closed with %d, want %d", code, contract.CloseServiceRestart)
	}
	// The new life of the key serves new claims as before.
	createRoom(t, sc.Addr(), "Lagoon")
	cl2, _, err := dial(t, sc.Addr(), "lagoon", grant(t, sc.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	cl2.next("you", 5*time.Second)
	cl2.Chat("still here")
	if m := cl2.next("chat", 5*time.Second); m["text"] != "still here" {
		t.Fatalf("chat in a room claimed after the lapse: %v", m)
	}
}

// Redis lost its data (FLUSHALL, or a restart without persistence): the
// owner keeps its room, at a new epoch, and its client is not
// disturbed, while another node asked for the room at once (a router placed
// a client there) must not take it: it waits out the recovery window and
// then finds the room owned again. Without the window node-b would serve
// the room alongside node-a; without the reclaim node-a would unload it,
// and with the monolith's state gone from Redis too the room would be lost.
func TestRedisDataLossKeepsRooms(t *testing.T) {
	for _, loss := range []struct {
		name string
		lose func(*redistest.Server) error
	}{
		{"flushall", func(srv *redistest.Server) error { return srv.Client().FlushAll(context.Background()).Err() }},
		{"restart without persistence", func(srv *redistest.Server) error { srv.Restart(); return nil }},
	} {
		t.Run(loss.name, func(t *testing.T) { testRedisDataLoss(t, loss.lose) })
	}
}

// lagoonOnNodeA starts node-a and node-b (1 s heartbeats) on one Redis,
// and a client of room Lagoon on node-a; it returns the client, its token
// and the room's owner.
func lagoonOnNodeA(t *testing.T) (reg *registry.Registry, srv *redistest.Server, a, b *running, cl *wsClient, token string, owner registry.Owner) {
	t.Helper()
	reg, srv = newTestRegistry(t)
	monoA := nodemonolith.Start(t, srv.URL())
	monoB := nodemonolith.Start(t, srv.URL())
	slow := func(c *Config) { c.HeartbeatTTL = time.Second }
	a = startSidecar(t, reg, "node-a", monoA.BalancerAddr, slow)
	b = startSidecar(t, reg, "node-b", monoB.BalancerAddr, slow)
	createRoom(t, a.Addr(), "Lagoon")
	token = grant(t, a.Addr())
	cl, _, err := dial(t, a.Addr(), "lagoon", token)
	if err != nil {
		t.Fatal(err)
	}
	cl.next("you", 5*time.Second)
	if owner, err = reg.Owner(context.Background(), "lagoon"); err != nil {
		t.Fatal(err)
	}
	return reg, srv, a, b, cl, token, owner
}

// refusedAt wants node b to refuse a client of lagoon with 421 naming
// node-a.
func refusedAt(t *testing.T, b *running, token string) {
	t.Helper()
	if cb, res, err := dial(t, b.Addr(), "lagoon", token); err == nil {
		cb.Conn.Close()
		t.Fatalf("node-b took the room while node-a still served it")
	} else if res == nil || res.StatusCode != 421 || !strings.HasPrefix(res.Header.Get(contract.HeaderOwner), "node-a:") {
		t.Fatalf("join at node-b after the loss: %v, want 421 naming node-a", err)
	}
}

func testRedisDataLoss(t *testing.T, lose func(*redistest.Server) error) {
	reg, srv, a, b, cl, token, before := lagoonOnNodeA(t)
	ctx := context.Background()

	if err := lose(srv); err != nil {
		t.Fatal(err)
	}
	// A client sent to node-b right after the loss: node-b must not claim.
	refusedAt(t, b, token)
	after, err := reg.Owner(ctx, "lagoon")
	if err != nil || after.Node != "node-a" || after.Epoch <= before.Epoch {
		t.Fatalf("owner after the loss: %+v, %v; want node-a above epoch %d", after, err, before.Epoch)
	}
	// node-a's client was never disturbed and is still served.
	cl.Chat("still here")
	if m := cl.next("chat", 5*time.Second); m["text"] != "still here" {
		t.Fatalf("chat after the loss: %v", m)
	}
	// Re-claimed once, or twice: a metadata write refused for the lost key
	// may have it re-claimed before the heartbeat finds the new
	// generation and re-claims every room (binding it to the new session).
	if n := roomlbtest.Counter(t, a.Sidecar.Gatherer(), "roomlb_sidecar_reclaims_total"); n < 1 || n > 2 {
		t.Fatalf("reclaims = %v, want 1 or 2", n)
	}
}

// A shard of a Redis Cluster may lose its data alone: a room's keys and its
// hash slot's mark gone, the fleet's keys (the generation, the heartbeat
// keys) kept, so no heartbeat reports a new generation. The owner's next
// heartbeat checks its rooms' slots' marks, finds the loss and re-claims
// the room, within the slot's recovery window, during which another node
// takes nothing of the slot; the owner's client is never disturbed. Here
// the shard's loss is the slot's keys deleted on a single Redis.
func TestShardLossIsReclaimed(t *testing.T) {
	reg, srv, a, b, cl, token, before := lagoonOnNodeA(t)
	ctx := context.Background()
	gen, _, _ := reg.Generation(ctx)
	// The room's metadata written with its client, and nothing left to
	// write: a refused write would find the loss too (see
	// TestRedisDataLossKeepsRooms), and this test is about the heartbeat's
	// check.
	rdb := srv.Client()
	deadline := time.Now().Add(10 * time.Second)
	for rdb.HGet(ctx, "roomlb:room:{lagoon}:meta", "users").Val() != "1" {
		if time.Now().After(deadline) {
			t.Fatal("lagoon's metadata does not count its client")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second)
	marks, err := rdb.Keys(ctx, fmt.Sprintf("roomlb:slot:%d:*", registry.RoomSlot("lagoon"))).Result()
	if err != nil || len(marks) == 0 {
		t.Fatalf("the mark of lagoon's slot: %v, %v", marks, err)
	}
	if err := rdb.Del(ctx, append(marks, "roomlb:room:{lagoon}", "roomlb:room:{lagoon}:epoch")...).Err(); err != nil {
		t.Fatal(err)
	}
	// A client sent to node-b right after the loss: node-b must not claim.
	refusedAt(t, b, token)
	after, err := reg.Owner(ctx, "lagoon")
	if err != nil || after.Node != "node-a" || after.Epoch <= before.Epoch || after.Session != before.Session {
		t.Fatalf("owner after the loss: %+v, %v; want node-a in session %s above epoch %d", after, err, before.Session, before.Epoch)
	}
	if g, _, _ := reg.Generation(ctx); g != gen {
		t.Fatalf("the generation changed (%s to %s): the loss was to be the slot's alone", gen, g)
	}
	cl.Chat("still here")
	if m := cl.next("chat", 5*time.Second); m["text"] != "still here" {
		t.Fatalf("chat after the loss: %v", m)
	}
	if n := roomlbtest.Counter(t, a.Sidecar.Gatherer(), "roomlb_sidecar_reclaims_total"); n < 1 {
		t.Fatalf("reclaims = %v, want at least 1", n)
	}
}
