package otttest_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/roomlb/roomlb/ott"
	"github.com/roomlb/roomlb/ott/otttest"
)

func TestHandshake(t *testing.T) {
	m, _ := start(t, func(c *otttest.Config) {
		c.GossipInterval = 300 * time.Millisecond
		c.InitTimeout = 300 * time.Millisecond
	})
	b := dial(t, m)
	_, port, _ := net.SplitHostPort(m.HTTPAddr())
	if got := b.init; strconv.Itoa(got.Port) != port || got.Region != "test" || got.ID != m.ID() {
		t.Errorf("init = %+v, want port %s, region test, id %s", got, port, m.ID())
	}
	if _, err := uuid.Parse(m.ID()); err != nil {
		t.Errorf("id %q: %v", m.ID(), err)
	}

	// Before init everything is dropped, even what would load a room.
	b.send(ott.Load{Room: "nothing"})
	b.sendRaw([]byte(`not json`))
	eventually(t, "load received", func() bool { return m.Received("load") == 1 && m.Received("invalid") == 1 })

	b.send(ott.BalancerInit{ID: "b1"})
	if g := b.expect(ott.TypeGossip); len(g.Gossip.Rooms) != 0 {
		t.Errorf("first gossip = %+v, want no rooms", g.Gossip)
	}
	// Invalid messages are dropped, the link stays.
	b.sendRaw([]byte(`{"type":"load","payload":{"room":5}}`))
	b.sendRaw([]byte(`{"type":"fly","payload":{}}`))
	// A second init only replaces the id: no gossip at once.
	b.send(ott.BalancerInit{ID: "b2"})
	start := time.Now()
	b.expect(ott.TypeGossip) // the periodic one
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("gossip %v after the second init, want the periodic one", d)
	}
	b.expect(ott.TypeGossip)
	if got := m.Received("invalid"); got != 3 {
		t.Errorf("Received(invalid) = %d, want 3", got)
	}

	// A balancer that does not send init is closed with 1002.
	silent := dial(t, m)
	code, text := closeCode(silent.closed())
	if code != 1002 || text != "Balancer did not send init message" {
		t.Errorf("close = %d %q, want 1002 Balancer did not send init message", code, text)
	}
	eventually(t, "one link left", func() bool { return m.Links() == 1 })

	// A plain GET on the balancer port gets 426.
	resp, err := http.Get("http://" + m.BalancerAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("GET balancer port: %d, want 426", resp.StatusCode)
	}
}

func TestJoinSequence(t *testing.T) {
	m, rdb := start(t, nil)
	b := connect(t, m)
	createRoom(t, m, `{"name":"MovieNight","title":"Friday films","isTemporary":false}`)
	loaded := b.expect(ott.TypeLoaded).Loaded
	if loaded.LoadEpoch != 1 || loaded.Room.Name != "MovieNight" || loaded.Room.Title != "Friday films" || loaded.Room.IsTemporary {
		t.Errorf("loaded = %+v, want MovieNight epoch 1", loaded)
	}
	token := session(t, rdb, "brave_teal_otter")

	// Another casing: every room_msg carries the canonical name.
	id := uuid.NewString()
	b.send(ott.Join{Room: "movienight", Client: id, Token: token})
	sync := b.expectRoomMsg("MovieNight", id, "sync")
	var keys []string
	for _, k := range []string{"name", "title", "description", "isTemporary", "visibility", "queueMode", "currentSource", "queue", "isPlaying", "playbackPosition", "playbackSpeed", "grants", "hasOwner", "voteCounts", "videoSegments", "autoSkipSegmentCategories", "prevQueue", "restoreQueueBehavior", "enableVoteSkip", "votesToSkip"} {
		if sync[k] == nil {
			keys = append(keys, k)
		}
	}
	if len(keys) > 0 {
		t.Errorf("full sync lacks %v", keys)
	}
	event := b.expectRoomMsg("MovieNight", "", "event")
	if got := string(event["request"]); !strings.HasPrefix(got, `{"type":0,"info":{"id":"`+id+`","name":"brave_teal_otter"`) {
		t.Errorf("join event request = %s", got)
	}
	if pos := b.expectRoomMsg("MovieNight", "", "sync"); len(pos) != 2 || pos["playbackPosition"] == nil {
		t.Errorf("second sync = %v, want only playbackPosition", pos)
	}
	if u := b.expectRoomMsg("MovieNight", "", "user"); !strings.Contains(string(u["update"]), `"kind":"update"`) {
		t.Errorf("user broadcast = %s", u["update"])
	}
	if u := b.expectRoomMsg("MovieNight", id, "user"); !strings.Contains(string(u["update"]), `"kind":"init","value":[{"id":"`+id) {
		t.Errorf("user unicast = %s", u["update"])
	}
	if you := b.expectRoomMsg("MovieNight", id, "you"); string(you["info"]) != `{"id":"`+id+`"}` {
		t.Errorf("you = %s", you["info"])
	}
	if rooms := m.Rooms(); len(rooms) != 1 || rooms[0].Clients != 1 || rooms[0].Instances != 1 || rooms[0].LoadEpoch != 1 {
		t.Errorf("Rooms = %+v", rooms)
	}

	// Failures are kicks.
	for _, tc := range []struct {
		name, room, token string
		code              int
	}{
		{"no token", "MovieNight", "", ott.CloseMissingToken},
		{"unknown token", "MovieNight", "nope", ott.CloseMissingToken},
		{"unknown room", "nowhere", token, ott.CloseRoomNotFound},
	} {
		cid := uuid.NewString()
		b.send(ott.Join{Room: tc.room, Client: cid, Token: tc.token})
		// Skip the broadcast sync the new room sends 50 ms after loading.
		if k := b.skipUntil(ott.TypeKick, "").Kick; k.ClientID != cid || k.Reason != tc.code {
			t.Errorf("%s: kick %+v, want %d", tc.name, k, tc.code)
		}
	}
	if got := m.Received("join"); got != 4 {
		t.Errorf("Received(join) = %d, want 4", got)
	}
}

