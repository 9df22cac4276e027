package chaos

import (
	"testing"
	"time"
)

const sec = int64(time.Second)

// recs builds indexed records.
func recs(sessions []session, chats []chatRec, receipts []receipt, aways map[int][]away) records {
	r := records{sessions: sessions, chats: chats, receipts: receipts, aways: aways}
	if r.aways == nil {
		r.aways = map[int][]away{}
	}
	r.index()
	return r
}

func TestFindGaps(t *testing.T) {
	one := []session{{ID: 1, Client: 0, Room: "r", Dial: 0, Open: 1, Sync: 1}}
	at := func(ts ...int64) []receipt {
		var out []receipt
		for i, t := range ts {
			out = append(out, receipt{Chat: int32(i), Sess: 1, At: t})
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		receipts []receipt
		aways    []away
		end      int64
		want     []gap
	}{
		{"steady", at(sec/2, sec, 3*sec/2), nil, 2 * sec, nil},
		{"a gap", at(sec/2, 3*sec), nil, 3 * sec, []gap{{Client: 0, Room: "r", From: sec / 2, To: 3 * sec}}},
		{"away is no gap", at(sec/2, 3*sec), []away{{From: sec, To: 5 * sec / 2}}, 3 * sec, nil},
		{"gap before leaving", at(sec/2, 4*sec), []away{{From: 2 * sec, To: 7 * sec / 2}}, 4 * sec,
			[]gap{{Client: 0, Room: "r", From: sec / 2, To: 2 * sec}}},
		{"open at the end", at(sec / 2), nil, 3 * sec, []gap{{Client: 0, Room: "r", From: sec / 2, To: 3 * sec, Open: true}}},
		{"never served", nil, nil, 3 * sec, []gap{{Client: 0, Room: "r", From: 0, To: 3 * sec, Open: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := findGaps(recs(one, nil, tc.receipts, map[int][]away{0: tc.aways}), tc.end, time.Second)
			if len(got) != len(tc.want) {
				t.Fatalf("gaps %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("gap %d: %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestLostChats(t *testing.T) {
	sessions := []session{
		{ID: 1, Client: 0, Room: "r", Node: "n1", Sync: 1 * sec},
		{ID: 2, Client: 1, Room: "r", Node: "n1", Sync: 1 * sec},
		{ID: 3, Client: 2, Room: "r", Node: "n1", Sync: 5 * sec},                 // joined within the window
		{ID: 4, Client: 3, Room: "r", Node: "n1", Sync: 1 * sec, Close: 6 * sec}, // left within it
		{ID: 5, Client: 4, Room: "other", Node: "n2", Sync: 1 * sec},
	}
	chats := []chatRec{
		{Room: "r", Sender: 0, Sess: 1, Sent: 3 * sec},      // reached both
		{Room: "r", Sender: 0, Sess: 1, Sent: 4 * sec},      // lost for client 1
		{Room: "r", Sender: 0, Sess: 1, Sent: 19 * sec / 2}, // within the grace at the end
		{Room: "r", Sender: 3, Sess: 4, Sent: 4 * sec},      // its sender left
		{Room: "r", Sender: 1, Sess: 2, Sent: 5 * sec, Failed: true},
	}
	receipts := []receipt{
		{Chat: 0, Sess: 1}, {Chat: 0, Sess: 2}, {Chat: 0, Sess: 4},
		{Chat: 1, Sess: 1},
	}
	got := lostChats(recs(sessions, chats, receipts, nil), 2*sec, 10*sec)
	if got.Checked != 4 || got.Lost != 1 || got.Rooms["r"] != 1 || got.Examples["r"] == "" {
		t.Fatalf("checked %d, lost %d, by room %v, examples %v; want 4 checked, 1 lost in r with an example", got.Checked, got.Lost, got.Rooms, got.Examples)
	}
}

// TestLostChatsAcrossCarries: a session a router carried over to another
// node before the window is served through it (its chats are checked); one
// carried over within the window is not.
func TestLostChatsAcrossCarries(t *testing.T) {
	sessions := []session{
		{ID: 1, Client: 0, Room: "r", Node: "n1", Sync: 1 * sec, Moved: sec + sec/2, Moves: []int64{sec + sec/2}},
		{ID: 2, Client: 1, Room: "r", Node: "n1", Sync: 1 * sec, Moved: 5 * sec, Moves: []int64{5 * sec}},
		{ID: 3, Client: 2, Room: "r", Node: "n1", Sync: 1 * sec},
	}
	chats := []chatRec{{Room: "r", Sender: 2, Sess: 3, Sent: 3 * sec}}
	got := lostChats(recs(sessions, chats, []receipt{{Chat: 0, Sess: 3}}, nil), 2*sec, 10*sec)
	// Sessions 1 and 3 must have it; 1 has not.
	if got.Checked != 2 || got.Lost != 1 {
		t.Fatalf("checked %d, lost %d; want 2 and 1", got.Checked, got.Lost)
	}
}

func TestClientOverlaps(t *testing.T) {
	chats := make([]chatRec, 10)
	for i := range chats {
		chats[i] = chatRec{Room: "r", Sent: int64(i) * sec}
	}
	for _, tc := range []struct {
		name     string
		sessions []session
		receipts []receipt
		want     int
	}{
		{"handover", []session{{ID: 1, Room: "r", Node: "n1"}, {ID: 2, Client: 1, Room: "r", Node: "n2"}},
			[]receipt{{Chat: 1, Sess: 1}, {Chat: 3, Sess: 1}, {Chat: 4, Sess: 2}, {Chat: 6, Sess: 2}}, 0},
		{"split", []session{{ID: 1, Room: "r", Node: "n1"}, {ID: 2, Client: 1, Room: "r", Node: "n2"}},
			[]receipt{{Chat: 1, Sess: 1}, {Chat: 5, Sess: 1}, {Chat: 4, Sess: 2}, {Chat: 6, Sess: 2}}, 1},
		{"one node", []session{{ID: 1, Room: "r", Node: "n1"}, {ID: 2, Client: 1, Room: "r", Node: "n1"}},
			[]receipt{{Chat: 1, Sess: 1}, {Chat: 5, Sess: 1}, {Chat: 4, Sess: 2}, {Chat: 6, Sess: 2}}, 0},
		{"moved by a router", []session{{ID: 1, Room: "r", Node: "n1", Moved: 10}, {ID: 2, Client: 1, Room: "r", Node: "n2"}},
			[]receipt{{Chat: 1, Sess: 1, At: 5}, {Chat: 5, Sess: 1, At: 20}, {Chat: 4, Sess: 2}, {Chat: 6, Sess: 2}}, 0},
		// With the sidecars' join lines, a session is on the node that
		// joined the id it was last given: carried over before its first
		// message (its handshake named n3), or after.
		{"carried before its first message", []session{{ID: 1, Room: "r", Node: "n3", Yous: []you{{"a", 0}}}, {ID: 2, Client: 1, Room: "r", Node: "n1", Yous: []you{{"b", 0}}}},
			[]receipt{{Chat: 1, Sess: 1, At: 1}, {Chat: 5, Sess: 1, At: 5}, {Chat: 4, Sess: 2, At: 4}, {Chat: 6, Sess: 2, At: 6}}, 0},
		{"carried, then split", []session{{ID: 1, Room: "r", Node: "n1", Yous: []you{{"a", 0}, {"c", 3 * sec}}}, {ID: 2, Client: 1, Room: "r", Node: "n1", Yous: []you{{"b", 0}}}},
			[]receipt{{Chat: 1, Sess: 1, At: sec}, {Chat: 4, Sess: 1, At: 4 * sec}, {Chat: 7, Sess: 1, At: 7 * sec}, {Chat: 5, Sess: 2, At: 5 * sec}, {Chat: 6, Sess: 2, At: 6 * sec}}, 1},
		// Carried to n2 and back to n1: its two times on n1 are apart, and
		// the other session's time on n2 falls between them.
		{"carried there and back", []session{{ID: 1, Room: "r", Node: "n1", Yous: []you{{"a", 0}, {"c", 3 * sec}, {"d", 6 * sec}}}, {ID: 2, Client: 1, Room: "r", Node: "n2", Yous: []you{{"c2", 0}}}},
			[]receipt{{Chat: 1, Sess: 1, At: sec}, {Chat: 4, Sess: 1, At: 4 * sec}, {Chat: 7, Sess: 1, At: 7 * sec}, {Chat: 4, Sess: 2, At: 4 * sec}, {Chat: 5, Sess: 2, At: 5 * sec}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := recs(tc.sessions, chats, tc.receipts, nil)
			if tc.sessions[0].Yous != nil {
				r.joined = map[string]string{"a": "n1", "b": "n1", "c": "n2", "c2": "n2", "d": "n1"}
			}
			got := clientOverlaps(r)
			if len(got) != tc.want {
				t.Fatalf("violations %+v, want %d", got, tc.want)
			}
			for _, v := range got {
				if v.Invariant != InvDoubleServiceClients || v.Room != "r" {
					t.Errorf("violation %+v", v)
				}
			}
		})
	}
}

func TestCloseViolations(t *testing.T) {
	got := closeViolations(recs([]session{
		{ID: 1, Room: "r", Code: 1012},
		{ID: 2, Room: "r", Code: 4002},
		{ID: 3, Room: "r", Code: 4004}, // a session lost with Redis's data
		{ID: 4, Room: "r", Code: 4005},
		{ID: 5, Room: "r", Code: 1006},
	}, nil, nil, nil))
	if len(got) != 2 || got[0].Invariant != InvRoomLost || got[1].Invariant != InvKicked {
		t.Fatalf("violations %+v, want room-lost then kicked", got)
	}
}

func TestCondense(t *testing.T) {
	got := condense([]Violation{
		{Invariant: InvRoomLost, Room: "a", Detail: "x"},
		{Invariant: InvRoomLost, Room: "a", Detail: "y"},
		{Invariant: InvRoomLost, Room: "b", Detail: "z"},
	})
	if len(got) != 2 || got[0].Detail != "x (and 1 more like it)" || got[1].Detail != "z" {
		t.Fatalf("condensed %+v", got)
	}
}
