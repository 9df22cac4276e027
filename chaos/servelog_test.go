package chaos

import (
	"strings"
	"testing"
)

func TestParseServeLog(t *testing.T) {
	in := `{"node":"n1","room":"lobby","epoch":1733123456789012,"first":100,"last":200}

{"node":"n1","room":"Lobby","epoch":1733123456789012,"first":50,"last":150}
{"node":"n2","room":"lobby","epoch":1733123456789999,"first":300,"last":400}
{"node":"n2","room":"lob` // a sidecar killed mid-line
	lines, bad, err := parseServeLog(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 3 || bad != 1 {
		t.Fatalf("%d lines, %d bad; want 3 and 1", len(lines), bad)
	}
	spans := mergeSpans(lines)
	want := []serveSpan{
		{Node: "n1", Room: "lobby", Epoch: 1733123456789012, First: 50, Last: 200},
		{Node: "n2", Room: "lobby", Epoch: 1733123456789999, First: 300, Last: 400},
	}
	if len(spans) != len(want) {
		t.Fatalf("spans %+v, want %+v", spans, want)
	}
	for i := range want {
		if spans[i] != want[i] {
			t.Errorf("span %d: %+v, want %+v", i, spans[i], want[i])
		}
	}
}

func TestCheckSpans(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spans []serveSpan
		want  []string // invariants, in order
	}{
		{"handover", []serveSpan{
			{Node: "n1", Room: "r", Epoch: 1, First: 10, Last: 20},
			{Node: "n2", Room: "r", Epoch: 2, First: 21, Last: 30},
			{Node: "n1", Room: "r", Epoch: 3, First: 31, Last: 40},
		}, nil},
		{"touching ends are no overlap", []serveSpan{
			{Node: "n1", Room: "r", Epoch: 1, First: 10, Last: 20},
			{Node: "n2", Room: "r", Epoch: 2, First: 20, Last: 30},
		}, nil},
		{"other rooms do not interfere", []serveSpan{
			{Node: "n1", Room: "a", Epoch: 1, First: 10, Last: 20},
			{Node: "n2", Room: "b", Epoch: 1, First: 10, Last: 20},
		}, nil},
		{"two nodes at once", []serveSpan{
			{Node: "n1", Room: "r", Epoch: 1, First: 10, Last: 25},
			{Node: "n2", Room: "r", Epoch: 2, First: 20, Last: 30},
		}, []string{InvDoubleService}},
		{"smaller epoch served after a larger one", []serveSpan{
			{Node: "n2", Room: "r", Epoch: 5, First: 10, Last: 20},
			{Node: "n1", Room: "r", Epoch: 4, First: 30, Last: 40},
		}, []string{InvEpochBack}},
		{"one node keeps its old epoch after the new one", []serveSpan{
			{Node: "n1", Room: "r", Epoch: 1, First: 10, Last: 40},
			{Node: "n1", Room: "r", Epoch: 2, First: 20, Last: 30},
		}, []string{InvEpochBack}},
		{"one epoch on two nodes", []serveSpan{
			{Node: "n1", Room: "r", Epoch: 7, First: 10, Last: 20},
			{Node: "n2", Room: "r", Epoch: 7, First: 30, Last: 40},
		}, []string{InvEpochBack}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := checkSpans(mergeSpans(toLines(tc.spans)))
			if len(got) != len(tc.want) {
				t.Fatalf("violations %+v, want %v", got, tc.want)
			}
			for i, v := range got {
				if v.Invariant != tc.want[i] || v.Detail == "" {
					t.Errorf("violation %d: %+v, want %s with a detail", i, v, tc.want[i])
				}
			}
		})
	}
}

func toLines(spans []serveSpan) []serveLine {
	var out []serveLine
	for _, s := range spans {
		out = append(out, serveLine{Node: s.Node, Room: s.Room, Epoch: s.Epoch, First: s.First, Last: s.Last})
	}
	return out
}
