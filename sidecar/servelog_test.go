package sidecar

import "testing"

func TestMergeSpans(t *testing.T) {
	lines := []ServeRecord{
		{Node: "n1", Room: "lobby", Epoch: 1733123456789012, First: 100, Last: 200},
		{Node: "n1", Room: "Lobby", Epoch: 1733123456789012, First: 50, Last: 150},
		{Node: "n2", Room: "lobby", Epoch: 1733123456789999, First: 300, Last: 400},
		{Node: "n2", Room: "lobby", Epoch: 1733123456789999, First: 350, Last: 350, Client: "c1"},
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

func TestCheckServeLog(t *testing.T) {
	for _, tc := range []struct {
		name   string
		spans  []serveSpan
		double []bool // per fault, in order: two nodes at once (else the epoch went back)
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
		}, []bool{true}},
		{"smaller epoch served after a larger one", []serveSpan{
			{Node: "n2", Room: "r", Epoch: 5, First: 10, Last: 20},
			{Node: "n1", Room: "r", Epoch: 4, First: 30, Last: 40},
		}, []bool{false}},
		{"one node keeps its old epoch after the new one", []serveSpan{
			{Node: "n1", Room: "r", Epoch: 1, First: 10, Last: 40},
			{Node: "n1", Room: "r", Epoch: 2, First: 20, Last: 30},
		}, []bool{false}},
		{"one epoch on two nodes", []serveSpan{
			{Node: "n1", Room: "r", Epoch: 7, First: 10, Last: 20},
			{Node: "n2", Room: "r", Epoch: 7, First: 30, Last: 40},
		}, []bool{false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckServeLog(toRecords(tc.spans))
			if len(got) != len(tc.double) {
				t.Fatalf("faults %+v, want %v", got, tc.double)
			}
			for i, f := range got {
				if f.Double != tc.double[i] || f.Detail == "" {
					t.Errorf("fault %d: %+v, want double=%v with a detail", i, f, tc.double[i])
				}
			}
		})
	}
}

func toRecords(spans []serveSpan) []ServeRecord {
	var out []ServeRecord
	for _, s := range spans {
		out = append(out, ServeRecord{Node: s.Node, Room: s.Room, Epoch: s.Epoch, First: s.First, Last: s.Last})
	}
	return out
}
