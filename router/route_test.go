package router

import (
	"bytes"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/registry"
)

func TestParsePath(t *testing.T) {
	cases := []struct {
		path  string
		route route
		key   string
	}{
		{"/api/room/lobby", routeRoom, "lobby"},
		{"/api/room/Lobby", routeRoom, "lobby"},
		{"/API/Room/MovieNight/queue", routeRoom, "movienight"},
		{"/api/room/lobby/", routeRoom, "lobby"},
		{"/api/room/9e1c2b4a-7f3d-4c59-8a1e-6b0d2f4c8e77", routeRoom, "9e1c2b4a-7f3d-4c59-8a1e-6b0d2f4c8e77"},
		{"/api/room/under_score-dash/vote", routeRoom, "under_score-dash"},
		{"/api/room/List", routeRoom, "list"}, // only the exact name is reserved
		{"/api/room/list", routeList, ""},
		{"/api/room/list/", routeList, ""},
		{"/api/room/generate", routePlace, ""},
		{"/api/room/create", routePlace, ""},
		{"/api/status", routeStatus, ""},
		{"/api/status/", routeStatus, ""},
		{"/API/STATUS", routeStatus, ""},
		{"/api/status/metrics", routeOther, ""},
		{"/api/room", routeOther, ""},
		{"/api/rooms/x", routeOther, ""},
		{"/", routeOther, ""},
		{"", routeOther, ""},
		{"/api/auth/grant", routeOther, ""},
		{"/admin/drain", routeInternal, ""},
		{"/ADMIN/Move", routeInternal, ""},
		{"/admin", routeInternal, ""},
		{"/metrics", routeInternal, ""},
		{"/healthz", routeInternal, ""},
		{"/readyz/", routeInternal, ""},
		{"/administrator", routeOther, ""},
		{"/metricsfoo", routeOther, ""},
		{"/api/room/", routeBadRoom, ""},
		{"/api/room/a.b", routeBadRoom, ""},
		{"/api/room/a%20b", routeBadRoom, ""},
		{"/api/room/%zz", routeBadRoom, ""},
		{"/api/room/lobby/...", routeRoom, "lobby"},
		{"/api/room/lobby/.hidden", routeRoom, "lobby"},
		{"/.well-known/x", routeOther, ""},
		{"/static/a%20b.js", routeOther, ""},
		// What the sidecar's normalized path (fasthttp ctx.Path()) would
		// route elsewhere.
		{"/api/room//x", routeBadPath, ""},
		{"//api/room/lobby", routeBadPath, ""},
		{"/api/room/lobby//queue", routeBadPath, ""},
		{"/api/room/..", routeBadPath, ""},
		{"/api/room/lobby/../other", routeBadPath, ""},
		{"/api/room/lobby/..", routeBadPath, ""},
		{"/api/room/./lobby", routeBadPath, ""},
		{"/api/room/lobby/.", routeBadPath, ""},
		{"/static/../api/room/lobby", routeBadPath, ""},
		{"/api/room/a%2Fb", routeBadPath, ""},
		{"/api/room/lobby%2f..%2fother", routeBadPath, ""},
		{"/api/room/lobby/%2e%2e/other", routeBadPath, ""},
		// What the monolith (Node's URL parser) reads as a '/'.
		{"/api/room/lobby/x\\..\\..\\other", routeBadPath, ""},
		{"/api/room/LOBBY/x%5C..%5C..%5Cother", routeBadPath, ""},
		{"/api/room/lobby/x%5c..%5c..%5ccreate", routeBadPath, ""},
		{"/api/room/lobby/%2E%2E/other", routeBadPath, ""},
		{"/api/room/%6cobby", routeBadPath, ""},
		{"/api/r%6Fom/lobby", routeBadPath, ""},
		{"/api/status%2F", routeBadPath, ""},
		{"api/room/lobby", routeBadPath, ""},
		{"*", routeBadPath, ""},
		{"/api/room/café", routeBadRoom, ""},
		{"/api/room/{tag}", routeBadRoom, ""},
		{"/api/room/" + strings.Repeat("a", registry.MaxRoomLen), routeRoom, strings.Repeat("a", registry.MaxRoomLen)},
		{"/api/room/" + strings.Repeat("a", registry.MaxRoomLen+1), routeBadRoom, ""},
	}
	for _, tc := range cases {
		var k roomKey
		got := parsePath([]byte(tc.path), &k)
		if got != tc.route || (got == routeRoom && string(k.bytes()) != tc.key) {
			t.Errorf("parsePath(%q) = %v %q, want %v %q", tc.path, got, k.bytes(), tc.route, tc.key)
		}
	}
}