func TestLoadFromRedisAndDatabase(t *testing.T) {
	m, rdb := start(t, nil)
	ctx := context.Background()
	b := connect(t, m)
	rdb.Set(ctx, "room:Stored", `{"name":"Stored","title":"from redis","isTemporary":true,"queue":[{"service":"direct","id":"a"}],"playbackPosition":7}`, 0)
	rdb.HSet(ctx, otttest.RefDBKey, "dbroom", `{"name":"DbRoom","title":"from db","description":"","visibility":"unlisted","queueMode":"vote"}`)
	rdb.Set(ctx, otttest.LoadEpochKey, 41, 0)

	b.send(ott.Load{Room: "Stored"})
	l := b.expect(ott.TypeLoaded).Loaded
	if l.LoadEpoch != 42 || l.Room.Name != "Stored" || l.Room.Title != "from redis" || !l.Room.IsTemporary {
		t.Errorf("loaded = %+v", l)
	}
	// Loaded rooms: nothing more.
	b.send(ott.Load{Room: "STORED"})
	// Database: any casing.
	b.send(ott.Load{Room: "DBROOM"})
	l = b.skipUntil(ott.TypeLoaded, "").Loaded
	if l.LoadEpoch != 43 || l.Room.Name != "DbRoom" || l.Room.Visibility != "unlisted" || l.Room.IsTemporary {
		t.Errorf("loaded = %+v", l)
	}
	// Unknown rooms: nothing at all.
	b.send(ott.Load{Room: "nowhere"})
	b.quiet(100 * time.Millisecond)
	if got := string(m.State("stored")); !strings.Contains(got, `"queue":[{"service":"direct","id":"a"}]`) || !strings.Contains(got, `"playbackPosition":7`) {
		t.Errorf("State(stored) = %s", got)
	}
	if m.State("nowhere") != nil {
		t.Errorf("State of an unknown room is not nil")
	}

	// A join loads too: loaded comes before the first room_msg.
	rdb.HSet(ctx, otttest.RefDBKey, "joinme", `{"name":"JoinMe","title":"","description":"","visibility":"public","queueMode":"manual"}`)
	token := session(t, rdb, "u")
	id := uuid.NewString()
	b.send(ott.Join{Room: "joinme", Client: id, Token: token})
	if l := b.expect(ott.TypeLoaded).Loaded; l.Room.Name != "JoinMe" || l.LoadEpoch != 44 {
		t.Errorf("loaded = %+v", l)
	}
	b.expectJoinSequence("JoinMe", id)
}

func TestChatBroadcastOnePerLink(t *testing.T) {
	m, rdb := start(t, nil)
	token := session(t, rdb, "u")
	a := connect(t, m)
	createSettled(t, m, a, `{"name":"chatroom"}`)
	bb := connect(t, m)
	idle := connect(t, m)

	a1 := a.join("chatroom", "chatroom", token)
	b1 := bb.join("ChatRoom", "chatroom", token)
	// a saw b1's join broadcasts: event, sync, user.
	a.expectRoomMsg("chatroom", "", "event")
	a.expectRoomMsg("chatroom", "", "sync")
	a.expectRoomMsg("chatroom", "", "user")
	// A second client on a: the broadcasts still come once per link.
	a.send(ott.Join{Room: "chatroom", Client: "a2", Token: token})
	a.expectJoinSequence("chatroom", "a2")
	for range 3 {
		bb.next()
	}
	a.quiet(50 * time.Millisecond)
	bb.quiet(0)

	sent := m.Sent("room_msg")
	a.send(clientMsg(a1, `{"action":"req","request":{"type":11,"text":"hi all"}}`))
	for _, l := range []*balancer{a, bb} {
		chat := l.expectRoomMsg("chatroom", "", "chat")
		if string(chat["text"]) != `"hi all"` || !strings.Contains(string(chat["from"]), `"id":"`+a1+`"`) {
			t.Errorf("chat = %v", chat)
		}
		l.quiet(50 * time.Millisecond)
	}
	idle.quiet(0)
	if got := m.Sent("room_msg") - sent; got != 2 {
		t.Errorf("room_msgs for one chat = %d, want 2 (one per link with members)", got)
	}
	if got := m.Received("client_msg"); got != 1 {
		t.Errorf("Received(client_msg) = %d", got)
	}

	// Leave: the leaver is removed before the broadcasts, so b (whose only
	// client left) hears nothing; a gets event + user remove.
	bb.send(ott.Leave{Client: b1})
	ev := a.expectRoomMsg("chatroom", "", "event")
	if !strings.HasPrefix(string(ev["request"]), `{"type":1`) {
		t.Errorf("leave event = %v", ev)
	}
	if u := a.expectRoomMsg("chatroom", "", "user"); string(u["update"]) != `{"kind":"remove","value":"`+b1+`"}` {
		t.Errorf("remove = %s", u["update"])
	}
	bb.quiet(50 * time.Millisecond)
	// Unknown client: only a log.
	bb.send(ott.Leave{Client: b1})
	a.quiet(50 * time.Millisecond)
}

