package ott_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/roomlb/roomlb/ott"
)

const (
	balancerID = "0d6f3a52-8c1e-4b7a-9a55-2f4e1c9b7d10"
	clientID   = "5b2f7c1e-3d4a-4e8b-b1c2-9a0d8e7f6a51"
	monolithID = "9e1c2b4a-7f3d-4c59-8a1e-6b0d2f4c8e77"
)

// The literal examples of ott/PROTOCOL.md §2.3, §3.1 and §3.2, in the
// monolith's field order: decoding them gives want, and encoding want (or the
// decoded message) gives the same bytes back.
var b2mExamples = []struct {
	name string
	json string
	want ott.B2M
}{
	{"init", `{"type":"init","payload":{"id":"0d6f3a52-8c1e-4b7a-9a55-2f4e1c9b7d10"}}`,
		ott.B2M{Type: ott.TypeInit, Init: ott.BalancerInit{ID: balancerID}}},
	{"load", `{"type":"load","payload":{"room":"movienight"}}`,
		ott.B2M{Type: ott.TypeLoad, Load: ott.Load{Room: "movienight"}}},
	{"unload", `{"type":"unload","payload":{"room":"movienight"}}`,
		ott.B2M{Type: ott.TypeUnload, Unload: ott.Unload{Room: "movienight"}}},
	{"join", `{"type":"join","payload":{"room":"movienight","client":"5b2f7c1e-3d4a-4e8b-b1c2-9a0d8e7f6a51","token":"q2Vx...base64...=="}}`,
		ott.B2M{Type: ott.TypeJoin, Join: ott.Join{Room: "movienight", Client: clientID, Token: "q2Vx...base64...=="}}},
	{"leave", `{"type":"leave","payload":{"client":"5b2f7c1e-3d4a-4e8b-b1c2-9a0d8e7f6a51"}}`,
		ott.B2M{Type: ott.TypeLeave, Leave: ott.Leave{Client: clientID}}},
	{"client_msg", `{"type":"client_msg","payload":{"client_id":"5b2f7c1e-3d4a-4e8b-b1c2-9a0d8e7f6a51","payload":{"action":"req","request":{"type":11,"text":"hi all"}}}}`,
		ott.B2M{Type: ott.TypeClientMsg, ClientMsg: ott.ClientMsg{ClientID: clientID,
			Payload: json.RawMessage(`{"action":"req","request":{"type":11,"text":"hi all"}}`)}}},
}

const (
	movieNight       = `{"name":"MovieNight","title":"Friday films","description":"","isTemporary":false,"visibility":"public","queueMode":"vote","currentSource":null,"users":0}`
	movieNightPlayng = `{"name":"MovieNight","title":"Friday films","description":"","isTemporary":false,"visibility":"public","queueMode":"vote","currentSource":{"service":"youtube","id":"abc123XYZ00","title":"Trailer","length":142},"users":3}`
	trailer          = `{"service":"youtube","id":"abc123XYZ00","title":"Trailer","length":142}`
)

