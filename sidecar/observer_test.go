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
// every loaded and unloaded the monoliths broadcast, to check that no room
// is ever loaded on two monoliths at once.
type observer struct {
	mu     sync.Mutex
	where  map[string]map[string]time.Time // room key -> monoliths holding it, since
	double []string                        // violations seen
	loads  map[string]int                  // loads per monolith
	trace  map[string][]string             // room key -> events
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
	// Each monolith is read on its own connection, so an unload here may
	// be read a little after the load elsewhere that it caused: only an
	// overlap longer than that is a room on two monoliths.
	for other, since := range o.where[key] {
		if other != mono && now.Sub(since) > 100*time.Millisecond && o.where[key][mono].Before(since) {
			o.double = append(o.double, fmt.Sprintf("%s on %s and %s for %v", key, mono, other, now.Sub(since)))
		}
	}
	delete(o.where[key], mono)
}

// check fails the test if a room was ever loaded on two monoliths (or is
// now).
func (o *observer) check(t testing.TB) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for key, monos := range o.where {
		if len(monos) > 1 {
			o.double = append(o.double, fmt.Sprintf("%s on %d monoliths", key, len(monos)))
		}
	}
	if len(o.double) > 0 {
		t.Errorf("rooms loaded on two monoliths at once: %v", o.double)
	}
}