func TestBroadcastGoesToFirstLinkWithID(t *testing.T) {
	m, rdb := start(t, nil)
	token := session(t, rdb, "u")
	first := connectAs(t, m, "same-id")
	createSettled(t, m, first, `{"name":"collide"}`)
	second := connectAs(t, m, "same-id")
	first.join("collide", "collide", token)

	id := uuid.NewString()
	second.send(ott.Join{Room: "collide", Client: id, Token: token})
	// The unicasts come on the second link, the broadcasts on the first.
	second.expectRoomMsg("collide", id, "sync")
	second.expectRoomMsg("collide", id, "user")
	second.expectRoomMsg("collide", id, "you")
	first.expectRoomMsg("collide", "", "event")
	first.expectRoomMsg("collide", "", "sync")
	first.expectRoomMsg("collide", "", "user")
	second.send(clientMsg(id, `{"action":"req","request":{"type":11,"text":"lost"}}`))
	first.expectRoomMsg("collide", "", "chat")
	second.quiet(50 * time.Millisecond)
}

func TestDuplicateLoadRace(t *testing.T) {
	m, rdb := start(t, func(c *otttest.Config) { c.LoadDelay = 200 * time.Millisecond })
	rdb.Set(context.Background(), "room:dup", `{"name":"dup"}`, 0)
	b := connect(t, m)
	b.send(ott.Load{Room: "dup"})
	b.send(ott.Load{Room: "dup"})
	l1 := b.expect(ott.TypeLoaded).Loaded
	l2 := b.expect(ott.TypeLoaded).Loaded
	if l1.LoadEpoch != l2.LoadEpoch {
		t.Errorf("loaded epochs %d, %d: want both the first instance's", l1.LoadEpoch, l2.LoadEpoch)
	}
	rooms := m.Rooms()
	if len(rooms) != 1 || rooms[0].Instances != 2 || len(rooms[0].Epochs) != 2 || rooms[0].Epochs[0] == rooms[0].Epochs[1] {
		t.Fatalf("Rooms = %+v, want one name with two instances", rooms)
	}

	b.send(ott.BalancerInit{ID: b.id}) // no gossip: ask for one with a new link
	g := connectGossip(t, m)
	if len(g.Rooms) != 2 || g.Rooms[0].Room.Name != "dup" || g.Rooms[1].Room.Name != "dup" || g.Rooms[0].LoadEpoch == g.Rooms[1].LoadEpoch {
		t.Errorf("gossip = %+v, want dup twice with different epochs", g.Rooms)
	}

	// unload removes the first instance only.
	b.send(ott.Unload{Room: "DUP"})
	if u := b.expect(ott.TypeUnloaded).Unloaded; u.Name != "dup" || u.Reason != ott.UnloadCommanded {
		t.Errorf("unloaded = %+v", u)
	}
	if rooms := m.Rooms(); len(rooms) != 1 || rooms[0].Instances != 1 || rooms[0].LoadEpoch != g.Rooms[1].LoadEpoch {
		t.Errorf("after unload Rooms = %+v, want the second instance", rooms)
	}
}

// connectGossip opens a link and returns the gossip that answers its init.
func connectGossip(t *testing.T, m *otttest.Monolith) ott.Gossip {
	t.Helper()
	b := dial(t, m)
	b.send(ott.BalancerInit{ID: uuid.NewString()})
	return b.expect(ott.TypeGossip).Gossip
}

func TestUnloadOfUnloadedRoomCrashes(t *testing.T) {
	m, _ := start(t, nil)
	b := connect(t, m)
	other := connect(t, m)
	b.send(ott.Unload{Room: "never-loaded"})
	for _, l := range []*balancer{b, other} {
		// 1006: the connection ended without a close frame.
		if code, _ := closeCode(l.closed()); code != 1006 {
			t.Errorf("link closed with %d, want a dropped connection (1006)", code)
		}
	}
	if !m.Crashed() {
		t.Errorf("Crashed = false")
	}
	if _, err := http.Get("http://" + m.HTTPAddr() + "/api/status"); err == nil {
		t.Errorf("HTTP still answers after the crash")
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close after crash: %v", err)
	}
}

