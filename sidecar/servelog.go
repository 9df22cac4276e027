package sidecar

import (
	"context"
	"encoding/json"
	"io"
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
	written     int64 // last as last logged; guarded by Sidecar.mu
}

// served stamps the room as served now. Only called when the serve log is on.
func (r *room) served() {
	now := time.Now().UnixNano()
	r.span.first.CompareAndSwap(0, now)
	r.span.last.Store(now)
}

// takeSpan returns rm's span as a record if it grew since it was last
// logged. reset starts a new span (the epoch changes, the room leaves).
// s.mu is held.
func (s *Sidecar) takeSpan(rm *room, reset bool) (ServeRecord, bool) {
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
// the table or changes epoch. s.mu is held.
func (s *Sidecar) endSpan(rm *room) {
	if s.serves == nil {
		return
	}
	if rec, ok := s.takeSpan(rm, true); ok {
		s.serves.mu.Lock()
		s.serves.pending = append(s.serves.pending, rec)
		s.serves.mu.Unlock()
	}
}

// joinServed logs that c joined rm here. s.mu is held.
func (s *Sidecar) joinServed(rm *room, c *client) {
	if s.serves == nil {
		return
	}
	now := time.Now().UnixNano()
	s.serves.mu.Lock()
	s.serves.pending = append(s.serves.pending, ServeRecord{Node: s.cfg.NodeID, Room: rm.key, Epoch: rm.lease.Epoch, First: now, Last: now, Client: c.id})
	s.serves.mu.Unlock()
}

// serveLogLoop writes the serve log every serveInterval, and once more when
// ctx ends.
func (s *Sidecar) serveLogLoop(ctx context.Context) {
	if s.serves == nil {
		return
	}
	t := time.NewTicker(serveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flushServeLog()
			return
		case <-t.C:
		}
		s.flushServeLog()
	}
}

// flushServeLog writes the records of ended spans and of every room served
// since the last write.
func (s *Sidecar) flushServeLog() {
	if s.serves == nil {
		return
	}
	s.mu.Lock()
	var recs []ServeRecord
	for _, rm := range s.rooms {
		if rec, ok := s.takeSpan(rm, false); ok {
			recs = append(recs, rec)
		}
	}
	s.mu.Unlock()
	l := s.serves
	l.mu.Lock()
	defer l.mu.Unlock()
	recs = append(l.pending, recs...)
	l.pending = nil
	enc := json.NewEncoder(l.w)
	for _, rec := range recs {
		if err := enc.Encode(rec); err != nil {
			s.log.Warn("sidecar: serve log", "err", err)
			return
		}
	}
}
