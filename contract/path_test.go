package contract

import "testing"

func TestRoomSegment(t *testing.T) {
	cases := []struct {
		path, seg string
		ok        bool
	}{
		{"/api/room/foo", "foo", true},
		{"/api/room/Foo/", "Foo", true},
		{"/API/Room/foo/queue", "foo", true},
		{"/api/room/", "", true},
		{"/api/room", "", false},
		{"/api/rooms/foo", "", false},
		{"/api/status", "", false},
		{"", "", false},
	}
	for _, tc := range cases {
		seg, ok := RoomSegment([]byte(tc.path))
		if string(seg) != tc.seg || ok != tc.ok {
			t.Errorf("RoomSegment(%q) = %q, %v; want %q, %v", tc.path, seg, ok, tc.seg, tc.ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { RoomSegment([]byte("/api/room/abc/def")) }); n != 0 {
		t.Errorf("RoomSegment allocates %v times", n)
	}
}