func TestUnloadCommanded(t *testing.T) {
	const debounce = 400 * time.Millisecond
	w := startWritten(t, debounce, "ProbeRoom")
	m, rdb, b, id, token := w.m, w.rdb, w.b, w.id, w.token
	ctx := context.Background()
	if ttl := rdb.TTL(ctx, "room:ProbeRoom").Val(); ttl < 7100*time.Second || ttl > 7200*time.Second {
		t.Errorf("TTL = %v, want EX 7200", ttl)
	}
	written := rdb.Get(ctx, "room:ProbeRoom").Val()

	// A change, then unload before the debounce: the instance is gone at
	// once, its pending write is not: it lands StateDebounce after the
	// change's sync.
	changed := time.Now()
	b.send(clientMsg(id, `{"action":"req","request":{"type":4,"value":42.5}}`))
	b.skipUntil(ott.TypeRoomMsg, "event")
	b.send(ott.Unload{Room: "PROBEROOM"})
	if k := b.skipUntil(ott.TypeKick, "").Kick; k.ClientID != id || k.Reason != ott.CloseAway {
		t.Errorf("kick = %+v, want 1001", k)
	}
	if u := b.expect(ott.TypeUnloaded).Unloaded; u.Name != "ProbeRoom" || u.Reason != ott.UnloadCommanded {
		t.Errorf("unloaded = %+v", u)
	}
	if rooms := m.Rooms(); len(rooms) != 0 {
		t.Errorf("Rooms = %+v after the unload, want none", rooms)
	}
	if got := rdb.Get(ctx, "room:ProbeRoom").Val(); got != written {
		t.Errorf("room:ProbeRoom = %s right after the unload, want the state before the change %s", got, written)
	}
	eventually(t, "the kept write", func() bool {
		return strings.Contains(rdb.Get(ctx, "room:ProbeRoom").Val(), `"playbackPosition":42.5`)
	})
	if d := time.Since(changed); d < debounce+50*time.Millisecond {
		t.Errorf("the kept write landed %v after the change, want at least StateDebounce+50ms", d)
	}
	b.quiet(100 * time.Millisecond)
	// The key is case-sensitive (§8 item 1): another casing is not found.
	cid := uuid.NewString()
	b.send(ott.Join{Room: "proberoom", Client: cid, Token: token})
	if k := b.expect(ott.TypeKick).Kick; k.Reason != ott.CloseRoomNotFound {
		t.Errorf("kick = %+v, want 4002", k)
	}
	// The exact casing loads it from Redis, with a new epoch.
	b.send(ott.Load{Room: "ProbeRoom"})
	if l := b.expect(ott.TypeLoaded).Loaded; l.LoadEpoch != 2 {
		t.Errorf("reload epoch = %d, want 2", l.LoadEpoch)
	}
	if !strings.Contains(string(m.State("ProbeRoom")), `"playbackPosition":42.5`) {
		t.Errorf("reloaded state = %s, want the change", m.State("ProbeRoom"))
	}
	if m.Sent("kick") != 2 || m.Sent("unloaded") != 1 || m.Sent("loaded") != 2 {
		t.Errorf("Sent kick %d unloaded %d loaded %d", m.Sent("kick"), m.Sent("unloaded"), m.Sent("loaded"))
	}
}

// A change right before a commanded unload, its sync still due: the sync
// fires after the unload and starts the write. A new instance loaded
// before that write lands starts from the older state and is overwritten by
// the old instance's write, until its own first write (a real flaw).
func TestUnloadCommandedLateWrite(t *testing.T) {
	const debounce = time.Second
	// After the first write nothing is pending.
	w := startWritten(t, debounce, "Late")
	m, rdb, b, id := w.m, w.rdb, w.b, w.id
	ctx := context.Background()
	written := rdb.Get(ctx, "room:Late").Val()

	// The change and the unload back to back: the unload comes within the
	// 50 ms before the change's sync.
	changed := time.Now()
	b.send(clientMsg(id, `{"action":"req","request":{"type":4,"value":7.5}}`))
	b.send(ott.Unload{Room: "Late"})
	b.skipUntil(ott.TypeKick, "")
	if u := b.expect(ott.TypeUnloaded).Unloaded; u.Name != "Late" || u.Reason != ott.UnloadCommanded {
		t.Errorf("unloaded = %+v", u)
	}
	// A new instance, loaded before the old one's write lands: it has the
	// older state.
	time.Sleep(300 * time.Millisecond)
	if got := rdb.Get(ctx, "room:Late").Val(); got != written {
		t.Fatalf("room:Late = %s before the reload, want the state before the change", got)
	}
	b.send(ott.Load{Room: "Late"})
	if l := b.expect(ott.TypeLoaded).Loaded; l.LoadEpoch != 2 {
		t.Errorf("reload epoch = %d, want 2", l.LoadEpoch)
	}
	if st := string(m.State("Late")); strings.Contains(st, `"playbackPosition":7.5`) {
		t.Fatalf("new instance state = %s, want the state before the change", st)
	}
	// The old instance's write: sync (50 ms), then StateDebounce.
	eventually(t, "the old instance's late write", func() bool {
		return strings.Contains(rdb.Get(ctx, "room:Late").Val(), `"playbackPosition":7.5`)
	})
	if d := time.Since(changed); d < debounce+50*time.Millisecond {
		t.Errorf("the late write landed %v after the change, want at least StateDebounce+50ms", d)
	}
	if st := string(m.State("Late")); strings.Contains(st, `"playbackPosition":7.5`) {
		t.Errorf("new instance state = %s, want it untouched by the late write", st)
	}
	// The new instance's first write puts its older state back.
	eventually(t, "the new instance's first write", func() bool {
		return !strings.Contains(rdb.Get(ctx, "room:Late").Val(), `"playbackPosition":7.5`)
	})
}

func TestStateDebounce(t *testing.T) {
	m, rdb := start(t, func(c *otttest.Config) {
		c.StateDebounce = 300 * time.Millisecond
		c.RoomExpire = 100 * time.Second
	})
	ctx := context.Background()
	token := session(t, rdb, "u")
	b := connect(t, m)
	createRoom(t, m, `{"name":"debounced"}`)
	created := time.Now()
	b.expect(ott.TypeLoaded)
	if rdb.Exists(ctx, "room:debounced").Val() != 0 {
		t.Fatalf("room:debounced exists at once")
	}
	id := b.join("debounced", "debounced", token)
	// Changes push the write back: seek every 100 ms for 500 ms.
	for i := range 5 {
		b.send(clientMsg(id, `{"action":"req","request":{"type":4,"value":`+strconv.Itoa(i+1)+`}}`))
		time.Sleep(100 * time.Millisecond)
	}
	if rdb.Exists(ctx, "room:debounced").Val() != 0 {
		t.Fatalf("room:debounced written %v after creation, with changes all along", time.Since(created))
	}
	eventually(t, "state written", func() bool {
		return strings.Contains(rdb.Get(ctx, "room:debounced").Val(), `"playbackPosition":5`)
	})
	if ttl := rdb.TTL(ctx, "room:debounced").Val(); ttl < 90*time.Second || ttl > 100*time.Second {
		t.Errorf("TTL = %v, want EX 100", ttl)
	}
	var st map[string]json.RawMessage
	if err := json.Unmarshal([]byte(rdb.Get(ctx, "room:debounced").Val()), &st); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "title", "description", "isTemporary", "visibility", "queueMode", "currentSource", "queue", "isPlaying", "playbackPosition", "playbackSpeed", "grants", "userRoles", "owner", "_playbackStart", "videoSegments", "autoSkipSegmentCategories", "prevQueue", "restoreQueueBehavior", "enableVoteSkip"} {
		if st[k] == nil {
			t.Errorf("stored state lacks %s", k)
		}
	}
}