var m2bExamples = []struct {
	name string
	json string
	want ott.M2B
}{
	{"init", `{"type":"init","payload":{"port":3000,"region":"ewr","id":"9e1c2b4a-7f3d-4c59-8a1e-6b0d2f4c8e77"}}`,
		ott.M2B{Type: ott.TypeInit, Init: ott.MonolithInit{Port: 3000, Region: "ewr", ID: monolithID}}},
	{"init handshake", `{"type":"init","payload":{"port":3000,"region":"unknown","id":"..."}}`,
		ott.M2B{Type: ott.TypeInit, Init: ott.MonolithInit{Port: 3000, Region: "unknown", ID: "..."}}},
	{"loaded", `{"type":"loaded","payload":{"room":` + movieNight + `,"load_epoch":418}}`,
		ott.M2B{Type: ott.TypeLoaded, Loaded: ott.Loaded{LoadEpoch: 418, Room: ott.RoomMetadata{
			Name: "MovieNight", Title: "Friday films", Visibility: "public", QueueMode: "vote",
			Raw: json.RawMessage(movieNight)}}}},
	{"unloaded", `{"type":"unloaded","payload":{"name":"MovieNight","reason":"Commanded"}}`,
		ott.M2B{Type: ott.TypeUnloaded, Unloaded: ott.Unloaded{Name: "MovieNight", Reason: ott.UnloadCommanded}}},
	{"gossip", `{"type":"gossip","payload":{"rooms":[{"room":` + movieNightPlayng + `,"load_epoch":418}]}}`,
		ott.M2B{Type: ott.TypeGossip, Gossip: ott.Gossip{Rooms: []ott.GossipRoom{{LoadEpoch: 418, Room: ott.RoomMetadata{
			Name: "MovieNight", Title: "Friday films", Visibility: "public", QueueMode: "vote",
			CurrentSource: json.RawMessage(trailer), Users: 3, Raw: json.RawMessage(movieNightPlayng)}}}}}},
	{"gossip empty", `{"type":"gossip","payload":{"rooms":[]}}`,
		ott.M2B{Type: ott.TypeGossip, Gossip: ott.Gossip{Rooms: []ott.GossipRoom{}}}},
	{"room_msg unicast", `{"type":"room_msg","payload":{"room":"MovieNight","client_id":"5b2f7c1e-3d4a-4e8b-b1c2-9a0d8e7f6a51","payload":{"action":"you","info":{"id":"5b2f7c1e-3d4a-4e8b-b1c2-9a0d8e7f6a51"}}}}`,
		ott.M2B{Type: ott.TypeRoomMsg, RoomMsg: ott.RoomMsg{Room: "MovieNight", ClientID: clientID,
			Payload: json.RawMessage(`{"action":"you","info":{"id":"5b2f7c1e-3d4a-4e8b-b1c2-9a0d8e7f6a51"}}`)}}},
	{"room_msg broadcast", `{"type":"room_msg","payload":{"room":"MovieNight","payload":{"action":"sync","playbackPosition":12.5}}}`,
		ott.M2B{Type: ott.TypeRoomMsg, RoomMsg: ott.RoomMsg{Room: "MovieNight",
			Payload: json.RawMessage(`{"action":"sync","playbackPosition":12.5}`)}}},
	{"kick", `{"type":"kick","payload":{"client_id":"5b2f7c1e-3d4a-4e8b-b1c2-9a0d8e7f6a51","reason":4002}}`,
		ott.M2B{Type: ott.TypeKick, Kick: ott.Kick{ClientID: clientID, Reason: ott.CloseRoomNotFound}}},
}

func TestSpecExamplesB2M(t *testing.T) {
	for _, tc := range b2mExamples {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ott.DecodeB2M([]byte(tc.json))
			if err != nil {
				t.Fatalf("DecodeB2M: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("DecodeB2M:\ngot  %+v\nwant %+v", got, tc.want)
			}
			if enc := got.Append(nil); string(enc) != tc.json {
				t.Errorf("decoded.Append:\ngot  %s\nwant %s", enc, tc.json)
			}
			if enc := tc.want.Append(nil); string(enc) != tc.json {
				t.Errorf("want.Append:\ngot  %s\nwant %s", enc, tc.json)
			}
			if _, err := ott.DecodeM2B([]byte(tc.json)); tc.want.Type != ott.TypeInit && !errors.Is(err, ott.ErrUnknownType) {
				t.Errorf("DecodeM2B of a B2M message: err %v, want ErrUnknownType", err)
			}
		})
	}
}

