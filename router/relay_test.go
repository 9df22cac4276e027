package router

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/registry"
)

// memInUse is the live heap and the goroutine stacks, after collecting.
func memInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// waitGoroutines waits until at most n goroutines run.
func waitGoroutines(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines still run after 10s, want at most %d", runtime.NumGoroutine(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIdleRelayMemory: an idle relayed WebSocket costs the router at most
// 16 KiB of heap and goroutine stacks (the project's goal for memory per
// idle connection): n idle WebSockets through the router, minus n straight
// to the sidecar, whose client and sidecar ends cost the same.
func TestIdleRelayMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens hundreds of WebSockets")
	}
	c := newCluster(t, Config{})
	a := c.node(registry.Node{ID: "node-a"})
	l := c.claim("idle", a)
	const n = 300
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	direct := func() (*websocket.Conn, error) {
		ws, _, err := d.Dial("ws://"+a.node.Addr+"/api/room/idle", http.Header{
			contract.HeaderSecret: {testSecret}, contract.HeaderEpoch: {strconv.FormatInt(l.Epoch, 10)}})
		return ws, err
	}
	via := func() (*websocket.Conn, error) {
		ws, _, err := c.dial("/api/room/idle", nil)
		return ws, err
	}
	base := runtime.NumGoroutine()
	measure := func(dial func() (*websocket.Conn, error)) float64 {
		t.Helper()
		waitGoroutines(t, base)
		before := memInUse()
		conns := make([]*websocket.Conn, 0, n)
		defer func() {
			for _, ws := range conns {
				ws.Close()
			}
		}()
		for range n {
			ws, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, ws)
			echo(t, ws, "hi") // a byte each way, as a joined client
		}
		return float64(memInUse()-before) / n
	}
	straight := measure(direct)
	through := measure(via)
	perRelay := (through - straight) / 1024
	t.Logf("per idle WebSocket: %.1f KiB straight to the sidecar, %.1f KiB through the router: %.1f KiB for the router",
		straight/1024, through/1024, perRelay)
	if perRelay > 16 {
		t.Errorf("an idle relayed WebSocket costs the router %.1f KiB of heap and stacks, want at most 16", perRelay)
	}
}

// TestWSSlots: MaxConns bounds relayed WebSockets counting the handshakes
// under way, and every way a handshake or relay ends gives its slot back.
func TestWSSlots(t *testing.T) {
	c := newCluster(t, Config{MaxConns: 3, HoldTimeout: 300 * time.Millisecond})
	a := c.node(registry.Node{ID: "node-a"})
	c.claim("full", a)

	// Two relays, then three handshakes at once that the sidecar answers
	// slowly: one slot is left for them.
	var open []*websocket.Conn
	defer func() {
		for _, ws := range open {
			ws.Close()
		}
	}()
	for range 2 {
		ws, _, err := c.dial("/api/room/full", nil)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, ws)
	}
	a.delay.Store(int64(300 * time.Millisecond))
	var mu sync.Mutex
	var wg sync.WaitGroup
	statuses := map[int]int{}
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws, resp, err := c.dial("/api/room/full", nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				statuses[101]++
				open = append(open, ws)
			case resp != nil:
				statuses[resp.StatusCode]++
			default:
				t.Errorf("dial: %v", err)
			}
		}()
	}
	wg.Wait()
	a.delay.Store(0)
	if statuses[101] != 1 || statuses[503] != 2 {
		t.Errorf("three handshakes with one slot left: %v, want one 101 and two 503", statuses)
	}
	if n := c.r.relayCount(); n != 3 {
		t.Errorf("%d slots taken, want 3", n)
	}

	// Every way out gives the slot back: relays closed by their clients,
	// a handshake refused at the sidecar (held, then 503).
	for _, ws := range open {
		ws.Close()
	}
	open = nil
	c.waitRelays(t, "closed WebSockets")
	a.moving.Store(true)
	if _, resp, err := c.dial("/api/room/full", nil); err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("handshake for a moving room: %v %v, want 503", resp, err)
	}
	a.moving.Store(false)
	c.waitRelays(t, "a refused handshake")
	for range 3 {
		ws, _, err := c.dial("/api/room/full", nil)
		if err != nil {
			t.Fatalf("after the slots came back: %v", err)
		}
		open = append(open, ws)
	}
}

