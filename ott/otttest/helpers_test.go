package otttest_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/internal/redistest"
	"github.com/roomlb/roomlb/internal/wstest"
	"github.com/roomlb/roomlb/ott"
	"github.com/roomlb/roomlb/ott/otttest"
)

// wait bounds every wait for a message in these tests.
const wait = 5 * time.Second

// testConfig has short knobs; tests change what they need.
func testConfig(rdb *redis.Client, t testing.TB) otttest.Config {
	return otttest.Config{
		Redis:             rdb,
		Region:            "test",
		StateDebounce:     10 * time.Second,
		GossipInterval:    time.Minute,
		UnloadAfter:       time.Minute,
		KeepaliveInterval: 50 * time.Millisecond,
		TickInterval:      time.Hour, // TickNow drives the room tick
		InitTimeout:       wait,
		ShutdownDelay:     20 * time.Millisecond,
		Logger:            slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// start starts a monolith with a fresh Redis, stopped when the test ends.
func start(t *testing.T, edit func(*otttest.Config)) (*otttest.Monolith, *redis.Client) {
	t.Helper()
	rdb := redistest.New(t).Client()
	cfg := testConfig(rdb, t)
	if edit != nil {
		edit(&cfg)
	}
	m, err := otttest.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m, rdb
}

// balancer is a hand-written balancer end of one link.
type balancer struct {
	t    *testing.T
	id   string
	conn *websocket.Conn
	in   chan frame
	init ott.MonolithInit
	// closed after the reader stops; then closeErr says why
	done     chan struct{}
	closeErr error
}

type frame struct {
	raw []byte
	msg ott.M2B
}

// dial connects a balancer and reads the monolith's init, without sending
// its own.
func dial(t *testing.T, m *otttest.Monolith) *balancer {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+m.BalancerAddr()+"/any/path?x=1", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	b := &balancer{t: t, conn: conn, in: make(chan frame, 1000), done: make(chan struct{})}
	go b.read()
	t.Cleanup(func() { conn.Close(); <-b.done })
	msg := b.expect(ott.TypeInit)
	b.init = msg.Init
	return b
}

// connect dials and sends init with a fresh id, and reads the gossip that
// answers it.
func connect(t *testing.T, m *otttest.Monolith) *balancer {
	t.Helper()
	return connectAs(t, m, uuid.NewString())
}

func connectAs(t *testing.T, m *otttest.Monolith, id string) *balancer {
	t.Helper()
	b := dial(t, m)
	b.id = id
	b.send(ott.BalancerInit{ID: id})
	b.expect(ott.TypeGossip)
	return b
}

func (b *balancer) read() {
	defer close(b.done)
	defer close(b.in)
	for {
		_, raw, err := b.conn.ReadMessage()
		if err != nil {
			b.closeErr = err
			return
		}
		msg, err := ott.DecodeM2B(raw)
		if err != nil {
			b.t.Errorf("monolith sent an invalid message %s: %v", raw, err)
			continue
		}
		b.in <- frame{raw, msg}
	}
}

func (b *balancer) send(msg interface{ Append([]byte) []byte }) {
	b.t.Helper()
	b.sendRaw(msg.Append(nil))
}

func (b *balancer) sendRaw(raw []byte) {
	b.t.Helper()
	if err := b.conn.WriteMessage(websocket.TextMessage, raw); err != nil {
		b.t.Fatalf("send %s: %v", raw, err)
	}
}

// next returns the next message, failing the test after wait.
func (b *balancer) next() frame {
	b.t.Helper()
	select {
	case f, ok := <-b.in:
		if !ok {
			b.t.Fatalf("link closed while waiting for a message: %v", b.closeErr)
		}
		return f
	case <-time.After(wait):
		b.t.Fatalf("no message within %v", wait)
	}
	panic("unreachable")
}

// expect returns the next message, which must be of type typ.
func (b *balancer) expect(typ ott.Type) ott.M2B {
	b.t.Helper()
	f := b.next()
	if f.msg.Type != typ {
		b.t.Fatalf("got %s, want a %s", f.raw, typ)
	}
	return f.msg
}

// expectRoomMsg returns the next message, which must be a room_msg for the
// room with the action, unicast to client or (client "") a broadcast.
func (b *balancer) expectRoomMsg(room, client, action string) map[string]json.RawMessage {
	b.t.Helper()
	f := b.next()
	rm := f.msg.RoomMsg
	if f.msg.Type != ott.TypeRoomMsg || rm.Room != room || rm.ClientID != client || actionOf(rm.Payload) != action {
		b.t.Fatalf("got %s, want a room_msg %q for room %q client %q", f.raw, action, room, client)
	}
	var p map[string]json.RawMessage
	json.Unmarshal(rm.Payload, &p)
	return p
}

// skipUntil drops messages until one of type typ (and, for a room_msg, the
// action) arrives.
func (b *balancer) skipUntil(typ ott.Type, action string) ott.M2B {
	b.t.Helper()
	for {
		f := b.next()
		if f.msg.Type == typ && (typ != ott.TypeRoomMsg || actionOf(f.msg.RoomMsg.Payload) == action) {
			return f.msg
		}
	}
}

// quiet checks that nothing arrives for d.
func (b *balancer) quiet(d time.Duration) {
	b.t.Helper()
	select {
	case f, ok := <-b.in:
		if ok {
			b.t.Fatalf("got %s, want nothing", f.raw)
		}
	case <-time.After(d):
	}
}

// drain drops whatever arrives for d.
func (b *balancer) drain(d time.Duration) {
	b.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case _, ok := <-b.in:
			if !ok {
				return
			}
		case <-deadline:
			return
		}
	}
}

