package router

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/roomlb/roomlb/registry"
)

// The dashboard leaves private rooms out (and counts them) unless
// Config.DashboardPrivate asks for them: its listener has no
// authentication.
func TestDashboardPrivateRooms(t *testing.T) {
	for _, show := range []bool{false, true} {
		c := newCluster(t, Config{DashboardPrivate: show})
		ctx := context.Background()
		a := c.node(registry.Node{ID: "node-a"})
		for room, vis := range map[string]string{"open": "public", "hidden": "private", "link": "unlisted"} {
			l, err := c.reg.Claim(ctx, room, "node-a", a.session())
			if err != nil {
				t.Fatal(err)
			}
			if err := c.reg.WriteMeta(ctx, l, registry.Meta{Name: room, Visibility: vis}); err != nil {
				t.Fatal(err)
			}
		}
		res, err := http.Get("http://" + c.admin + "/dashboard/state")
		if err != nil {
			t.Fatal(err)
		}
		var st dashboardState
		err = json.NewDecoder(res.Body).Decode(&st)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		listed := map[string]bool{}
		for _, r := range st.Rooms {
			listed[r.Room] = true
		}
		want := map[string]bool{"open": true, "link": true, "hidden": show}
		wantPrivate := 1
		if show {
			wantPrivate = 0
		}
		for room, w := range want {
			if listed[room] != w {
				t.Errorf("DashboardPrivate %v: room %s listed %v, want %v", show, room, listed[room], w)
			}
		}
		if st.Private != wantPrivate {
			t.Errorf("DashboardPrivate %v: %d private rooms counted, want %d", show, st.Private, wantPrivate)
		}
	}
}