func TestRequests(t *testing.T) {
	m, rdb := start(t, nil)
	token := session(t, rdb, "u")
	b := connect(t, m)
	createSettled(t, m, b, `{"name":"requests"}`)
	id := b.join("requests", "requests", token)

	b.send(clientMsg(id, `{"action":"req","request":{"type":5,"video":{"service":"youtube","id":"v1","length":600}}}`))
	b.skipUntil(ott.TypeRoomMsg, "event")
	b.send(clientMsg(id, `{"action":"req","request":{"type":5,"url":"https://x/v2.mp4"}}`))
	b.skipUntil(ott.TypeRoomMsg, "event")
	b.send(clientMsg(id, `{"action":"req","request":{"type":2,"state":true}}`))
	b.skipUntil(ott.TypeRoomMsg, "event")
	b.drain(100 * time.Millisecond) // the syncs
	// Adding only queues: the player stays empty until the next tick.
	st := string(m.State("requests"))
	if !strings.Contains(st, `"currentSource":null`) || !strings.Contains(st, `"queue":[{"service":"youtube","id":"v1","length":600},{"service":"direct","id":"https://x/v2.mp4"}]`) || !strings.Contains(st, `"isPlaying":true`) {
		t.Errorf("state = %s", st)
	}
	m.TickNow()
	if sync := b.expectRoomMsg("requests", "", "sync"); string(sync["currentSource"]) != `{"service":"youtube","id":"v1","length":600}` {
		t.Errorf("sync of the tick = %v", sync)
	}
	st = string(m.State("requests"))
	if !strings.Contains(st, `"queue":[{"service":"direct","id":"https://x/v2.mp4"}]`) || !strings.Contains(st, `"isPlaying":true`) {
		t.Errorf("state = %s", st)
	}
	b.quiet(100 * time.Millisecond) // the debounced sync finds nothing left
	b.send(clientMsg(id, `{"action":"req","request":{"type":6,"video":{"service":"direct","id":"https://x/v2.mp4"}}}`))
	b.expectRoomMsg("requests", "", "event")
	if sync := b.expectRoomMsg("requests", "", "sync"); string(sync["queue"]) != "[]" || len(sync) != 2 {
		t.Errorf("sync after remove = %v, want the queue only", sync)
	}
	b.send(clientMsg(id, `{"action":"status","status":"ready"}`))
	if u := b.skipUntil(ott.TypeRoomMsg, "user"); !strings.Contains(string(u.RoomMsg.Payload), `"status":"ready"`) {
		t.Errorf("status update = %s", u.RoomMsg.Payload)
	}
	// Ignored: unknown request types, bad values, unknown actions, arrays, auth.
	for _, p := range []string{
		`{"action":"req","request":{"type":99}}`,
		`{"action":"req","request":{"type":11,"text":5}}`,
		`{"action":"req","request":"x"}`,
		`{"action":"dance"}`, `[1,2]`, `{"action":"auth","token":"t"}`,
	} {
		b.send(clientMsg(id, p))
	}
	b.quiet(100 * time.Millisecond)
	if !strings.Contains(string(m.State("requests")), `"queue":[]`) {
		t.Errorf("state after remove = %s", m.State("requests"))
	}

	// kickme: the reason is echoed unvalidated, 4000 without one; null
	// payloads and null requests get 4000.
	for _, tc := range []struct{ payload, reason string }{
		{`{"action":"kickme","reason":70000}`, `70000`},
		{`{"action":"kickme"}`, `4000`},
		{`{"action":"kickme","reason":"bye"}`, `"bye"`},
		{`null`, `4000`},
		{`{"action":"req"}`, `4000`},
	} {
		cid := b.join("requests", "requests", token)
		b.send(clientMsg(cid, tc.payload))
		f := b.next()
		want := `{"type":"kick","payload":{"client_id":"` + cid + `","reason":` + tc.reason + `}}`
		if string(f.raw) != want {
			t.Errorf("%s: got %s, want %s", tc.payload, f.raw, want)
		}
		// The kicked client has left: the others hear it.
		b.expectRoomMsg("requests", "", "event")
		b.expectRoomMsg("requests", "", "user")
	}
}

