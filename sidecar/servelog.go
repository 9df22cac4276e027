package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ServeRecord is one line of the serve log (Config.ServeLog): this node
// served Room at Epoch from First to Last (wall clock, Unix nanoseconds),
// that is, it wrote a client message of the room to its monolith or passed
// a room message to one of the room's clients. Lines are cumulative: a
// later line for the same node, room and epoch extends the span. roomlb
// chaos checks that no two nodes' spans of a room overlap. A record with
// Client is a join instead: this node joined that client id to the room at
// First (= Last); roomlb chaos learns from it which node served a client
// that a router carried over.
type ServeRecord struct {
	Node   string `json:"node"`
	Room   string `json:"room"`
	Epoch  int64  `json:"epoch"`
	First  int64  `json:"first"`
	Last   int64  `json:"last"`
	Client string `json:"client,omitempty"`
}

// serveInterval is how often the serve log is written.
const serveInterval = 250 * time.Millisecond

// serveLog writes ServeRecords. Rooms stamp their span themselves
// (room.served); the loop collects them.
type serveLog struct {
	w       io.Writer
	mu      sync.Mutex // guards w and pending
	pending []ServeRecord
}

// span is a room's time of service at its current epoch.
type span struct {
	first, last atomic.Int64
	written     int64 // last as last logged; guarded by the table's lock
}

// served stamps the room as served at wall (Unix ns), the wall time of the
// lease clock reading its lease was checked at: the stamp is the instant
// the lease allowed, never a moment after. Only called when the serve log
// is on.
func (r *room) served(wall int64) {
	r.span.first.CompareAndSwap(0, wall)
	r.span.last.Store(wall)
}

// takeSpan returns rm's span as a record if it grew since it was last
// logged. reset starts a new span (the epoch changes, the room leaves).
func (s locked) takeSpan(rm *room, reset bool) (ServeRecord, bool) {
	first, last := rm.span.first.Load(), rm.span.last.Load()
	if reset {
		rm.span.first.Store(0)
		rm.span.last.Store(0)
		rm.span.written = 0
	}
	if last == 0 || last == rm.span.written {
		return ServeRecord{}, false
	}
	if !reset {
		rm.span.written = last
	}
	return ServeRecord{Node: s.cfg.NodeID, Room: rm.key, Epoch: rm.lease.Epoch, First: first, Last: last}, true
}

// endSpan logs what is left of rm's span at its epoch: the room leaves
// the table or changes epoch.
func (s locked) endSpan(rm *room) {
	if s.serves == nil {
		return
	}
	if rec, ok := s.takeSpan(rm, true); ok {
		s.serves.mu.Lock()
		s.serves.pending = append(s.serves.pending, rec)
		s.serves.mu.Unlock()
	}
}

// joinServed logs that c joined rm here.
func (s locked) joinServed(rm *room, c *client) {
	if s.serves == nil {
		return
	}
	now := time.Now().UnixNano()
	s.serves.mu.Lock()
	s.serves.pending = append(s.serves.pending, ServeRecord{Node: s.cfg.NodeID, Room: rm.key, Epoch: rm.lease.Epoch, First: now, Last: now, Client: c.id})
	s.serves.mu.Unlock()
}

// run calls flush every serveInterval, and once more when ctx ends. It
// returns at once when the serve log is off (l is nil).
func (l *serveLog) run(ctx context.Context, flush func()) {
	if l == nil {
		return
	}
	every(ctx, serveInterval, flush)
	flush()
}

// flushServeLog writes the records of ended spans and of every room served
// since the last write.
func (s *Sidecar) flushServeLog() {
	if s.serves == nil {
		return
	}
	lk := s.lock()
	var recs []ServeRecord
	for _, rm := range s.rooms {
		if rec, ok := lk.takeSpan(rm, false); ok {
			recs = append(recs, rec)
		}
	}
	lk.unlock()
	if err := s.serves.write(recs); err != nil {
		s.log.Warn("sidecar: serve log", "err", err)
	}
}

// write writes the pending records, then recs.
func (l *serveLog) write(recs []ServeRecord) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	recs = append(l.pending, recs...)
	l.pending = nil
	enc := json.NewEncoder(l.w)
	for _, rec := range recs {
		if err := enc.Encode(rec); err != nil {
			return err
		}
	}
	return nil
}

// ServeFault is a breach of the serve log's rules: two nodes served a room
// at one instant (Double), or the room's epochs went back.
type ServeFault struct {
	Double bool
	Room   string
	At     int64 // Unix ns, when it began
	Detail string
}

// CheckServeLog checks the serve logs of every node of a cluster, merged:
// no two nodes serve a room at one instant, and a room's epochs never go
// back. Join records are left out. Unlike watching where rooms are loaded,
// it compares epochs and exact times: any overlap counts.
func CheckServeLog(recs []ServeRecord) []ServeFault {
	return checkSpans(mergeSpans(recs))
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

// mergeSpans merges the lines of each (node, room, epoch): min first, max
// last. Spans come out by room, then first.
func mergeSpans(lines []ServeRecord) []serveSpan {
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
func checkSpans(spans []serveSpan) []ServeFault {
	var out []ServeFault
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
func checkRoomSpans(spans []serveSpan) []ServeFault {
	var out []ServeFault
	for i, a := range spans {
		for _, b := range spans[i+1:] {
			// b.First >= a.First. Spans are short next to a run, so the
			// quadratic walk is cheap.
			overlap := min(a.Last, b.Last) - b.First
			switch {
			case a.Node != b.Node && overlap > 0:
				out = append(out, ServeFault{
					Double: true, Room: a.Room, At: b.First,
					Detail: fmt.Sprintf("%s (epoch %d) and %s (epoch %d) both served for %v from %s",
						a.Node, a.Epoch, b.Node, b.Epoch, time.Duration(overlap).Round(time.Microsecond), serveClock(b.First)),
				})
			case a.Epoch == b.Epoch && a.Node != b.Node:
				out = append(out, ServeFault{
					Room: a.Room, At: b.First,
					Detail: fmt.Sprintf("epoch %d served by %s and later by %s", a.Epoch, a.Node, b.Node),
				})
			case a.Epoch > b.Epoch:
				// a started first with the larger epoch: the smaller one
				// was served after a larger one.
				out = append(out, ServeFault{
					Room: a.Room, At: b.First,
					Detail: fmt.Sprintf("%s served epoch %d from %s, after %s had served epoch %d from %s",
						b.Node, b.Epoch, serveClock(b.First), a.Node, a.Epoch, serveClock(a.First)),
				})
			case a.Epoch < b.Epoch && a.Node == b.Node && a.Last > b.First:
				out = append(out, ServeFault{
					Room: a.Room, At: b.First,
					Detail: fmt.Sprintf("%s served epoch %d until %s, %v after it started epoch %d",
						a.Node, a.Epoch, serveClock(a.Last), time.Duration(a.Last-b.First).Round(time.Microsecond), b.Epoch),
				})
			}
		}
	}
	return out
}

// serveClock formats a Unix ns time of day, to the microsecond, for
// evidence.
func serveClock(ns int64) string { return time.Unix(0, ns).Format("15:04:05.000000") }
