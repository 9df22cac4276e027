package chaos

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/roomlb/roomlb/ott"
)

// The invariants a run checks; each violation names one.
const (
	// At most one node serves a room at any instant, from the sidecars'
	// serve logs.
	InvDoubleService = "double-service"
	// The same, seen by clients: two sessions of one room on different
	// nodes received chats sent over overlapping times.
	InvDoubleServiceClients = "double-service-clients"
	// A room's epochs never go back (serve logs).
	InvEpochBack = "epoch-back"
	// No chat is lost between clients connected through a steady phase.
	InvChatLost = "chat-lost"
	// Every client is served again within the bound after a fault.
	InvNotServed = "not-served-again"
	// No room is lost: clients are never told it does not exist (4002),
	// and every room can be joined at the end with its state.
	InvRoomLost = "room-lost"
	// No client is sent away for good (a close code of 4000 and up) but
	// for a lost session (4004, after Redis lost its data).
	InvKicked = "kicked"
	// No process panics or dies on its own.
	InvCrash = "crash"
	// A process the run starts again comes back.
	InvRestart = "restart-failed"
	// Every hostile request, frame or connection gets its documented
	// refusal (hostile.go); any other answer is a violation, with the
	// request and the answer.
	InvHostile = "hostile-accepted"
)

// lossGrace is how long a chat has to reach every client.
const lossGrace = time.Second

// gap is a time a client wanted to be served and received no chat for
// longer than the gap limit.
type gap struct {
	Client   int
	Room     string
	From, To int64
	Open     bool // still open at the end of the records
}