// The room tick, driven here by TickNow: the real Room.update, then a sync
// at once. An empty player takes the next queued video (adding only
// queues); a playing video ends once its position is past endAt ?? length
// ?? 0, so at the first tick after it began without either. A skip with
// nothing playing does nothing.
func TestTick(t *testing.T) {
	m, rdb := start(t, nil)
	token := session(t, rdb, "u")
	b := connect(t, m)
	createSettled(t, m, b, `{"name":"ticker"}`)
	id := b.join("ticker", "ticker", token)
	req := func(r string) { b.send(clientMsg(id, `{"action":"req","request":`+r+`}`)) }
	fields := func(p map[string]json.RawMessage) string {
		return strings.Join(slices.Sorted(maps.Keys(p)), " ")
	}

	// Nothing to do: no sync, and a skip does nothing at all.
	m.TickNow()
	req(`{"type":3}`)
	b.quiet(100 * time.Millisecond)

	req(`{"type":5,"video":{"service":"direct","id":"a"}}`)
	b.expectRoomMsg("ticker", "", "event")
	if sync := b.expectRoomMsg("ticker", "", "sync"); fields(sync) != "action queue" {
		t.Errorf("sync after add = %v, want the queue only", sync)
	}
	if st := string(m.State("ticker")); !strings.Contains(st, `"currentSource":null`) {
		t.Errorf("state after add = %s, want an empty player", st)
	}
	m.TickNow()
	sync := b.expectRoomMsg("ticker", "", "sync")
	if fields(sync) != "action currentSource playbackPosition playbackSpeed queue" || string(sync["currentSource"]) != `{"service":"direct","id":"a"}` || string(sync["queue"]) != "[]" {
		t.Errorf("sync of the tick = %v", sync)
	}
	b.quiet(100 * time.Millisecond) // the debounced sync finds nothing left
	// Paused, it stays.
	m.TickNow()
	b.quiet(50 * time.Millisecond)
	// Playing without a length, it ends at the next tick: the queue is
	// empty, so the player empties and stops.
	req(`{"type":2,"state":true}`)
	b.expectRoomMsg("ticker", "", "event")
	b.expectRoomMsg("ticker", "", "sync")
	time.Sleep(5 * time.Millisecond)
	m.TickNow()
	sync = b.expectRoomMsg("ticker", "", "sync")
	if fields(sync) != "action currentSource isPlaying playbackPosition playbackSpeed" || string(sync["currentSource"]) != "null" || string(sync["isPlaying"]) != "false" {
		t.Errorf("sync of the end = %v", sync)
	}

	// A length keeps it playing; endAt comes before the length.
	req(`{"type":5,"video":{"service":"direct","id":"long","length":600}}`)
	b.expectRoomMsg("ticker", "", "event")
	b.expectRoomMsg("ticker", "", "sync")
	req(`{"type":5,"video":{"service":"direct","id":"cut","length":600,"endAt":0}}`)
	b.expectRoomMsg("ticker", "", "event")
	b.expectRoomMsg("ticker", "", "sync")
	req(`{"type":2,"state":true}`)
	b.expectRoomMsg("ticker", "", "event")
	b.expectRoomMsg("ticker", "", "sync")
	m.TickNow()
	if sync := b.expectRoomMsg("ticker", "", "sync"); string(sync["currentSource"]) != `{"service":"direct","id":"long","length":600}` {
		t.Errorf("sync of the tick = %v", sync)
	}
	time.Sleep(5 * time.Millisecond)
	m.TickNow()
	b.quiet(100 * time.Millisecond)
	// A skip plays the next one at once.
	req(`{"type":3}`)
	ev := b.expectRoomMsg("ticker", "", "event")
	var additional struct {
		Video        json.RawMessage
		PrevPosition float64
	}
	if err := json.Unmarshal(ev["additional"], &additional); err != nil || string(additional.Video) != `{"service":"direct","id":"long","length":600}` || additional.PrevPosition <= 0 {
		t.Errorf("skip event additional = %s", ev["additional"])
	}
	sync = b.expectRoomMsg("ticker", "", "sync")
	if fields(sync) != "action currentSource playbackPosition playbackSpeed queue videoSegments" || !strings.Contains(string(sync["currentSource"]), `"id":"cut"`) {
		t.Errorf("sync after skip = %v", sync)
	}
	time.Sleep(5 * time.Millisecond)
	m.TickNow()
	if sync := b.expectRoomMsg("ticker", "", "sync"); string(sync["currentSource"]) != "null" || string(sync["isPlaying"]) != "false" {
		t.Errorf("sync of the end at endAt = %v", sync)
	}
}

// The tick's sync restarts the state write, like the sync of any stored
// field.
func TestTickWritesState(t *testing.T) {
	const debounce = 300 * time.Millisecond
	m, rdb := start(t, func(c *otttest.Config) { c.StateDebounce = debounce })
	ctx := context.Background()
	token := session(t, rdb, "u")
	b := connect(t, m)
	createSettled(t, m, b, `{"name":"tickwrite"}`)
	id := b.join("tickwrite", "tickwrite", token)
	b.send(clientMsg(id, `{"action":"req","request":{"type":5,"video":{"service":"direct","id":"w"}}}`))
	b.expectRoomMsg("tickwrite", "", "event")
	b.expectRoomMsg("tickwrite", "", "sync")
	eventually(t, "the queue written", func() bool {
		return strings.Contains(rdb.Get(ctx, "room:tickwrite").Val(), `"queue":[{"service":"direct","id":"w"}]`)
	})
	ticked := time.Now()
	m.TickNow()
	b.expectRoomMsg("tickwrite", "", "sync")
	eventually(t, "the tick's change written", func() bool {
		return strings.Contains(rdb.Get(ctx, "room:tickwrite").Val(), `"currentSource":{"service":"direct","id":"w"}`)
	})
	if d := time.Since(ticked); d < debounce {
		t.Errorf("written %v after the tick, want at least StateDebounce", d)
	}
}

