package e2e

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/cluster"
)

// watcher reads one client's messages in the background and records what a
// user of the OpenTogetherTube web client would see of a move: a close, the
// "joined"/"left" toasts (join and leave events), the ids it is given
// (you), the full syncs and the chats.
type watcher struct {
	c *client

	mu     sync.Mutex
	closed int // the close code, 0 while open
	ids    []string
	events []string // "join NAME" or "leave NAME"
	syncs  []map[string]any
	chats  map[string]int // text → times received
	done   chan struct{}
}

func watch(c *client) *watcher {
	w := &watcher{c: c, chats: map[string]int{}, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for m := range c.Msgs {
			w.mu.Lock()
			switch m["action"] {
			case "you":
				info, _ := m["info"].(map[string]any)
				id, _ := info["id"].(string)
				w.ids = append(w.ids, id)
			case "event":
				req, _ := m["request"].(map[string]any)
				user, _ := m["user"].(map[string]any)
				switch req["type"] {
				case 0.0:
					w.events = append(w.events, fmt.Sprintf("join %v", user["name"]))
				case 1.0:
					w.events = append(w.events, fmt.Sprintf("leave %v", user["name"]))
				}
			case "sync":
				if _, full := m["title"]; full {
					w.syncs = append(w.syncs, m)
				}
			case "chat":
				text, _ := m["text"].(string)
				w.chats[text]++
			}
			w.mu.Unlock()
		}
		w.mu.Lock()
		w.closed = <-c.Closed
		w.mu.Unlock()
	}()
	return w
}

