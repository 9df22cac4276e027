package ott

import "testing"

func TestBroadcastChangesState(t *testing.T) {
	for _, tc := range []struct {
		payload string
		want    bool
	}{
		{`{"action":"sync","queue":[],"currentSource":null}`, true},
		{`{"currentSource":{"id":"a"},"action":"sync"}`, true},
		{`{"action":"sync","title":"x"}`, true},
		{`{"action":"sync","playbackPosition":12.5}`, false}, // every join sends it
		{`{"action":"sync","users":[],"voteCounts":[]}`, false},
		{`{"action":"chat","from":{"name":"a"},"text":"hi"}`, false},
		{`{"action":"event","request":{"type":5},"title":"x"}`, false},
		{`{"action":"user","update":{"kind":"update"}}`, false},
		{`{"action":"sync","ti\u0074le":"x"}`, true},
		{`not json`, true},
		{`{"action":"sync","title":`, true},
	} {
		if got := BroadcastChangesState([]byte(tc.payload)); got != tc.want {
			t.Errorf("BroadcastChangesState(%s) = %v, want %v", tc.payload, got, tc.want)
		}
	}
}

func TestRequestChangesState(t *testing.T) {
	for _, tc := range []struct {
		payload string
		want    bool
	}{
		{`{"action":"req","request":{"type":11,"text":"hi"}}`, false},
		{`{"request":{"text":"hi","type":11},"action":"req"}`, false},
		{`{"action":"req","request":{"type":8,"video":{}}}`, false},
		{`{"action":"status","status":"ready"}`, false},
		{`{"action":"notify","message":"usernameChanged"}`, false},
		{`{"action":"req","request":{"type":5,"video":{"service":"youtube","id":"a"}}}`, true},
		{`{"action":"req","request":{"type":4,"value":3}}`, true},
		{`{"action":"req","request":{"type":13,"settings":{}}}`, true},
		{`{"action":"req","request":"chat"}`, true},
		{`{"action":"req"}`, true},
		{`{"action":"something new"}`, true},
		{`[1]`, true},
		{`{"action":"req","request":{"type":11`, true},
	} {
		if got := RequestChangesState([]byte(tc.payload)); got != tc.want {
			t.Errorf("RequestChangesState(%s) = %v, want %v", tc.payload, got, tc.want)
		}
	}
}

func TestChangesStateAllocs(t *testing.T) {
	chat := []byte(`{"action":"req","request":{"type":11,"text":"hello everyone"}}`)
	sync := []byte(`{"action":"sync","queue":[{"service":"youtube","id":"a"}],"currentSource":null}`)
	if n := testing.AllocsPerRun(100, func() { RequestChangesState(chat); BroadcastChangesState(sync) }); n != 0 {
		t.Fatalf("%v allocations per call, want 0", n)
	}
}