func TestSpecExamplesM2B(t *testing.T) {
	for _, tc := range m2bExamples {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ott.DecodeM2B([]byte(tc.json))
			if err != nil {
				t.Fatalf("DecodeM2B: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("DecodeM2B:\ngot  %+v\nwant %+v", got, tc.want)
			}
			if enc := got.Append(nil); string(enc) != tc.json {
				t.Errorf("decoded.Append:\ngot  %s\nwant %s", enc, tc.json)
			}
			// Without Raw, the fields encode to the same bytes.
			noRaw := got
			noRaw.Loaded.Room.Raw = nil
			noRaw.Gossip.Rooms = nil
			for _, r := range got.Gossip.Rooms {
				r.Room.Raw = nil
				noRaw.Gossip.Rooms = append(noRaw.Gossip.Rooms, r)
			}
			if enc := noRaw.Append(nil); string(enc) != tc.json {
				t.Errorf("Append without Raw:\ngot  %s\nwant %s", enc, tc.json)
			}
			var d ott.Decoder
			for range 2 {
				if got, err := d.DecodeM2B([]byte(tc.json)); err != nil || !reflect.DeepEqual(got, tc.want) {
					t.Errorf("Decoder.DecodeM2B: got %+v, %v", got, err)
				}
			}
		})
	}
}