// TestWSEarlyFrame: a frame the client sends in the same packet as its
// handshake, which fasthttp's reader holds when the connection is hijacked,
// reaches the sidecar.
func TestWSEarlyFrame(t *testing.T) {
	c := newCluster(t, Config{})
	a := c.node(registry.Node{ID: "node-a"})
	c.claim("eager", a)
	conn, err := net.Dial("tcp", c.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte("hello")
	mask := [4]byte{1, 2, 3, 4}
	frame := append([]byte{0x81, 0x80 | byte(len(msg))}, mask[:]...)
	for i, b := range msg {
		frame = append(frame, b^mask[i%4])
	}
	req := "GET /api/room/eager HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if _, err := conn.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("handshake: %d", resp.StatusCode)
	}
	head := make([]byte, 2)
	if _, err := io.ReadFull(br, head); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, head[1]&0x7f)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	if head[0] != 0x81 || string(body) != "node-a: hello" {
		t.Errorf("answer %x %q, want a text frame %q", head[0], body, "node-a: hello")
	}
}

// TestWSMessageTooBig: a client message over the router's MaxFrame ends
// the client with 1009 at the router; the sidecar never gets it (the echo
// sidecar would answer it). A message of MaxFrame passes.
func TestWSMessageTooBig(t *testing.T) {
	c := newCluster(t, Config{MaxFrame: 4096})
	a := c.node(registry.Node{ID: "node-a"})
	c.claim("big", a)
	ws, _, err := c.dial("/api/room/big", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	fits := strings.Repeat("x", 4096)
	if got := echo(t, ws, fits); got != "node-a: "+fits {
		t.Fatalf("a message of MaxFrame: answer of %d bytes", len(got))
	}
	if err := ws.WriteMessage(websocket.TextMessage, make([]byte, 70<<10)); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1009 {
		t.Fatalf("after a message too big: %q, %v; want close 1009 and nothing else", msg, err)
	}
	if n := c.metric("roomlb_router_messages_too_big_total"); n != 1 {
		t.Fatalf("messages_too_big_total = %v, want 1", n)
	}
}

// inLoop reports whether the router's one relay is in a relay loop.
func (c *cluster) inLoop(t testing.TB) bool {
	t.Helper()
	c.r.relayMu.Lock()
	defer c.r.relayMu.Unlock()
	if len(c.r.relays) != 1 {
		t.Fatalf("%d relays, want 1", len(c.r.relays))
	}
	for rl := range c.r.relays {
		rl.upMu.Lock()
		defer rl.upMu.Unlock()
		return rl.lp != nil
	}
	return false
}

// TestRelayLoop: a relay is relayed by a relay loop while it only passes
// bytes on; when a peer does not read fast enough the loop hands it back
// to its goroutines with what it could not write, and not a byte is lost
// or reordered either way.
func TestRelayLoop(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOMAXPROCS(0) < 2 {
		t.Skip("relay loops need epoll and two processors")
	}
	c := newCluster(t, Config{})
	a := c.node(registry.Node{ID: "node-a"})
	c.claim("loop", a)
	ws, _, err := c.dial("/api/room/loop", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	echo(t, ws, "hi")
	deadline := time.Now().Add(5 * time.Second)
	for !c.inLoop(t) {
		if time.Now().After(deadline) {
			t.Fatal("the relay is not in a relay loop 5s after its first message")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 100 {
		if got, want := echo(t, ws, strconv.Itoa(i)), "node-a: "+strconv.Itoa(i); got != want {
			t.Fatalf("echo %q, want %q", got, want)
		}
	}
	if !c.inLoop(t) {
		t.Fatal("the relay left its loop while it only passed messages on")
	}

	// 16 MiB each way while the client reads nothing for a while: socket
	// buffers fill up in both directions.
	const n, size = 256, 64 << 10
	msg := func(i int) []byte {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(i + j)
		}
		return b
	}
	werr := make(chan error, 1)
	go func() {
		for i := range n {
			ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := ws.WriteMessage(websocket.BinaryMessage, msg(i)); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	time.Sleep(500 * time.Millisecond)
	for i := range n {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, got, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if want := append([]byte("node-a: "), msg(i)...); string(got) != string(want) {
			t.Fatalf("echo %d differs from message %d as sent (%d bytes, want %d)", i, i, len(got), len(want))
		}
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if c.inLoop(t) {
		t.Error("the relay stayed in its loop through writes that had to wait")
	}
	if got := echo(t, ws, "after"); got != "node-a: after" {
		t.Errorf("echo after the flood: %q", got)
	}
}