// waitIDs waits until the client has been given n ids, failing on a close.
func (w *watcher) waitIDs(t *testing.T, n int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		w.mu.Lock()
		got, closed := len(w.ids), w.closed
		w.mu.Unlock()
		switch {
		case closed != 0:
			t.Fatalf("%s: closed with %d", w.c.node, closed)
		case got >= n:
			return
		case time.Now().After(deadline):
			t.Fatalf("the client was given %d ids within %v, want %d", got, limit, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chatter sends numbered chats every interval until stopped, and records
// what it sent from a mark on.
type chatter struct {
	c    *client
	name string

	mu     sync.Mutex
	n      int
	marked bool
	sent   []string // since the mark
	stop   chan struct{}
	done   chan struct{}
}

func chatEvery(c *client, name string, interval time.Duration) *chatter {
	ch := &chatter{c: c, name: name, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(ch.done)
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-ch.stop:
				return
			case <-tk.C:
			}
			ch.mu.Lock()
			ch.n++
			text := fmt.Sprintf("%s-%d", ch.name, ch.n)
			if ch.marked {
				ch.sent = append(ch.sent, text)
			}
			ch.mu.Unlock()
			if c.chat(text) != nil {
				return
			}
		}
	}()
	return ch
}

func (ch *chatter) mark() {
	ch.mu.Lock()
	ch.marked = true
	ch.mu.Unlock()
}

func (ch *chatter) end() []string {
	close(ch.stop)
	<-ch.done
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.sent
}

// TestMovesAreInvisible: when a room changes node, by a drain, a move
// (roomlb ctl move), its monolith's crash or its sidecar's (SIGKILL), the
// clients connected through routers (two, one client on each) see no
// close and no join or leave event of anybody: the routers carry them
// over. They are given a new id and the room's full state by the new owner,
// as on a first join. Every chat sent by either during the move reaches
// both: from before the move for a drain and a move (the old owner
// passes on, or tells the routers to replay, everything sent up to its
// close), from the crash on for a crash.
func TestMovesAreInvisible(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the monolith's first state write")
	}
	for _, tc := range []struct {
		name  string
		crash bool // nothing sent just before the fault can be kept
		fault func(t *testing.T, c *cluster.Cluster, from *cluster.Node)
	}{
		{name: "drain", fault: func(t *testing.T, c *cluster.Cluster, from *cluster.Node) { moveAway(t, c, from, "steady", true) }},
		{name: "move", fault: func(t *testing.T, c *cluster.Cluster, from *cluster.Node) { moveAway(t, c, from, "steady", false) }},
		{name: "monolith-crash", crash: true, fault: func(t *testing.T, c *cluster.Cluster, from *cluster.Node) { from.Process.Kill() }},
		{name: "sidecar-kill", crash: true, fault: func(t *testing.T, c *cluster.Cluster, from *cluster.Node) { from.KillSidecar() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := nodeClusterRouters(t, 2, 2)
			token := grant(t, c.Routers[0].Addr)
			if res, body := do(t, c.Routers[0].Addr, "POST", "/api/room/create", `{"name":"Steady","title":"kept","isTemporary":true}`); res.StatusCode != 200 {
				t.Fatalf("create: %d %s", res.StatusCode, body)
			}
			var ws []*watcher
			for _, r := range c.Routers {
				cl, err := join(t, r.Addr, "steady", token)
				if err != nil {
					t.Fatal(err)
				}
				w := watch(cl)
				w.waitIDs(t, 1, 10*time.Second)
				ws = append(ws, w)
			}
			from := nodeOf(t, c, ws[0].c.node)
			// The room's first write, so that a crash leaves it in Redis.
			time.Sleep(5500 * time.Millisecond)
			chatters := []*chatter{chatEvery(ws[0].c, "alice", 40*time.Millisecond), chatEvery(ws[1].c, "bob", 40*time.Millisecond)}
			if tc.crash {
				for _, ch := range chatters {
					ch.end()
				}
				time.Sleep(300 * time.Millisecond)
				chatters = chatters[:0]
			} else {
				time.Sleep(300 * time.Millisecond)
			}
			for _, ch := range chatters {
				ch.mark()
			}
			start := time.Now()
			tc.fault(t, c, from)
			if tc.crash {
				chatters = []*chatter{chatEvery(ws[0].c, "alice", 40*time.Millisecond), chatEvery(ws[1].c, "bob", 40*time.Millisecond)}
				for _, ch := range chatters {
					ch.mark()
				}
			}
			for _, w := range ws {
				w.waitIDs(t, 2, 20*time.Second)
			}
			t.Logf("both clients carried over %v after the fault", time.Since(start))
			time.Sleep(500 * time.Millisecond)
			var sent []string
			for _, ch := range chatters {
				sent = append(sent, ch.end()...)
			}

			deadline := time.Now().Add(5 * time.Second)
			for i, w := range ws {
				for {
					w.mu.Lock()
					var missing []string
					for _, text := range sent {
						if w.chats[text] == 0 {
							missing = append(missing, text)
						}
					}
					closed, events, ids, syncs := w.closed, w.events, w.ids, w.syncs
					var twice []string
					for text, n := range w.chats {
						if n > 1 {
							twice = append(twice, text)
						}
					}
					w.mu.Unlock()
					if len(missing) > 0 && time.Now().Before(deadline) {
						time.Sleep(50 * time.Millisecond)
						continue
					}
					if closed != 0 {
						t.Errorf("client %d: closed with %d", i, closed)
					}
					// Alice saw her join and Bob's, Bob his own; then none.
					if len(events) != 2-i {
						t.Errorf("client %d saw the events %q, want only the joins before the move", i, events)
					}
					if len(ids) != 2 || ids[0] == ids[1] {
						t.Errorf("client %d was given the ids %q", i, ids)
					}
					if n := len(syncs); n < 2 || syncs[n-1]["title"] != "kept" {
						t.Errorf("client %d: %d full syncs, want the room's state (title \"kept\") again after the move", i, n)
					}
					if len(missing) > 0 {
						t.Errorf("client %d missed %d of the %d chats sent during the move: %q", i, len(missing), len(sent), missing)
					}
					if len(twice) > 0 {
						t.Errorf("client %d received chats twice: %q", i, twice)
					}
					break
				}
			}
			if to := nodeAfter(t, c, "steady"); to == from.ID {
				t.Errorf("the room is still on %s", to)
			}
		})
	}
}

// nodeAfter is the node that owns room in the registry.
func nodeAfter(t *testing.T, c *cluster.Cluster, room string) string {
	t.Helper()
	o, err := c.Registry.Owner(t.Context(), room)
	if err != nil {
		t.Fatalf("owner of %s: %v", room, err)
	}
	return o.Node
}
