package ott_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/roomlb/roomlb/ott"
)

// FuzzDecode checks, for both directions, that decoding never panics, that
// it agrees with encoding/json on what is JSON and on the values of the
// fields, and that whatever decodes re-encodes to valid JSON that decodes to
// the same message (and to the same bytes again).
func FuzzDecode(f *testing.F) {
	for _, tc := range b2mExamples {
		f.Add([]byte(tc.json))
	}
	for _, tc := range m2bExamples {
		f.Add([]byte(tc.json))
	}
	for _, s := range []string{
		`{"payload":{"room":"r"},"type":"unload"}`,
		`{"type":"load","payload":{"room":"a","room":"b"},"type":"unload"}`,
		`{"t\u0079pe":"lo\u0061d","payload":{"\u0072oom":"M\u00f6vie\n\"\\\/\ud83d\ude00\ud800x"}}`,
		"{\"type\":\"load\",\"payload\":{\"room\":\"a\xffb\"}}",
		`{"type":"kick","payload":{"client_id":"c","reason":"bye"}}`,
		`{"type":"kick","payload":{"client_id":"c","reason":1e400}}`,
		`{"type":"room_msg","payload":{"room":"a","client_id":null,"payload":[1,{"a":-0.5e-3}]}}`,
		`{"type":"loaded","payload":{"load_epoch":2,"room":{"name":"a","title":null,"users":"many","isTemporary":1}}}`,
		`{"type":"client_msg","payload":{"client_id":"c","payload":null}}`,
		`{"type":"join","payload":{"room":"a","client":"c","token":{"x":1}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		valid := json.Valid(data)
		var d ott.Decoder

		b, err := ott.DecodeB2M(data)
		checkJSON(t, "DecodeB2M", data, valid, err)
		if err == nil {
			checkB2MOracle(t, data, b)
			enc := b.Append(nil)
			b2, err := ott.DecodeB2M(enc)
			if err != nil {
				t.Fatalf("DecodeB2M(%q) ok, its encoding %q: %v", data, enc, err)
			}
			if !reflect.DeepEqual(b, b2) {
				t.Fatalf("DecodeB2M(%q) = %+v, re-encoded %q decodes to %+v", data, b, enc, b2)
			}
			if enc2 := b2.Append(nil); !bytes.Equal(enc, enc2) {
				t.Fatalf("encoding not stable: %q then %q", enc, enc2)
			}
		}
		if bd, err := d.DecodeB2M(data); (err == nil) != (b.Type != 0) || !reflect.DeepEqual(b, bd) {
			t.Fatalf("Decoder.DecodeB2M(%q) = %+v, %v; DecodeB2M = %+v", data, bd, err, b)
		}

		m, err := ott.DecodeM2B(data)
		checkJSON(t, "DecodeM2B", data, valid, err)
		if err == nil {
			enc := m.Append(nil)
			m2, err := ott.DecodeM2B(enc)
			if err != nil {
				t.Fatalf("DecodeM2B(%q) ok, its encoding %q: %v", data, enc, err)
			}
			if !reflect.DeepEqual(m, m2) {
				t.Fatalf("DecodeM2B(%q) = %+v, re-encoded %q decodes to %+v", data, m, enc, m2)
			}
			if enc2 := m2.Append(nil); !bytes.Equal(enc, enc2) {
				t.Fatalf("encoding not stable: %q then %q", enc, enc2)
			}
		}
		if md, err := d.DecodeM2B(data); (err == nil) != (m.Type != 0) || !reflect.DeepEqual(m, md) {
			t.Fatalf("Decoder.DecodeM2B(%q) = %+v, %v; DecodeM2B = %+v", data, md, err, m)
		}
	})
}

// checkJSON checks that a decode succeeded only on JSON and reported a
// syntax error exactly for what is not JSON.
func checkJSON(t *testing.T, fn string, data []byte, valid bool, err error) {
	t.Helper()
	if err == nil && !valid {
		t.Fatalf("%s(%q) ok, but it is not JSON", fn, data)
	}
	if isSyntax := errors.Is(err, ott.ErrSyntax); isSyntax == valid {
		t.Fatalf("%s(%q): err %v, json.Valid %v", fn, data, err, valid)
	}
}

// checkB2MOracle compares the decoded strings with encoding/json's reading
// of the same frame (exact keys, last key wins).
func checkB2MOracle(t *testing.T, data []byte, m ott.B2M) {
	t.Helper()
	var env map[string]json.RawMessage
	if err := json.Unmarshal(data, &env); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	var typ string
	var p map[string]json.RawMessage
	if json.Unmarshal(env["type"], &typ) != nil || json.Unmarshal(env["payload"], &p) != nil {
		t.Fatalf("encoding/json disagrees on the envelope of %q", data)
	}
	if typ != m.Type.String() {
		t.Fatalf("type %q, encoding/json %q", m.Type, typ)
	}
	str := func(field, got string) {
		var want string
		json.Unmarshal(p[field], &want)
		if got != want {
			t.Fatalf("%s.%s = %q, encoding/json %q", typ, field, got, want)
		}
	}
	switch m.Type {
	case ott.TypeInit:
		str("id", m.Init.ID)
	case ott.TypeLoad:
		str("room", m.Load.Room)
	case ott.TypeUnload:
		str("room", m.Unload.Room)
	case ott.TypeJoin:
		str("room", m.Join.Room)
		str("client", m.Join.Client)
		str("token", m.Join.Token)
	case ott.TypeLeave:
		str("client", m.Leave.Client)
	case ott.TypeClientMsg:
		str("client_id", m.ClientMsg.ClientID)
		if !bytes.Equal(m.ClientMsg.Payload, p["payload"]) {
			t.Fatalf("client_msg.payload = %q, encoding/json %q", m.ClientMsg.Payload, p["payload"])
		}
	}
}
