package router

import (
	_ "embed"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/roomlb/roomlb/registry"
)

//go:embed dashboard.html
var dashboardHTML []byte

// dashboardTTL is how long one reading of the registry serves every
// dashboard viewer: one SCAN per period whatever the number of viewers.
const dashboardTTL = 500 * time.Millisecond

// dashboardState is what /dashboard/state answers.
type dashboardState struct {
	At    time.Time       `json:"at"`
	Nodes []dashboardNode `json:"nodes"`
	Rooms []dashboardRoom `json:"rooms"`
	// Private counts the private rooms left out of Rooms.
	Private int `json:"private"`
}

type dashboardNode struct {
	ID       string  `json:"id"`
	Addr     string  `json:"addr"`
	Region   string  `json:"region"`
	State    string  `json:"state"`
	Rooms    int     `json:"rooms"`
	Clients  int     `json:"clients"`
	Load     float64 `json:"load"`
	Capacity int     `json:"capacity"`
	// History is the node's clients and rooms over the last minutes:
	// [unix ms, clients, rooms], oldest first.
	History []historyPoint `json:"history"`
}

type dashboardRoom struct {
	Room  string `json:"room"`
	Name  string `json:"name"`
	Node  string `json:"node"`
	Epoch int64  `json:"epoch"`
	Users int    `json:"users"`
}

// dashboard caches the registry reading behind the dashboard.
type dashboard struct {
	reg     *registry.Registry
	history *nodeHistory
	// private: list private rooms too (Config.DashboardPrivate).
	private bool
	mu      sync.Mutex
	at      time.Time
	js      []byte
}

func (d *dashboard) state(req *http.Request) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if time.Since(d.at) < dashboardTTL && d.js != nil {
		return d.js, nil
	}
	ctx := req.Context()
	nodes, err := d.reg.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	rooms, err := d.reg.Rooms(ctx)
	if err != nil {
		return nil, err
	}
	st := dashboardState{At: time.Now().UTC(), Nodes: []dashboardNode{}, Rooms: []dashboardRoom{}}
	for _, n := range nodes {
		st.Nodes = append(st.Nodes, dashboardNode{n.ID, n.Addr, n.Region, string(n.State), n.Rooms, n.Clients, n.Load, n.Capacity, d.history.points(n.ID)})
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].ID < st.Nodes[j].ID })
	for _, r := range rooms {
		if r.Meta.Visibility == "private" && !d.private {
			st.Private++
			continue
		}
		name := r.Meta.Name
		if name == "" {
			name = r.Room
		}
		st.Rooms = append(st.Rooms, dashboardRoom{r.Room, name, r.Owner.Node, r.Owner.Epoch, r.Meta.Users})
	}
	sort.Slice(st.Rooms, func(i, j int) bool { return st.Rooms[i].Room < st.Rooms[j].Room })
	js, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	d.at, d.js = time.Now(), js
	return js, nil
}

// serveDashboard adds the live dashboard to the admin mux: /dashboard is
// the page, /dashboard/state the registry reading it polls.
func (r *Router) serveDashboard(mux *http.ServeMux) {
	d := &dashboard{reg: r.reg, history: &r.nodes.history, private: r.cfg.DashboardPrivate}
	mux.HandleFunc("GET /dashboard", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(dashboardHTML)
	})
	mux.HandleFunc("GET /dashboard/state", func(w http.ResponseWriter, req *http.Request) {
		js, err := d.state(req)
		if err != nil {
			http.Error(w, "registry: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(js)
	})
}
