package router

import (
	"bytes"
	"strings"
	"testing"

	"github.com/roomlb/roomlb/ott"
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
		{"/api/room/", routeBadRoom, ""},
		{"/api/room//x", routeBadRoom, ""},
		{"/api/room/a.b", routeBadRoom, ""},
		{"/api/room/..", routeBadRoom, ""},
		{"/api/room/a%2Fb", routeBadRoom, ""},
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

// FuzzParsePath checks that the path parser never panics and that its room
// validation is exactly registry.RoomKey's.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/api/room/lobby", "/API/ROOM/Lobby/queue", "/api/room/", "/api/room/list", "/api/room/generate/x",
		"/api/status", "/api/room/a%2Fb", "/api/room/\x00", "/api/room/ÄÖ", "/", "",
		"/api/room/" + strings.Repeat("x", 65),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, path []byte) {
		var k roomKey
		got := parsePath(path, &k)
		if !ott.HasPrefixFold(path, ott.RoomPrefix) {
			if got != routeOther && got != routeStatus {
				t.Fatalf("parsePath(%q) = %v for a path outside %s", path, got, ott.RoomPrefix)
			}
			if got == routeStatus && !strings.EqualFold(strings.TrimSuffix(string(path), "/"), statusPath) {
				t.Fatalf("parsePath(%q) = status", path)
			}
			return
		}
		seg, _, _ := bytes.Cut(path[len(ott.RoomPrefix):], []byte("/"))
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
