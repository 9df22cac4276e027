package chaos

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// analyze checks the phase's records and fills in every fault's row and
// the violations.
func (p *phaseRun) analyze(end endCheck) {
	rec := p.w.records()
	if err := writeSessions(filepath.Join(p.dir, "sessions.jsonl"), rec.sessions); err != nil {
		p.logf("write sessions: %v", err)
	}
	byFaultGaps := p.gapsByFault(findGaps(rec, end.at, p.w.gapLimit()), p.w.gapLimit())
	for i, f := range p.faults {
		p.faultService(rec, byFaultGaps[i], f)
		lr := lostChats(rec, f.steadyFrom, f.steadyTo)
		f.ChatsChecked, f.ChatsLost = lr.Checked, lr.Lost
		f.Violations = append(f.Violations, lossViolations(lr, f.steadyFrom)...)
	}
	var phaseV []Violation
	lr := lostChats(rec, p.warmupFrom, p.warmupTo)
	phaseV = append(phaseV, lossViolations(lr, p.warmupFrom)...)

	var timed []Violation
	if p.serveLog {
		var paths []string
		for _, n := range p.cl.nodes {
			paths = append(paths, n.serveLog)
		}
		lines, bad, err := readServeLogs(paths)
		p.report.ServeLogLines, p.report.ServeLogBad = len(lines), bad
		if err != nil {
			phaseV = append(phaseV, Violation{Invariant: InvDoubleService, Detail: "serve logs unreadable: " + err.Error()})
		}
		timed = append(timed, checkServeLog(lines)...)
		rec.joined = joinedAt(lines)
	}
	timed = append(timed, clientOverlaps(rec)...)
	timed = append(timed, closeViolations(rec)...)
	for _, e := range end.exits {
		timed = append(timed, Violation{Invariant: InvCrash, at: e.At.UnixNano(), Detail: fmt.Sprintf("%s ended on its own: %s", e.Name, e.Err)})
	}
	for _, rc := range end.rooms {
		if rc.Err != nil {
			phaseV = append(phaseV, Violation{Invariant: InvRoomLost, Room: rc.Room, at: end.at, Detail: "at the end, a new client's join: " + rc.Err.Error()})
		}
	}
	for _, l := range end.crashs {
		phaseV = append(phaseV, Violation{Invariant: InvCrash, Detail: l})
	}
	// Each timed violation belongs to the last fault injected before it.
	sort.SliceStable(timed, func(i, j int) bool { return timed[i].at < timed[j].at })
	byFault := make([][]Violation, len(p.faults))
	for _, v := range timed {
		i := sort.Search(len(p.faults), func(i int) bool { return p.faults[i].inject > v.at }) - 1
		if i < 0 || v.at == end.at {
			phaseV = append(phaseV, v)
			continue
		}
		byFault[i] = append(byFault[i], v)
	}
	for i, f := range p.faults {
		f.Violations = p.stamp(condense(append(f.Violations, byFault[i]...)))
	}
	p.report.Violations = p.stamp(condense(phaseV))
}

// faultService finds who went without service after f, for how long, and
// who was not served again within the bound. gaps are the gaps that began
// in f's time: from just before it (a client notices a cut only once the
// next chat is late) to just before the next fault.
func (p *phaseRun) faultService(rec records, gaps []gap, f *faultRun) {
	rooms, clients := map[string]bool{}, map[int]bool{}
	var worst int64
	var late []gap
	for _, g := range gaps {
		rooms[g.Room], clients[g.Client] = true, true
		worst = max(worst, g.To-f.inject)
		// Each cut must end within the bound of the fault (or of its end),
		// or of the cut's own start when it began later (a second cut).
		if g.Open || g.To > max(f.ref, g.From)+int64(f.bound) {
			late = append(late, g)
		}
	}
	f.RoomsAffected, f.ClientsCut = len(rooms), len(clients)
	f.ServedAgainS = float64(worst) / 1e9
	if len(late) == 0 {
		return
	}
	lateRooms := map[string]bool{}
	for _, g := range late {
		lateRooms[g.Room] = true
	}
	g := late[0]
	until := "still not at the end of the phase"
	if !g.Open {
		until = "until " + clock(g.To)
	}
	f.Violations = append(f.Violations, Violation{
		Invariant: InvNotServed, Room: g.Room, at: f.inject,
		Detail: fmt.Sprintf("%d clients in %d rooms not served again within %v of the %s; e.g. client %d without chats from %s %s (%s)",
			len(late), len(lateRooms), f.bound, f.BoundFrom, g.Client, clock(g.From), until, sessionsAround(rec, g)),
	})
}