func TestParsePathAllocs(t *testing.T) {
	paths := [][]byte{
		[]byte("/api/room/MovieNight/queue"),
		[]byte("/api/room/lobby"),
		[]byte("/api/room/list"),
		[]byte("/api/room/bad.name"),
		[]byte("/static/app.js"),
		[]byte("/api/room/lobby/%2e%2e/other"),
		[]byte("/static/a%20b/c.js"),
	}
	var k roomKey
	allocs := testing.AllocsPerRun(1000, func() {
		for _, p := range paths {
			parsePath(p, &k)
		}
	})
	if allocs != 0 {
		t.Fatalf("parsePath allocates %v times per run, want 0", allocs)
	}
}

// FuzzParsePath checks that the path parser never panics, that its room
// validation is exactly registry.RoomKey's, and that a path it does not
// refuse routes as the path the sidecar sees does: fasthttp's normalized
// form (ctx.Path()), which decodes, drops empty and dot segments.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/api/room/lobby", "/API/ROOM/Lobby/queue", "/api/room/", "/api/room/list", "/api/room/generate/x",
		"/api/status", "/api/room/a%2Fb", "/api/room/\x00", "/api/room/ÄÖ", "/", "",
		"/api/room/" + strings.Repeat("x", 65),
		"/api/room/a/../b", "//api/room/a", "/api/room/./a", "/api/r%6fom/a", "/x/%2e%2e/api/room/a",
		"/api/room/a/%252e%252e/b", "api/room/a", "/a%2", "/%", "/api/room/a/x%5C..%5Cb", "/api/room/a\\b",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, path []byte) {
		var k roomKey
		got := parsePath(path, &k)

		var u fasthttp.URI
		u.SetPathBytes(path)
		norm := u.Path()
		if got == routeBadPath {
			backslash := bytes.IndexByte(norm, '\\') >= 0 // Node reads it as '/'
			if len(path) > 0 && bytes.Equal(norm, path) && !backslash {
				t.Fatalf("parsePath(%q) refuses a path that normalizes to itself", path)
			}
			return
		}
		var nk roomKey
		if ngot := routeOf(norm, &nk); ngot != got || (got == routeRoom && !bytes.Equal(nk.bytes(), k.bytes())) {
			t.Fatalf("parsePath(%q) = %v %q, but the sidecar's path %q routes as %v %q", path, got, k.bytes(), norm, ngot, nk.bytes())
		}

		if !contract.HasPrefixFold(path, contract.RoomPrefix) {
			if got != routeOther && got != routeStatus {
				t.Fatalf("parsePath(%q) = %v for a path outside %s", path, got, contract.RoomPrefix)
			}
			if got == routeStatus && !strings.EqualFold(strings.TrimSuffix(string(path), "/"), statusPath) {
				t.Fatalf("parsePath(%q) = status", path)
			}
			return
		}
		seg, _, _ := bytes.Cut(path[len(contract.RoomPrefix):], []byte("/"))
		switch string(seg) {
		case "list":
			if got != routeList {
				t.Fatalf("parsePath(%q) = %v, want list", path, got)
			}
			return
		case "generate", "create":
			if got != routePlace {
				t.Fatalf("parsePath(%q) = %v, want place", path, got)
			}
			return
		}
		want, err := registry.RoomKey(string(seg))
		switch {
		case err != nil && got != routeBadRoom:
			t.Fatalf("parsePath(%q) = %v %q; RoomKey refuses %q: %v", path, got, k.bytes(), seg, err)
		case err == nil && (got != routeRoom || string(k.bytes()) != want):
			t.Fatalf("parsePath(%q) = %v %q; RoomKey(%q) = %q", path, got, k.bytes(), seg, want)
		}
	})
}
