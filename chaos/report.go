package chaos

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Violation is one broken invariant, with its evidence.
type Violation struct {
	Invariant string `json:"invariant"`
	Room      string `json:"room,omitempty"`
	// AtS is when it happened, in seconds since the run started (0 when
	// it has no moment, as an end-of-run check).
	AtS    float64 `json:"at_s,omitempty"`
	Detail string  `json:"detail"`

	at   int64 // wall-clock Unix ns; 0: none
	kept bool  // already condensed by whoever found it: condense keeps it as it is
}

// Fault is one injected fault and what followed it until the next one.
type Fault struct {
	Kind         string `json:"kind"`
	HeartbeatTTL string `json:"heartbeat_ttl"`
	Target       string `json:"target,omitempty"`
	// AtS is when it was injected, in seconds since the run started; HeldS
	// how long until it was healed (a process started again, resumed).
	AtS   float64 `json:"at_s"`
	HeldS float64 `json:"held_s"`
	// RoomsAffected and ClientsCut: rooms and clients that went without
	// service (no chat for over the gap limit) around the fault.
	RoomsAffected int `json:"rooms_affected"`
	ClientsCut    int `json:"clients_cut"`
	// ServedAgainS is the time from the fault until every client was
	// served again; BoundS the bound it must stay within, counted from the
	// fault or, for BoundFrom "heal", from its end.
	ServedAgainS float64 `json:"served_again_s"`
	BoundS       float64 `json:"bound_s"`
	BoundFrom    string  `json:"bound_from"`
	// ChatsChecked and ChatsLost: deliveries due in the steady phase after
	// the fault, and those missing.
	ChatsChecked int         `json:"chats_checked"`
	ChatsLost    int         `json:"chats_lost"`
	Violations   []Violation `json:"violations"`
	Notes        []string    `json:"notes,omitempty"`
}

// Phase is one cluster at one heartbeat TTL.
type Phase struct {
	HeartbeatTTL string `json:"heartbeat_ttl"`
	// Sentinel: the registry's Redis was a master and replicas behind
	// three sentinels.
	Sentinel bool    `json:"sentinel,omitempty"`
	Faults   int     `json:"faults"`
	ElapsedS float64 `json:"elapsed_s"`
	// ServeLogLines and ServeLogBad count the sidecars' serve-log lines
	// read and those that could not be parsed.
	ServeLogLines int `json:"serve_log_lines"`
	ServeLogBad   int `json:"serve_log_bad"`
	// Violations outside any fault: before the first one, at the end
	// (rooms lost, crashes found in the logs).
	Violations []Violation `json:"violations"`
	Dir        string      `json:"dir"`
}

// Report is a whole run.
type Report struct {
	Seed       int64     `json:"seed"`
	Quick      bool      `json:"quick"`
	Mode       string    `json:"mode"` // quick, full (each kind once per TTL) or "duration D"
	Started    time.Time `json:"started"`
	ElapsedS   float64   `json:"elapsed_s"`
	ServeLogs  bool      `json:"serve_logs"` // the sidecars wrote serve logs (--serve-log)
	Violations int       `json:"violations"`
	Phases     []Phase   `json:"phases"`
	Faults     []Fault   `json:"faults"`
}

// count totals the violations.
func (r *Report) count() {
	r.Violations = 0
	for _, p := range r.Phases {
		r.Violations += len(p.Violations)
	}
	for _, f := range r.Faults {
		r.Violations += len(f.Violations)
	}
}

// JSON is the report as indented JSON.
func (r *Report) JSON() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }

// exampleLimit is how many violations of one invariant the table shows
// per fault or phase.
const exampleLimit = 3

// Table is the report for people: one row per fault, then the violations.
func (r *Report) Table() string {
	var b strings.Builder
	mode := r.Mode
	logs := "yes"
	if !r.ServeLogs {
		logs = "NO (the sidecar has no --serve-log: the serve-log checks did not run)"
	}
	fmt.Fprintf(&b, "roomlb chaos: seed %d, %s, %d faults in %d phases, %.0f s; serve logs: %s\n\n",
		r.Seed, mode, len(r.Faults), len(r.Phases), r.ElapsedS, logs)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tkind\thb\ttarget\trooms hit\tclients cut\tserved again\tbound\tchats checked\tlost\tviolations")
	for i, f := range r.Faults {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%.2f s\t%.1f s from %s\t%d\t%d\t%d\n", i+1, f.Kind, f.HeartbeatTTL, dash(f.Target),
			f.RoomsAffected, f.ClientsCut, f.ServedAgainS, f.BoundS, f.BoundFrom, f.ChatsChecked, f.ChatsLost, len(f.Violations))
	}
	tw.Flush()
	fmt.Fprintf(&b, "\nviolations: %d\n", r.Violations)
	for i, f := range r.Faults {
		writeViolations(&b, fmt.Sprintf("#%d %s (hb %s)", i+1, f.Kind, f.HeartbeatTTL), f.Violations)
		for _, n := range f.Notes {
			fmt.Fprintf(&b, "  #%d %s: note: %s\n", i+1, f.Kind, n)
		}
	}
	for _, p := range r.Phases {
		writeViolations(&b, "phase hb "+p.HeartbeatTTL, p.Violations)
	}
	return b.String()
}

// writeViolations lists vs grouped by invariant, a few examples each.
func writeViolations(b *strings.Builder, where string, vs []Violation) {
	by := map[string][]Violation{}
	for _, v := range vs {
		by[v.Invariant] = append(by[v.Invariant], v)
	}
	invs := make([]string, 0, len(by))
	for k := range by {
		invs = append(invs, k)
	}
	sort.Strings(invs)
	for _, inv := range invs {
		list := by[inv]
		fmt.Fprintf(b, "  %s: %s x%d\n", where, inv, len(list))
		for _, v := range list[:min(len(list), exampleLimit)] {
			room := ""
			if v.Room != "" {
				room = v.Room + ": "
			}
			at := ""
			if v.AtS != 0 {
				at = fmt.Sprintf("t=%.2fs ", v.AtS)
			}
			fmt.Fprintf(b, "    %s%s%s\n", at, room, v.Detail)
		}
		if len(list) > exampleLimit {
			fmt.Fprintf(b, "    ... and %d more\n", len(list)-exampleLimit)
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