func TestDecodeB2MRules(t *testing.T) {
	tests := []struct {
		name string
		json string
		want ott.B2M // when err is nil
		err  error
	}{
		{"not json", `{"type":"load",`, ott.B2M{}, ott.ErrSyntax},
		{"empty", ``, ott.B2M{}, ott.ErrSyntax},
		{"trailing data", `{"type":"load","payload":{"room":"a"}} x`, ott.B2M{}, ott.ErrSyntax},
		{"array", `[1,2]`, ott.B2M{}, ott.ErrEnvelope},
		{"type not a string", `{"type":5,"payload":{"room":"a"}}`, ott.B2M{}, ott.ErrEnvelope},
		{"no type", `{"payload":{"room":"a"}}`, ott.B2M{}, ott.ErrEnvelope},
		{"no payload", `{"type":"load"}`, ott.B2M{}, ott.ErrEnvelope},
		{"payload null", `{"type":"load","payload":null}`, ott.B2M{}, ott.ErrEnvelope},
		{"payload array", `{"type":"load","payload":["room"]}`, ott.B2M{}, ott.ErrEnvelope},
		{"unknown type", `{"type":"reload","payload":{}}`, ott.B2M{}, ott.ErrUnknownType},
		{"M2B type", `{"type":"kick","payload":{"client_id":"c","reason":1}}`, ott.B2M{}, ott.ErrUnknownType},
		{"type case", `{"type":"Load","payload":{"room":"a"}}`, ott.B2M{}, ott.ErrUnknownType},
		{"missing room", `{"type":"load","payload":{"name":"a"}}`, ott.B2M{}, ott.ErrField},
		{"room not a string", `{"type":"load","payload":{"room":7}}`, ott.B2M{}, ott.ErrField},
		{"join without client", `{"type":"join","payload":{"room":"a","token":"t"}}`, ott.B2M{}, ott.ErrField},
		{"leave with client_id", `{"type":"leave","payload":{"client_id":"c"}}`, ott.B2M{}, ott.ErrField},
		{"client_msg payload string", `{"type":"client_msg","payload":{"client_id":"c","payload":"hi"}}`, ott.B2M{}, ott.ErrField},
		{"client_msg payload number", `{"type":"client_msg","payload":{"client_id":"c","payload":1}}`, ott.B2M{}, ott.ErrField},
		{"client_msg no payload", `{"type":"client_msg","payload":{"client_id":"c"}}`, ott.B2M{}, ott.ErrField},
		{"syntax error after a field error", `{"type":"load","payload":{"room":7},}`, ott.B2M{}, ott.ErrSyntax},
		{"too deep", `{"type":"client_msg","payload":{"client_id":"c","payload":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}}`, ott.B2M{}, ott.ErrSyntax},

		{"client_msg payload null", `{"type":"client_msg","payload":{"client_id":"c","payload":null}}`,
			ott.B2M{Type: ott.TypeClientMsg, ClientMsg: ott.ClientMsg{ClientID: "c", Payload: json.RawMessage(`null`)}}, nil},
		{"client_msg payload array", `{"type":"client_msg","payload":{"client_id":"c","payload":[1, 2]}}`,
			ott.B2M{Type: ott.TypeClientMsg, ClientMsg: ott.ClientMsg{ClientID: "c", Payload: json.RawMessage(`[1, 2]`)}}, nil},
		{"join without token", `{"type":"join","payload":{"room":"a","client":"c"}}`,
			ott.B2M{Type: ott.TypeJoin, Join: ott.Join{Room: "a", Client: "c"}}, nil},
		{"join token not a string", `{"type":"join","payload":{"room":"a","client":"c","token":{"x":1}}}`,
			ott.B2M{Type: ott.TypeJoin, Join: ott.Join{Room: "a", Client: "c"}}, nil},
		{"extra fields", `{"x":[{}],"type":"load","payload":{"a":null,"room":"r","b":{"c":[true,false]}},"y":1e5}`,
			ott.B2M{Type: ott.TypeLoad, Load: ott.Load{Room: "r"}}, nil},
		{"payload first", `{"payload":{"room":"r"},"type":"unload"}`,
			ott.B2M{Type: ott.TypeUnload, Unload: ott.Unload{Room: "r"}}, nil},
		{"last key wins", `{"type":"load","payload":{"room":"a","room":"b"},"type":"unload"}`,
			ott.B2M{Type: ott.TypeUnload, Unload: ott.Unload{Room: "b"}}, nil},
		{"last type wins over a bad one", `{"type":7,"payload":{"room":"a"},"type":"load"}`,
			ott.B2M{Type: ott.TypeLoad, Load: ott.Load{Room: "a"}}, nil},
		{"field error healed by a later payload", `{"type":"load","payload":{"room":1},"payload":{"room":"b"}}`,
			ott.B2M{Type: ott.TypeLoad, Load: ott.Load{Room: "b"}}, nil},
		{"escapes", `{"t\u0079pe":"lo\u0061d","payload":{"\u0072oom":"M\u00f6vie\n\"\\\/\ud83d\ude00\ud800x"}}`,
			ott.B2M{Type: ott.TypeLoad, Load: ott.Load{Room: "M\u00f6vie\n\"\\/\U0001F600\uFFFDx"}}, nil},
		{"invalid utf-8", "{\"type\":\"load\",\"payload\":{\"room\":\"a\xffb\"}}",
			ott.B2M{Type: ott.TypeLoad, Load: ott.Load{Room: "a\uFFFDb"}}, nil},
		{"whitespace", " \n{ \"type\" :\t\"init\" ,\r\"payload\" : { \"id\" : \"b\" } } \n",
			ott.B2M{Type: ott.TypeInit, Init: ott.BalancerInit{ID: "b"}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkDecode(t, ott.DecodeB2M, tc.json, tc.want, tc.err) })
	}
}

