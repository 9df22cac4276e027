package sidecar

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// observer is an extra balancer connection to each monolith that records
// every loaded and unloaded the monoliths broadcast: where each room is
// loaded, and a trace per room. (A room loaded on two monoliths for a
// moment is no fault: only one of them is served. Double service is
// checked from the sidecars' serve logs, by epoch: CheckServeLog.)
type observer struct {
	mu    sync.Mutex
	where map[string]map[string]time.Time // room key -> monoliths holding it, since
	loads map[string]int                  // loads per monolith
	trace map[string][]string             // room key -> events
}

func newObserver() *observer {
	return &observer{where: map[string]map[string]time.Time{}, loads: map[string]int{}, trace: map[string][]string{}}
}

// watch connects to the monolith at balancerAddr under the label name.
func (o *observer) watch(t testing.TB, name, balancerAddr string) {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+balancerAddr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"init","payload":{"id":"observer-`+name+`"}}`))
	go func() {
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var m struct {
				Type    string
				Payload struct {
					Room  json.RawMessage
					Name  string
					Rooms []struct{ Room struct{ Name string } }
				}
			}
			if json.Unmarshal(data, &m) != nil {
				continue
			}
			switch m.Type {
			case "loaded":
				var meta struct{ Name string }
				json.Unmarshal(m.Payload.Room, &meta)
				o.set(name, meta.Name, true)
			case "unloaded":
				o.set(name, m.Payload.Name, false)
			}
		}
	}()
	// Give the link time to be initialised before the test acts.
	time.Sleep(50 * time.Millisecond)
}

func (o *observer) set(mono, room string, loaded bool) {
	key := strings.ToLower(room)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.trace[key] = append(o.trace[key], fmt.Sprintf("%s %s loaded=%v", time.Now().Format("15:04:05.000"), mono, loaded))
	if o.where[key] == nil {
		o.where[key] = map[string]time.Time{}
	}
	now := time.Now()
	if loaded {
		o.loads[mono]++
		o.where[key][mono] = now
		return
	}
	delete(o.where[key], mono)
}