// gapsByFault splits gaps by the fault in whose time they began; gaps that
// began before the first fault are left out.
func (p *phaseRun) gapsByFault(gaps []gap, limit time.Duration) [][]gap {
	out := make([][]gap, len(p.faults))
	for _, g := range gaps {
		i := sort.Search(len(p.faults), func(i int) bool { return p.faults[i].inject-int64(limit) > g.From }) - 1
		if i >= 0 {
			out[i] = append(out[i], g)
		}
	}
	return out
}

// sessionsAround describes the client's sessions during g: what it was
// connected to and how each ended.
func sessionsAround(rec records, g gap) string {
	var parts []string
	for _, s := range rec.sessions {
		if s.Client != g.Client || s.Dial > g.To || (s.Close != 0 && s.Close < g.From) {
			continue
		}
		d := fmt.Sprintf("session %d via router%d", s.ID, s.Router+1)
		switch {
		case s.Open == 0:
			d += " failed: " + truncate(s.Err, 80)
		default:
			d += " on " + dash(s.Node)
			if s.Sync == 0 {
				d += ", never synced"
			}
			if s.Close != 0 {
				d += fmt.Sprintf(", closed %d at %s", s.Code, clock(s.Close))
			} else {
				d += ", still open"
			}
		}
		parts = append(parts, d)
	}
	if len(parts) > 4 {
		parts = append(parts[:2], fmt.Sprintf("%d more", len(parts)-3), parts[len(parts)-1])
	}
	return strings.Join(parts, "; ")
}

// lossViolations: one per room that lost chats.
func lossViolations(lr lossResult, at int64) []Violation {
	rooms := make([]string, 0, len(lr.Rooms))
	for r := range lr.Rooms {
		rooms = append(rooms, r)
	}
	sort.Strings(rooms)
	var out []Violation
	for _, r := range rooms {
		out = append(out, Violation{Invariant: InvChatLost, Room: r, at: at,
			Detail: fmt.Sprintf("%d deliveries lost in a steady phase; e.g. %s", lr.Rooms[r], lr.Examples[r])})
	}
	return out
}

// condense keeps one violation per invariant and room, saying how many
// there were: one broken moment is often seen by many clients.
func condense(vs []Violation) []Violation {
	type key struct{ inv, room string }
	count := map[key]int{}
	var out []Violation
	for _, v := range vs {
		if v.kept {
			out = append(out, v)
			continue
		}
		k := key{v.Invariant, v.Room}
		if count[k]++; count[k] == 1 {
			out = append(out, v)
		}
	}
	for i, v := range out {
		if n := count[key{v.Invariant, v.Room}]; n > 1 && !v.kept {
			out[i].Detail += fmt.Sprintf(" (and %d more like it)", n-1)
		}
	}
	if out == nil {
		out = []Violation{}
	}
	return out
}

// stamp sets each violation's time relative to the run's start.
func (p *phaseRun) stamp(vs []Violation) []Violation {
	for i := range vs {
		if vs[i].at != 0 {
			vs[i].AtS = float64(vs[i].at-p.runStart.UnixNano()) / float64(time.Second)
		}
	}
	return vs
}

// writeSessions keeps every client session of the phase, one JSON line
// each, next to the processes' logs: the evidence behind the client-side
// checks.
func writeSessions(path string, sessions []session) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	enc := json.NewEncoder(bw)
	for _, s := range sessions {
		enc.Encode(s)
	}
	return errors.Join(bw.Flush(), f.Close())
}
