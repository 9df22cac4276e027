package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/internal/cluster"
	"github.com/roomlb/roomlb/registry"
)

// No frame a client sends may reach the monolith's link unless the monolith
// accepts it: the Node monolith fails a link whose text frame is not UTF-8,
// and the sidecar would then drop every room of the node. Through a router,
// at the Node reference monolith: one attacker in one room sends every kind
// of malformed payload; the clients of another room on the same node are
// never disturbed, and a frame that is not UTF-8 ends the attacker's own
// connection with 1007.
func TestMalformedFramesHurtOnlyTheirSender(t *testing.T) {
	c, _ := start(t, 1, 1, func(o *cluster.Options) { o.Monolith = cluster.NodeMonolith })
	r := c.Routers[0].Addr
	token := grant(t, r)
	for _, name := range []string{"Victims", "Attack"} {
		if res, body := do(t, r, "POST", "/api/room/create", `{"name":"`+name+`","isTemporary":true}`); res.StatusCode != 200 {
			t.Fatalf("create %s: %d %s", name, res.StatusCode, body)
		}
	}
	alice, err := join(t, r, "victims", token)
	if err != nil {
		t.Fatal(err)
	}
	alice.mustNext("you")
	bob, err := join(t, r, "victims", token)
	if err != nil {
		t.Fatal(err)
	}
	bob.mustNext("you")

	const closes, stays = true, false
	for _, tc := range []struct {
		name   string
		kind   int
		data   string
		closed bool // the attacker's connection ends with 1007 (1009 for the frame too large)
	}{
		{"text, JSON-shaped, invalid UTF-8 in a string", websocket.TextMessage, `{"x":"` + "\xff" + `"}`, closes},
		{"binary, JSON-shaped, invalid UTF-8 in a string", websocket.BinaryMessage, `{"action":"req","request":{"type":11,"text":"` + "\xc3\x28" + `"}}`, closes},
		{"text, overlong encoding", websocket.TextMessage, `{"x":"` + "\xc0\xaf" + `"}`, closes},
		{"text, UTF-16 surrogate as UTF-8", websocket.TextMessage, `{"x":"` + "\xed\xa0\x80" + `"}`, closes},
		{"text, truncated sequence at the end", websocket.TextMessage, `{"x":1}` + "\xe2\x82", closes},
		{"binary garbage", websocket.BinaryMessage, "\x00\x01\x02\xfe\xff", closes},
		{"text, over the frame limit", websocket.TextMessage, `{"action":"req","request":{"type":11,"text":"` + strings.Repeat("x", 70<<10) + `"}}`, closes},
		{"text, not JSON", websocket.TextMessage, "hello", stays},
		{"text, JSON array", websocket.TextMessage, `[1,2,3]`, stays},
		{"text, empty", websocket.TextMessage, "", stays},
		{"text, escaped lone surrogate", websocket.TextMessage, `{"x":"\ud800"}`, stays},
		{"text, NUL escaped", websocket.TextMessage, `{"x":"\u0000"}`, stays},
		{"text, deeply nested", websocket.TextMessage, strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000), stays},
		{"text, unknown action", websocket.TextMessage, `{"action":"nope","x":[{}]}`, stays},
		{"text, request of a wrong shape", websocket.TextMessage, `{"action":"req","request":"chat"}`, stays},
	} {
		mallory, err := join(t, r, "attack", token)
		if err != nil {
			t.Fatalf("%s: join: %v", tc.name, err)
		}
		mallory.mustNext("you")
		if err := mallory.Conn.WriteMessage(tc.kind, []byte(tc.data)); err != nil && len(tc.data) <= 64<<10 {
			// (A frame too large may be refused, from its header, while
			// its rest is still being written: the write then fails.)
			t.Fatalf("%s: write: %v", tc.name, err)
		}
		if tc.closed {
			want := 1007
			if len(tc.data) > 64<<10 {
				want = 1009
			}
			// The rest of a frame too large may still be on its way when
			// the connection closes; a reset may then overtake the close.
			if code := mallory.CloseCode(5 * time.Second); code != want && !(want == 1009 && code == 1006) {
				t.Errorf("%s: the sender was closed with %d, want %d", tc.name, code, want)
			}
		} else {
			// Still served: a chat of its own comes back.
			mallory.chat("after " + tc.name)
			if m, err := mallory.next("chat", 5*time.Second); err != nil || m["text"] != "after "+tc.name {
				t.Errorf("%s: the sender is not served after it: %v %v", tc.name, m, err)
			}
			mallory.Conn.Close()
		}
		// The other room on the node was never touched.
		alice.chat("still here after " + tc.name)
		if m, err := bob.next("chat", 5*time.Second); err != nil || m["text"] != "still here after "+tc.name {
			t.Fatalf("%s: another room's chat did not arrive: %v %v (the node's link dropped?)", tc.name, m, err)
		}
	}
	select {
	case code := <-alice.Closed:
		t.Fatalf("a client of another room was closed with %d", code)
	default:
	}
}