// The tick runs on its own every TickInterval.
func TestTickPeriodic(t *testing.T) {
	m, rdb := start(t, func(c *otttest.Config) { c.TickInterval = 100 * time.Millisecond })
	token := session(t, rdb, "u")
	b := connect(t, m)
	createSettled(t, m, b, `{"name":"periodic"}`)
	id := b.join("periodic", "periodic", token)
	b.send(clientMsg(id, `{"action":"req","request":{"type":5,"video":{"service":"direct","id":"p"}}}`))
	b.send(clientMsg(id, `{"action":"req","request":{"type":2,"state":true}}`))
	// Into the player at one tick, over at a later one (no length).
	for _, want := range []string{`{"service":"direct","id":"p"}`, `null`} {
		for {
			if sync := payloadOf(b.skipUntil(ott.TypeRoomMsg, "sync")); string(sync["currentSource"]) == want {
				break
			}
		}
	}
	if st := string(m.State("periodic")); !strings.Contains(st, `"isPlaying":false`) || !strings.Contains(st, `"queue":[]`) {
		t.Errorf("state = %s", st)
	}
}

func TestLinkCloseMakesClientsLeave(t *testing.T) {
	m, rdb := start(t, nil)
	token := session(t, rdb, "u")
	a := connect(t, m)
	createRoom(t, m, `{"name":"linkclose"}`)
	a.expect(ott.TypeLoaded)
	a.join("linkclose", "linkclose", token)
	gone := connect(t, m)
	gid := gone.join("linkclose", "linkclose", token)
	a.skipUntil(ott.TypeRoomMsg, "user")
	gone.conn.Close()
	ev := a.skipUntil(ott.TypeRoomMsg, "event")
	if !strings.Contains(string(ev.RoomMsg.Payload), `"request":{"type":1}`) {
		t.Errorf("event = %s", ev.RoomMsg.Payload)
	}
	if u := a.expectRoomMsg("linkclose", "", "user"); !strings.Contains(string(u["update"]), gid) {
		t.Errorf("remove = %s", u["update"])
	}
	eventually(t, "one client left", func() bool { r := m.Rooms(); return len(r) == 1 && r[0].Clients == 1 })
}

func TestKeepalive(t *testing.T) {
	m, rdb := start(t, func(c *otttest.Config) {
		c.UnloadAfter = 600 * time.Millisecond
		c.StateDebounce = 100 * time.Millisecond
	})
	ctx := context.Background()
	token := session(t, rdb, "u")
	b := connect(t, m)
	createRoom(t, m, `{"name":"idle"}`)
	createRoom(t, m, `{"name":"busy"}`)
	b.expect(ott.TypeLoaded)
	b.expect(ott.TypeLoaded)
	id := b.join("busy", "busy", token)
	eventually(t, "state written", func() bool { return rdb.Exists(ctx, "room:idle", "room:busy").Val() == 2 })

	u := b.skipUntil(ott.TypeUnloaded, "").Unloaded
	if u.Name != "idle" || u.Reason != ott.UnloadKeepalive {
		t.Errorf("unloaded = %+v, want idle Keepalive", u)
	}
	eventually(t, "room:idle deleted", func() bool { return rdb.Exists(ctx, "room:idle").Val() == 0 })
	// The room with a user stays; after its user leaves it goes, its user
	// having left first (so no kick).
	time.Sleep(400 * time.Millisecond)
	if r := m.Rooms(); len(r) != 1 || r[0].Name != "busy" {
		t.Fatalf("Rooms = %+v, want busy only", r)
	}
	b.send(ott.Leave{Client: id})
	if u := b.skipUntil(ott.TypeUnloaded, "").Unloaded; u.Name != "busy" || u.Reason != ott.UnloadKeepalive {
		t.Errorf("unloaded = %+v, want busy Keepalive", u)
	}
	if m.Sent("kick") != 0 {
		t.Errorf("Sent(kick) = %d", m.Sent("kick"))
	}
	eventually(t, "room:busy deleted", func() bool { return rdb.Exists(ctx, "room:busy").Val() == 0 })
}

