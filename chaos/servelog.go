package chaos

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/roomlb/roomlb/sidecar"
)

// serveLine is one line of a sidecar's --serve-log (sidecar.ServeRecord):
// node served room under epoch from First to Last (wall-clock Unix ns of
// the first and last client frame forwarded to the monolith or room message
// delivered to a client, since the node's previous line for that room and
// epoch). A line with Client is a join: node joined that client id to room
// at First.
type serveLine = sidecar.ServeRecord

// joinedAt maps the client ids of the join lines to their node.
func joinedAt(lines []serveLine) map[string]string {
	m := map[string]string{}
	for _, l := range lines {
		if l.Client != "" {
			m[l.Client] = l.Node
		}
	}
	return m
}

// serveSpan is every line of one node, room and epoch merged: the whole
// time the node served the room under that epoch.
type serveSpan struct {
	Node  string
	Room  string // lower case: room names are case-insensitive
	Epoch int64
	First int64
	Last  int64
}

// parseServeLog reads serve-log lines; it skips (and counts) lines it
// cannot parse, such as the last one of a sidecar killed mid-write.
func parseServeLog(r io.Reader) (lines []serveLine, bad int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var l serveLine
		if json.Unmarshal(b, &l) != nil || l.Node == "" || l.Room == "" || l.First == 0 || l.Last < l.First {
			bad++
			continue
		}
		lines = append(lines, l)
	}
	return lines, bad, sc.Err()
}

// readServeLogs parses the serve-log files; a file that does not exist
// (a sidecar that never served) is no error.
func readServeLogs(paths []string) (lines []serveLine, bad int, err error) {
	for _, p := range paths {
		f, err := os.Open(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, bad, err
		}
		l, b, err := parseServeLog(f)
		f.Close()
		if err != nil {
			return nil, bad, fmt.Errorf("%s: %w", p, err)
		}
		lines, bad = append(lines, l...), bad+b
	}
	return lines, bad, nil
}

// mergeSpans merges the lines of each (node, room, epoch): min first, max
// last. Spans come out by room, then first.
func mergeSpans(lines []serveLine) []serveSpan {
	type key struct {
		node, room string
		epoch      int64
	}
	m := map[key]*serveSpan{}
	for _, l := range lines {
		if l.Client != "" {
			continue // a join, not a span
		}
		k := key{l.Node, strings.ToLower(l.Room), l.Epoch}
		s := m[k]
		if s == nil {
			m[k] = &serveSpan{Node: l.Node, Room: k.room, Epoch: l.Epoch, First: l.First, Last: l.Last}
			continue
		}
		s.First, s.Last = min(s.First, l.First), max(s.Last, l.Last)
	}
	out := make([]serveSpan, 0, len(m))
	for _, s := range m {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Room != out[j].Room {
			return out[i].Room < out[j].Room
		}
		if out[i].First != out[j].First {
			return out[i].First < out[j].First
		}
		return out[i].Epoch < out[j].Epoch
	})
	return out
}

// checkSpans checks the serve spans of every room: no two nodes serve a
// room at one instant (their spans do not overlap), and epochs never go
// back (a span of a smaller epoch ends before a span of a larger one
// starts; one epoch belongs to one node).
func checkSpans(spans []serveSpan) []Violation {
	var out []Violation
	for i := 0; i < len(spans); {
		j := i
		for j < len(spans) && spans[j].Room == spans[i].Room {
			j++
		}
		out = append(out, checkRoomSpans(spans[i:j])...)
		i = j
	}
	return out
}

// checkRoomSpans checks one room's spans, sorted by first.
func checkRoomSpans(spans []serveSpan) []Violation {
	var out []Violation
	for i, a := range spans {
		for _, b := range spans[i+1:] {
			// b.First >= a.First. Spans are short next to a run, so the
			// quadratic walk is cheap.
			overlap := min(a.Last, b.Last) - b.First
			switch {
			case a.Node != b.Node && overlap > 0:
				out = append(out, Violation{
					Invariant: InvDoubleService, Room: a.Room, at: b.First,
					Detail: fmt.Sprintf("serve logs: %s (epoch %d) and %s (epoch %d) both served for %v from %s",
						a.Node, a.Epoch, b.Node, b.Epoch, time.Duration(overlap).Round(time.Microsecond), clock(b.First)),
				})
			case a.Epoch == b.Epoch && a.Node != b.Node:
				out = append(out, Violation{
					Invariant: InvEpochBack, Room: a.Room, at: b.First,
					Detail: fmt.Sprintf("serve logs: epoch %d served by %s and later by %s", a.Epoch, a.Node, b.Node),
				})
			case a.Epoch > b.Epoch:
				// a started first with the larger epoch: the smaller one
				// was served after a larger one.
				out = append(out, Violation{
					Invariant: InvEpochBack, Room: a.Room, at: b.First,
					Detail: fmt.Sprintf("serve logs: %s served epoch %d from %s, after %s had served epoch %d from %s",
						b.Node, b.Epoch, clock(b.First), a.Node, a.Epoch, clock(a.First)),
				})
			case a.Epoch < b.Epoch && a.Node == b.Node && a.Last > b.First:
				out = append(out, Violation{
					Invariant: InvEpochBack, Room: a.Room, at: b.First,
					Detail: fmt.Sprintf("serve logs: %s served epoch %d until %s, %v after it started epoch %d",
						a.Node, a.Epoch, clock(a.Last), time.Duration(a.Last-b.First).Round(time.Microsecond), b.Epoch),
				})
			}
		}
	}
	return out
}

// clock formats a Unix ns time of day, to the microsecond, for evidence.
func clock(ns int64) string { return time.Unix(0, ns).Format("15:04:05.000000") }