// closed waits for the link to end and returns the close error.
func (b *balancer) closed() error {
	b.t.Helper()
	for {
		select {
		case f, ok := <-b.in:
			if !ok {
				return b.closeErr
			}
			b.t.Logf("before the close: %s", f.raw)
		case <-time.After(wait):
			b.t.Fatalf("link still open after %v", wait)
		}
	}
}

// join joins a new client and reads the six messages of the join sequence
// (the balancer must have no other client in the room, so that the
// broadcasts come once). It returns the client id.
func (b *balancer) join(room, canonical, token string) string {
	b.t.Helper()
	id := uuid.NewString()
	b.send(ott.Join{Room: room, Client: id, Token: token})
	b.expectJoinSequence(canonical, id)
	return id
}

func (b *balancer) expectJoinSequence(room, id string) {
	b.t.Helper()
	for {
		// A room that was just loaded has a debounced sync on its way.
		f := b.next()
		if f.msg.Type == ott.TypeLoaded {
			continue
		}
		if f.msg.Type == ott.TypeRoomMsg && f.msg.RoomMsg.ClientID == id {
			if p := payloadOf(f.msg); actionOf(f.msg.RoomMsg.Payload) == "sync" && p["name"] != nil {
				break
			}
		}
		b.t.Fatalf("got %s, want the full sync of a join", f.raw)
	}
	b.expectRoomMsg(room, "", "event")
	b.expectRoomMsg(room, "", "sync")
	b.expectRoomMsg(room, "", "user")
	b.expectRoomMsg(room, id, "user")
	b.expectRoomMsg(room, id, "you")
}

func actionOf(payload []byte) string {
	var v struct {
		Action string `json:"action"`
	}
	json.Unmarshal(payload, &v)
	return v.Action
}

func payloadOf(m ott.M2B) map[string]json.RawMessage {
	var p map[string]json.RawMessage
	json.Unmarshal(m.RoomMsg.Payload, &p)
	return p
}

func clientMsg(id, payload string) ott.ClientMsg {
	return ott.ClientMsg{ClientID: id, Payload: json.RawMessage(payload)}
}

// session puts a session in Redis and returns its token.
func session(t *testing.T, rdb *redis.Client, username string) string {
	t.Helper()
	token := "tok-" + uuid.NewString()
	s := `{"isLoggedIn":false,"username":"` + username + `"}`
	if err := rdb.Set(context.Background(), "auth:"+token, s, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	return token
}

// createSettled creates a room over HTTP, reads its loaded on b and waits
// until the sync a new room sends 50 ms after loading has gone (to nobody).
func createSettled(t *testing.T, m *otttest.Monolith, b *balancer, body string) ott.Loaded {
	t.Helper()
	createRoom(t, m, body)
	l := b.expect(ott.TypeLoaded).Loaded
	time.Sleep(100 * time.Millisecond)
	return l
}

// createRoom creates a room over HTTP.
func createRoom(t *testing.T, m *otttest.Monolith, body string) {
	t.Helper()
	status, resp := httpDo(t, m, http.MethodPost, "/api/room/create", body)
	if status != http.StatusOK {
		t.Fatalf("create %s: %d %s", body, status, resp)
	}
}

func httpDo(t *testing.T, m *otttest.Monolith, method, path, body string) (int, string) {
	t.Helper()
	res, b := wstest.Do(t, m.HTTPAddr(), method, path, body)
	return res.StatusCode, b
}

// eventually polls cond every 10 ms until it holds, failing after wait.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wstest.WaitFor(t, wait, what, cond)
}

func closeCode(err error) (int, string) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Text
	}
	return 0, ""
}

// writtenRoom is a monolith whose StateDebounce is debounce with one balancer
// connected, and a room created, joined by one client (id, with token) and
// written to Redis once.
type writtenRoom struct {
	m     *otttest.Monolith
	rdb   *redis.Client
	b     *balancer
	id    string
	token string
}

// startWritten creates room name and waits for its first state write.
func startWritten(t *testing.T, debounce time.Duration, name string) writtenRoom {
	t.Helper()
	m, rdb := start(t, func(c *otttest.Config) { c.StateDebounce = debounce })
	token := session(t, rdb, "u")
	b := connect(t, m)
	createRoom(t, m, `{"name":"`+name+`"}`)
	b.expect(ott.TypeLoaded)
	id := b.join(strings.ToLower(name), name, token)
	// The first write comes StateDebounce after the sync that follows the
	// load; after it nothing is pending.
	eventually(t, "room:"+name+" written", func() bool { return rdb.Exists(context.Background(), "room:"+name).Val() == 1 })
	return writtenRoom{m: m, rdb: rdb, b: b, id: id, token: token}
}