func TestDecodeM2BRules(t *testing.T) {
	tests := []struct {
		name string
		json string
		want ott.M2B // when err is nil
		err  error
	}{
		{"init port string", `{"type":"init","payload":{"port":"3000","region":"r","id":"i"}}`, ott.M2B{}, ott.ErrField},
		{"init port fraction", `{"type":"init","payload":{"port":3000.5,"region":"r","id":"i"}}`, ott.M2B{}, ott.ErrField},
		{"init without region", `{"type":"init","payload":{"port":3000,"id":"i"}}`, ott.M2B{}, ott.ErrField},
		{"loaded without epoch", `{"type":"loaded","payload":{"room":{"name":"a"}}}`, ott.M2B{}, ott.ErrField},
		{"loaded room without name", `{"type":"loaded","payload":{"room":{"title":"a"},"load_epoch":1}}`, ott.M2B{}, ott.ErrField},
		{"loaded room not an object", `{"type":"loaded","payload":{"room":"a","load_epoch":1}}`, ott.M2B{}, ott.ErrField},
		{"gossip rooms null", `{"type":"gossip","payload":{"rooms":null}}`, ott.M2B{}, ott.ErrField},
		{"gossip entry without epoch", `{"type":"gossip","payload":{"rooms":[{"room":{"name":"a"}}]}}`, ott.M2B{}, ott.ErrField},
		{"unloaded with room", `{"type":"unloaded","payload":{"room":"a","reason":"Commanded"}}`, ott.M2B{}, ott.ErrField},
		{"room_msg without payload", `{"type":"room_msg","payload":{"room":"a"}}`, ott.M2B{}, ott.ErrField},
		{"room_msg client_id number", `{"type":"room_msg","payload":{"room":"a","client_id":5,"payload":{}}}`, ott.M2B{}, ott.ErrField},
		{"kick without reason", `{"type":"kick","payload":{"client_id":"c"}}`, ott.M2B{}, ott.ErrField},
		{"B2M type", `{"type":"join","payload":{"room":"a","client":"c","token":"t"}}`, ott.M2B{}, ott.ErrUnknownType},

		{"room_msg client_id null", `{"type":"room_msg","payload":{"room":"a","client_id":null,"payload":{"x":1}}}`,
			ott.M2B{Type: ott.TypeRoomMsg, RoomMsg: ott.RoomMsg{Room: "a", Payload: json.RawMessage(`{"x":1}`)}}, nil},
		{"room_msg payload not an object", `{"type":"room_msg","payload":{"room":"a","payload":"text"}}`,
			ott.M2B{Type: ott.TypeRoomMsg, RoomMsg: ott.RoomMsg{Room: "a", Payload: json.RawMessage(`"text"`)}}, nil},
		{"kick reason 70000", `{"type":"kick","payload":{"client_id":"c","reason":70000}}`,
			ott.M2B{Type: ott.TypeKick, Kick: ott.Kick{ClientID: "c", Reason: 70000}}, nil},
		{"kick reason negative", `{"type":"kick","payload":{"client_id":"c","reason":-1}}`,
			ott.M2B{Type: ott.TypeKick, Kick: ott.Kick{ClientID: "c", Reason: -1}}, nil},
		{"kick reason exponent", `{"type":"kick","payload":{"client_id":"c","reason":4e3}}`,
			ott.M2B{Type: ott.TypeKick, Kick: ott.Kick{ClientID: "c", Reason: 4000}}, nil},
		{"kick reason string", `{"type":"kick","payload":{"client_id":"c","reason":"bye"}}`,
			ott.M2B{Type: ott.TypeKick, Kick: ott.Kick{ClientID: "c", Reason: 0}}, nil},
		{"kick reason fraction", `{"type":"kick","payload":{"client_id":"c","reason":4000.5}}`,
			ott.M2B{Type: ott.TypeKick, Kick: ott.Kick{ClientID: "c", Reason: 0}}, nil},
		{"metadata lenient", `{"type":"loaded","payload":{"load_epoch":2,"room":{"name":"a","title":null,"users":"many","isTemporary":1,"extra":[]}}}`,
			ott.M2B{Type: ott.TypeLoaded, Loaded: ott.Loaded{LoadEpoch: 2, Room: ott.RoomMetadata{Name: "a",
				Raw: json.RawMessage(`{"name":"a","title":null,"users":"many","isTemporary":1,"extra":[]}`)}}}, nil},
		{"gossip duplicate names", `{"type":"gossip","payload":{"rooms":[{"room":{"name":"a"},"load_epoch":1},{"load_epoch":2,"room":{"name":"a"}}]}}`,
			ott.M2B{Type: ott.TypeGossip, Gossip: ott.Gossip{Rooms: []ott.GossipRoom{
				{LoadEpoch: 1, Room: ott.RoomMetadata{Name: "a", Raw: json.RawMessage(`{"name":"a"}`)}},
				{LoadEpoch: 2, Room: ott.RoomMetadata{Name: "a", Raw: json.RawMessage(`{"name":"a"}`)}},
			}}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkDecode(t, ott.DecodeM2B, tc.json, tc.want, tc.err) })
	}
}