// A path must reach the monolith's handler of the room it was routed for:
// Node's URL parser reads a backslash (raw or %5C) as '/', so a path such as
// /api/room/<ROOM>/x%5C..%5C..%5C<Other> would make one node's monolith load
// another node's room (an out-of-date copy), or create a room whose name is
// taken. Routers refuse such paths before any lookup, and so do sidecars
// (they pass paths on as they came); a room path in another casing is still
// served, under the room's own name.
func TestTraversalPathsRefused(t *testing.T) {
	c, _ := start(t, 1, 1, func(o *cluster.Options) { o.Monolith = cluster.NodeMonolith })
	r := c.Routers[0].Addr
	for _, name := range []string{"Harbour", "Other"} {
		if res, body := do(t, r, "POST", "/api/room/create", `{"name":"`+name+`","isTemporary":true}`); res.StatusCode != 200 {
			t.Fatalf("create %s: %d %s", name, res.StatusCode, body)
		}
	}
	if res, body := do(t, r, "GET", "/api/room/HARBOUR", ""); res.StatusCode != 200 || !strings.Contains(body, `"name":"Harbour"`) {
		t.Fatalf("GET in another casing: %d %s", res.StatusCode, body)
	}
	sidecarAddr := c.Nodes[0].SidecarAddr
	for _, tc := range []struct{ method, path string }{
		{"GET", `/api/room/HARBOUR/x%5C..%5C..%5COther`},
		{"GET", `/api/room/harbour/x%5c..%5c..%5cOther`},
		{"GET", `/api/room/HARBOUR/x\..\..\Other`},
		{"POST", `/api/room/HARBOUR/x%5C..%5C..%5Ccreate`},
		{"GET", `/api/x%5C..%5Croom%5COther`},
		{"GET", `/api/room/HARBOUR/%2e%2e/Other`},
	} {
		for _, at := range []struct {
			name, addr string
			hdr        []string
		}{{"router", r, nil}, {"sidecar", sidecarAddr, []string{contract.HeaderSecret, c.Secret}}} {
			res, body := doRaw(t, at.addr, tc.method, tc.path, at.hdr...)
			if res != 400 {
				t.Errorf("%s %s at the %s: %d %q, want 400", tc.method, tc.path, at.name, res, body)
			}
		}
	}
}

// doRaw sends a request with its path exactly as given (net/http would
// clean it) and returns the status and body.
func doRaw(t testing.TB, addr, method, path string, hdr ...string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := method + " " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nContent-Length: 0\r\nConnection: close\r\n"
	for i := 0; i+1 < len(hdr); i += 2 {
		req += hdr[i] + ": " + hdr[i+1] + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// Requests for rooms that do not exist leave nothing in Redis for long: an
// anonymous client looping over random names must not fill a Redis that
// evicts nothing (the recommended noeviction). The claim is released at
// once; its epoch counter expires after registry.ClaimEpochTTL.
func TestMissingRoomsLeaveNothingBehind(t *testing.T) {
	const most = registry.ClaimEpochTTL
	c, srv := start(t, 1, 1, nil)
	r := c.Routers[0].Addr
	for i := range 100 {
		res, _ := do(t, r, "GET", fmt.Sprintf("/api/room/nothing-%d", i), "")
		if res.StatusCode != 404 {
			t.Fatalf("GET a room that does not exist: %d, want 404", res.StatusCode)
		}
	}
	ctx := context.Background()
	rdb := srv.Client()
	var keys []string
	iter := rdb.Scan(ctx, 0, "roomlb:room:*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	for _, k := range keys {
		if left := rdb.PTTL(ctx, k).Val(); left < 0 || left > most {
			t.Errorf("%s lives %v after a request for a room that does not exist, want at most %v", k, left, most)
		}
	}
}

// One room's metadata cannot make /api/room/list big for every client: the
// registry keeps at most registry.MaxMetadata bytes of it.
func TestHugeTitleBoundedInTheList(t *testing.T) {
	c, _ := start(t, 1, 1, nil)
	r := c.Routers[0].Addr
	title := strings.Repeat("t", 900<<10)
	if res, body := do(t, r, "POST", "/api/room/create", `{"name":"Big","title":"`+title+`","isTemporary":true,"visibility":"public"}`); res.StatusCode != 200 {
		t.Fatalf("create: %d %.200s", res.StatusCode, body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, body := do(t, r, "GET", "/api/room/list", "")
		if res.StatusCode == 200 && strings.Contains(body, `"Big"`) {
			if len(body) > 2*registry.MaxMetadata {
				t.Fatalf("/api/room/list is %d bytes with one room, want at most about %d", len(body), registry.MaxMetadata)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the room never appeared in /api/room/list: %d %.300s", res.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A close frame whose payload is one byte (a close code takes two) is a
// protocol error: the client is answered with 1002 (RFC 6455 §5.5.1,
// §7.4.1), not with a close without a code, and nobody else is touched.
func TestOneByteCloseGets1002(t *testing.T) {
	c, _ := start(t, 1, 1, nil)
	r := c.Routers[0].Addr
	token := grant(t, r)
	if res, body := do(t, r, "POST", "/api/room/create", `{"name":"Closing","isTemporary":true}`); res.StatusCode != 200 {
		t.Fatalf("create: %d %s", res.StatusCode, body)
	}
	alice, err := join(t, r, "closing", token)
	if err != nil {
		t.Fatal(err)
	}
	alice.mustNext("you")
	mallory, err := join(t, r, "closing", token)
	if err != nil {
		t.Fatal(err)
	}
	mallory.mustNext("you")
	if err := mallory.Conn.WriteControl(websocket.CloseMessage, []byte{0x03}, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if code := mallory.CloseCode(5 * time.Second); code != 1002 {
		t.Fatalf("a close with a 1-byte payload was answered with %d, want 1002", code)
	}
	alice.chat("still here")
	if m, err := alice.next("chat", 5*time.Second); err != nil || m["text"] != "still here" {
		t.Fatalf("the room's other client is not served: %v %v", m, err)
	}
}