// Shutdown writes no room state: a pending write is lost, and a room whose
// first write was still to come is never written.
func TestShutdownWritesNothing(t *testing.T) {
	const debounce = 300 * time.Millisecond
	w := startWritten(t, debounce, "lostwrite")
	m, rdb, b, id := w.m, w.rdb, w.b, w.id
	ctx := context.Background()
	written := rdb.Get(ctx, "room:lostwrite").Val()
	b.send(clientMsg(id, `{"action":"req","request":{"type":4,"value":99}}`))
	b.skipUntil(ott.TypeRoomMsg, "event")
	createRoom(t, m, `{"name":"neverwritten"}`)

	var seen []string
	done := make(chan error, 1)
	go func() { done <- m.Shutdown(ctx) }()
	for f := range b.in {
		seen = append(seen, f.msg.Type.String())
	}
	if code, text := closeCode(b.closeErr); code != 1001 || text != "Server shutting down" {
		t.Errorf("close = %d %q, want 1001 Server shutting down", code, text)
	}
	for _, typ := range seen {
		if typ == "kick" || typ == "unloaded" {
			t.Errorf("got a %s before the close", typ)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	time.Sleep(debounce + 200*time.Millisecond)
	if got := rdb.Get(ctx, "room:lostwrite").Val(); got != written {
		t.Errorf("room:lostwrite = %q, want the state before the change %q (the pending write lost)", got, written)
	}
	if n := rdb.Exists(ctx, "room:neverwritten").Val(); n != 0 {
		t.Errorf("room:neverwritten written: %s", rdb.Get(ctx, "room:neverwritten").Val())
	}
	if _, err := http.Get("http://" + m.HTTPAddr() + "/api/status"); err == nil {
		t.Errorf("HTTP still answers after Shutdown")
	}
}

func TestHTTP(t *testing.T) {
	m, rdb := start(t, nil)
	ctx := context.Background()
	b := connect(t, m)

	if status, body := httpDo(t, m, "GET", "/api/status", ""); status != 200 || body != `{"status":"ok"}` {
		t.Errorf("status: %d %s", status, body)
	}

	resp, err := http.Get("http://" + m.HTTPAddr() + "/api/auth/grant")
	if err != nil {
		t.Fatal(err)
	}
	var grant struct{ Token string }
	json.NewDecoder(resp.Body).Decode(&grant)
	resp.Body.Close()
	if len(grant.Token) != 684 {
		t.Errorf("token has %d characters, want 684", len(grant.Token))
	}
	if c := resp.Cookies(); len(c) != 1 || c[0].Name != "token" || !c[0].HttpOnly {
		t.Errorf("cookies = %v", c)
	}
	sess := rdb.Get(ctx, "auth:"+grant.Token).Val()
	if !strings.HasPrefix(sess, `{"isLoggedIn":false,"username":"`) {
		t.Errorf("session = %q", sess)
	}
	if ttl := rdb.TTL(ctx, "auth:"+grant.Token).Val(); ttl < 13*24*time.Hour {
		t.Errorf("session TTL = %v", ttl)
	}

	for _, tc := range []struct {
		body   string
		status int
		name   string
	}{
		{`{"name":"ok_room-1","title":"T","visibility":"public"}`, 200, ""},
		{`{"name":"Perm","isTemporary":false,"visibility":"unlisted"}`, 200, ""},
		{`{"name":"OK_ROOM-1"}`, 400, "RoomNameTakenException"},
		{`{"name":"perm"}`, 400, "RoomNameTakenException"},
		{`{"name":"ab"}`, 400, "BadApiArgumentException"},
		{`{"name":"` + strings.Repeat("a", 33) + `"}`, 400, "BadApiArgumentException"},
		{`{"name":"bad name"}`, 400, "BadApiArgumentException"},
		{`{"name":"list"}`, 400, "BadApiArgumentException"},
		{`{"name":"LIST"}`, 200, ""},
		{`{"name":"vis","visibility":"secret"}`, 400, "BadApiArgumentException"},
		{`{}`, 400, "BadApiArgumentException"},
	} {
		status, body := httpDo(t, m, "POST", "/api/room/create", tc.body)
		if status != tc.status || (tc.name != "" && !strings.Contains(body, tc.name)) {
			t.Errorf("create %s: %d %s, want %d %s", tc.body, status, body, tc.status, tc.name)
		}
	}
	if got := rdb.HGet(ctx, otttest.RefDBKey, "perm").Val(); got != `{"name":"Perm","title":"","description":"","visibility":"unlisted","queueMode":"manual"}` {
		t.Errorf("refdb perm = %q", got)
	}
	if rdb.HExists(ctx, otttest.RefDBKey, "ok_room-1").Val() {
		t.Errorf("a temporary room is in the database")
	}
	for range 3 {
		b.expect(ott.TypeLoaded)
	}

	status, body := httpDo(t, m, "POST", "/api/room/generate", "")
	var gen struct {
		Success bool
		Room    string
	}
	json.Unmarshal([]byte(body), &gen)
	if _, err := uuid.Parse(gen.Room); status != 200 || !gen.Success || err != nil {
		t.Errorf("generate: %d %s", status, body)
	}
	if l := b.expect(ott.TypeLoaded).Loaded; l.Room.Name != gen.Room || !l.Room.IsTemporary {
		t.Errorf("loaded = %+v", l)
	}

	// Looking at a room loads it.
	rdb.HSet(ctx, otttest.RefDBKey, "fromdb", `{"name":"FromDb","title":"db","description":"","visibility":"private","queueMode":"dj"}`)
	status, body = httpDo(t, m, "GET", "/api/room/fromdb", "")
	if status != 200 || !strings.HasPrefix(body, `{"name":"FromDb","title":"db"`) || !strings.HasSuffix(body, `"users":[]}`) {
		t.Errorf("GET room: %d %s", status, body)
	}
	if l := b.expect(ott.TypeLoaded).Loaded; l.Room.Name != "FromDb" {
		t.Errorf("loaded = %+v", l)
	}
	if status, body := httpDo(t, m, "GET", "/api/room/nowhere", ""); status != 404 || !strings.Contains(body, "RoomNotFoundException") {
		t.Errorf("GET unknown room: %d %s", status, body)
	}

	status, body = httpDo(t, m, "GET", "/api/room/list", "")
	var list []ott.RoomMetadata
	if err := json.Unmarshal([]byte(body), &list); status != 200 || err != nil {
		t.Fatalf("list: %d %s", status, body)
	}
	var names []string
	for _, r := range list {
		names = append(names, r.Name)
	}
	want := []string{gen.Room, "LIST", "ok_room-1"} // public only, by name
	slices.SortFunc(want, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
	if !slices.Equal(names, want) {
		t.Errorf("list = %v, want %v", names, want)
	}
	if status, _ := httpDo(t, m, "GET", "/api/nothing", ""); status != 404 {
		t.Errorf("unknown path: %d", status)
	}
}

func TestNewNeedsRedis(t *testing.T) {
	if _, err := otttest.New(otttest.Config{}); !errors.Is(err, otttest.ErrNoRedis) {
		t.Errorf("New without Redis: %v", err)
	}
}

func TestOnReceiveHook(t *testing.T) {
	var mu sync.Mutex
	var got []string
	m, _ := start(t, func(c *otttest.Config) {
		c.OnReceive = func(balancerID string, msg ott.B2M, err error) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, balancerID+":"+msg.Type.String())
		}
	})
	b := connectAs(t, m, "hooked")
	b.send(ott.Load{Room: "x"})
	eventually(t, "two messages", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, " ") != ":init hooked:load" {
		t.Errorf("hook saw %v", got)
	}
}