func TestAppendEscapes(t *testing.T) {
	for _, s := range []string{
		"", "plain", `"quoted" \back\slash/`, "\x00\x01\x1f\x7f", "\a\b\f\n\r\t\v",
		"tab\tnew\nline", "h\u00e9llo w\u00f6rld \U0001F600", "\u2028\u2029", "bad \xff\xfe utf8 \xe2\x82",
		"<script>&amp;</script>", strings.Repeat("x", 1000),
	} {
		enc := ott.Load{Room: s}.Append(nil)
		var v struct {
			Payload struct{ Room string }
		}
		if err := json.Unmarshal(enc, &v); err != nil {
			t.Errorf("Load{%q}.Append = %s: not JSON: %v", s, enc, err)
			continue
		}
		want := string([]rune(s)) // invalid bytes become U+FFFD
		if v.Payload.Room != want {
			t.Errorf("Load{%q}.Append = %s decodes to %q, want %q", s, enc, v.Payload.Room, want)
		}
		m, err := ott.DecodeB2M(enc)
		if err != nil || m.Load.Room != want {
			t.Errorf("DecodeB2M(%s) = %q, %v; want %q", enc, m.Load.Room, err, want)
		}
	}
}

func TestAppendNilPayload(t *testing.T) {
	got := string(ott.RoomMsg{Room: "a"}.Append(nil))
	if want := `{"type":"room_msg","payload":{"room":"a","payload":null}}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	got = string(ott.Gossip{}.Append([]byte("x")))
	if want := `x{"type":"gossip","payload":{"rooms":[]}}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestSanitizeCloseCode(t *testing.T) {
	tests := []struct{ in, want int }{
		{-5, 1000}, {0, 1000}, {999, 1000},
		{1000, 1000}, {1001, 1001}, {1002, 1002}, {1003, 1003},
		{1004, 1000}, {1005, 1000}, {1006, 1000},
		{1007, 1007}, {1011, 1011}, {1012, 1012}, {1013, 1013}, {1014, 1000},
		{1015, 1000}, {1016, 1000}, {2999, 1000},
		{3000, 3000}, {3999, 3999}, {4000, 4000}, {4005, 4005}, {4999, 4999},
		{5000, 4000}, {70000, 4000},
	}
	for _, tc := range tests {
		if got := ott.SanitizeCloseCode(tc.in); got != tc.want {
			t.Errorf("SanitizeCloseCode(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestTypeNames(t *testing.T) {
	for _, name := range []string{"init", "load", "unload", "join", "leave", "client_msg", "loaded", "unloaded", "gossip", "room_msg", "kick"} {
		typ, ok := ott.ParseType(name)
		if !ok || typ.String() != name {
			t.Errorf("ParseType(%q) = %v (%q), %v", name, typ, typ.String(), ok)
		}
	}
	if _, ok := ott.ParseType("Init"); ok {
		t.Errorf("ParseType(Init) ok")
	}
}

// checkDecode runs one case of a decoder's table: decoding in gives an error
// that is wantErr, or (wantErr nil) the value want.
func checkDecode[T any](t *testing.T, decode func([]byte) (T, error), in string, want T, wantErr error) {
	t.Helper()
	got, err := decode([]byte(in))
	if wantErr != nil {
		if !errors.Is(err, wantErr) {
			t.Fatalf("err = %v, want %v", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatalf("err = %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}