// findGaps finds every client's gaps: times over limit between two chats
// it received (or its first attempt and its first chat), leaving out its
// voluntary absences. A gap still open at end is Open.
func findGaps(rec records, end int64, limit time.Duration) []gap {
	type clientRecs struct {
		room  string
		start int64
		times []int64
	}
	cs := map[int]*clientRecs{}
	for _, s := range rec.sessions {
		c := cs[s.Client]
		if c == nil {
			c = &clientRecs{room: s.Room, start: s.Dial}
			cs[s.Client] = c
		}
		c.start = min(c.start, s.Dial)
	}
	for _, r := range rec.receipts {
		if c := cs[sessClient(rec, r)]; c != nil {
			c.times = append(c.times, r.At)
		}
	}
	ids := make([]int, 0, len(cs))
	for id := range cs {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	var out []gap
	for _, id := range ids {
		c := cs[id]
		slices.Sort(c.times)
		prev := c.start
		emit := func(from, to int64, open bool) {
			// Cut the voluntary absences out of (from, to).
			for _, a := range rec.aways[id] {
				if a.To <= from || a.From >= to {
					continue
				}
				if a.From-from > int64(limit) {
					out = append(out, gap{Client: id, Room: c.room, From: from, To: a.From})
				}
				from = max(from, a.To)
			}
			if to-from > int64(limit) {
				out = append(out, gap{Client: id, Room: c.room, From: from, To: to, Open: open})
			}
		}
		for _, t := range c.times {
			if t-prev > int64(limit) {
				emit(prev, t, false)
			}
			prev = max(prev, t)
		}
		if end-prev > int64(limit) {
			emit(prev, end, true)
		}
	}
	return out
}

// sessClient is the client of a receipt's session.
func sessClient(rec records, r receipt) int {
	return rec.sessionByID(int(r.Sess)).Client
}

// sessionByID finds a session; sessions are numbered from 1 in the order
// they were started, but recorded client by client.
func (rec records) sessionByID(id int) session {
	if rec.byID == nil {
		return session{Client: -1}
	}
	if s, ok := rec.byID[id]; ok {
		return s
	}
	return session{Client: -1}
}

// index builds the lookups the checks need.
func (rec *records) index() {
	rec.byID = make(map[int]session, len(rec.sessions))
	for _, s := range rec.sessions {
		rec.byID[s.ID] = s
	}
	rec.got = make(map[uint64]struct{}, len(rec.receipts))
	for _, r := range rec.receipts {
		rec.got[uint64(uint32(r.Chat))<<32|uint64(uint32(r.Sess))] = struct{}{}
	}
}

func (rec records) received(chat, sess int) bool {
	_, ok := rec.got[uint64(uint32(chat))<<32|uint64(uint32(sess))]
	return ok
}

// lossResult is what the loss check found in one steady window.
type lossResult struct {
	Checked  int // (chat, receiver) pairs that had to arrive
	Lost     int
	Rooms    map[string]int    // lost per room
	Examples map[string]string // the first loss of each room
}

// lostChats checks the chats sent in [from, to-lossGrace] between sessions
// served from before from until after to: each must reach every such
// session of its room.
func lostChats(rec records, from, to int64) lossResult {
	res := lossResult{Rooms: map[string]int{}, Examples: map[string]string{}}
	stable := map[string][]session{} // by room
	isStable := map[int]bool{}
	for _, s := range rec.sessions {
		if s.Sync != 0 && s.Sync < from && (s.Close == 0 || s.Close > to) && !movedWithin(s, from, to) {
			stable[s.Room] = append(stable[s.Room], s)
			isStable[s.ID] = true
		}
	}
	for id, c := range rec.chats {
		if c.Failed || c.Sent < from || c.Sent > to-int64(lossGrace) || !isStable[c.Sess] {
			continue
		}
		for _, r := range stable[c.Room] {
			res.Checked++
			if rec.received(id, r.ID) {
				continue
			}
			res.Lost++
			res.Rooms[c.Room]++
			if res.Examples[c.Room] == "" {
				res.Examples[c.Room] = fmt.Sprintf("chat %d sent at %s by client %d (session %d on %s) never reached client %d (session %d on %s)",
					id, clock(c.Sent), c.Sender, c.Sess, rec.sessionByID(c.Sess).Node, r.Client, r.ID, r.Node)
			}
		}
	}
	return res
}

// movedWithin reports whether a router carried s over to another node
// between from and to (served again only once its join there completed).
func movedWithin(s session, from, to int64) bool {
	for _, m := range s.Moves {
		if m >= from && m <= to {
			return true
		}
	}
	return false
}

// clientOverlaps finds sessions of one room on different nodes that
// received chats sent over overlapping times: each chat a session receives
// was handled by its node's monolith after it was sent, so two nodes
// handling the room's chats over interleaved times both served it. A
// session's node is the one that joined the id it was last given (the
// sidecars' join lines, rec.joined), or without them the node of its
// handshake up to its first carry-over.
func clientOverlaps(rec records) []Violation {
	type span struct {
		s        session
		node     string
		min, max int64
		n        int
	}
	// A span is one session's time on one node: until its next carry-over
	// (seg counts them).
	type key struct {
		sess, seg int
	}
	spans := map[key]*span{}
	for _, r := range rec.receipts {
		s := rec.sessionByID(int(r.Sess))
		if int(r.Chat) >= len(rec.chats) {
			continue
		}
		node, seg := s.Node, 0
		if rec.joined != nil {
			node = ""
			for i, y := range s.Yous {
				if y.At <= r.At {
					node, seg = rec.joined[y.ID], i
				}
			}
		} else if s.Moved != 0 && r.At >= s.Moved {
			node = ""
		}
		if node == "" {
			continue
		}
		sent := rec.chats[r.Chat].Sent
		k := key{s.ID, seg}
		sp := spans[k]
		if sp == nil {
			spans[k] = &span{s: s, node: node, min: sent, max: sent, n: 1}
			continue
		}
		sp.min, sp.max, sp.n = min(sp.min, sent), max(sp.max, sent), sp.n+1
	}
	byRoom := map[string][]*span{}
	for _, sp := range spans {
		byRoom[sp.s.Room] = append(byRoom[sp.s.Room], sp)
	}
	rooms := make([]string, 0, len(byRoom))
	for r := range byRoom {
		rooms = append(rooms, r)
	}
	sort.Strings(rooms)
	var out []Violation
	for _, room := range rooms {
		ss := byRoom[room]
		sort.Slice(ss, func(i, j int) bool { return ss[i].min < ss[j].min || ss[i].min == ss[j].min && ss[i].s.ID < ss[j].s.ID })
		for i, a := range ss {
			for _, b := range ss[i+1:] {
				if b.min >= a.max {
					break
				}
				if a.node == b.node {
					continue
				}
				overlap := min(a.max, b.max) - b.min
				out = append(out, Violation{
					Invariant: InvDoubleServiceClients, Room: room, at: b.min,
					Detail: fmt.Sprintf("client %d on %s (session %d) got chats sent %s..%s, client %d on %s (session %d) got chats sent %s..%s: %v of overlap",
						a.s.Client, a.node, a.s.ID, clock(a.min), clock(a.max), b.s.Client, b.node, b.s.ID, clock(b.min), clock(b.max),
						time.Duration(overlap).Round(time.Microsecond)),
				})
			}
		}
	}
	return out
}

// closeViolations: sessions closed with 4002 (the room does not exist) or
// another code of 4000 and up but 4004.
func closeViolations(rec records) []Violation {
	var out []Violation
	for _, s := range rec.sessions {
		switch {
		case s.Code == ott.CloseRoomNotFound:
			out = append(out, Violation{Invariant: InvRoomLost, Room: s.Room, at: s.Close,
				Detail: fmt.Sprintf("client %d (session %d via router%d, node %q) closed with 4002: room not found", s.Client, s.ID, s.Router+1, s.Node)})
		case s.Code >= 4000 && s.Code != ott.CloseMissingToken:
			out = append(out, Violation{Invariant: InvKicked, Room: s.Room, at: s.Close,
				Detail: fmt.Sprintf("client %d (session %d, node %q) closed with %d", s.Client, s.ID, s.Node, s.Code)})
		}
	}
	return out
}
