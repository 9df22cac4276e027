package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of one benchmark run.
type Report struct {
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Machine  Machine       `json:"machine"`
	Scale    string        `json:"scale"`    // full, quick or a custom name
	Monolith string        `json:"monolith"` // kind behind the hot-path figures
	Figures  []Figure      `json:"figures"`
	Notes    []string      `json:"notes,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel,omitempty"`
	HAProxy   string `json:"haproxy,omitempty"`
}

// Figure is one measured figure: rows of values, a goal and notes.
type Figure struct {
	ID       int      `json:"id"`
	Name     string   `json:"name"`
	Measures string   `json:"measures"` // what and how, one sentence
	Rows     []Row    `json:"rows"`
	Goals    []Goal   `json:"goals,omitempty"`
	Notes    []string `json:"notes,omitempty"`
	// Err is why the figure is incomplete; "" when it is complete.
	Err string `json:"error,omitempty"`
}

// Row is one value of a figure. Ratio is Value divided by the value of the
// row named Baseline in the same figure (0 without a baseline).
type Row struct {
	Peer     string  `json:"peer"`   // direct, sidecar, haproxy, roomlb, ...
	Metric   string  `json:"metric"` // p50, p99, msgs/s per core, ...
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Baseline string  `json:"baseline,omitempty"` // "peer/metric"
	Ratio    float64 `json:"ratio,omitempty"`
}

// Goal is a project goal checked against a figure.
type Goal struct {
	Text  string  `json:"text"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	Unit  string  `json:"unit"`
	// AtMost: the goal is Value <= Limit; otherwise Value >= Limit.
	AtMost bool `json:"at_most"`
	Pass   bool `json:"pass"`
	// NA: the goal could not be checked (a peer missing); Pass is false.
	NA bool `json:"na,omitempty"`
}

// add adds a row; a value that is not finite (no samples) is recorded as 0.
func (f *Figure) add(peer, metric string, v float64, unit string) {
	f.Rows = append(f.Rows, Row{Peer: peer, Metric: metric, Value: finite(v), Unit: unit})
}

// addRatio adds a row with its ratio to the row baseline ("peer/metric");
// the ratio stays 0 when the baseline is 0 or missing.
func (f *Figure) addRatio(peer, metric string, v float64, unit, baseline string) {
	r := Row{Peer: peer, Metric: metric, Value: finite(v), Unit: unit, Baseline: baseline}
	if b, ok := f.value(baseline); ok && b != 0 {
		r.Ratio = finite(v / b)
	}
	f.Rows = append(f.Rows, r)
}

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// value is the value of the row "peer/metric".
func (f *Figure) value(key string) (float64, bool) {
	peer, metric, _ := strings.Cut(key, "/")
	for _, r := range f.Rows {
		if r.Peer == peer && r.Metric == metric {
			return r.Value, true
		}
	}
	return 0, false
}

func (f *Figure) goal(text string, v, limit float64, unit string, atMost bool) {
	g := Goal{Text: text, Value: v, Limit: limit, Unit: unit, AtMost: atMost}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		g.NA, g.Value = true, 0
	} else if atMost {
		g.Pass = v <= limit
	} else {
		g.Pass = v >= limit
	}
	f.Goals = append(f.Goals, g)
}

func (f *Figure) note(format string, args ...any) {
	f.Notes = append(f.Notes, fmt.Sprintf(format, args...))
}

// JSON is the report as indented JSON.
func (r *Report) JSON() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }

// Table is the report as text: one block per figure, then the goals.
func (r *Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "roomlb bench: %s scale, %s monolith, %d CPUs, %s, %s; took %v\n",
		r.Scale, r.Monolith, r.Machine.CPUs, r.Machine.GoVersion, r.Machine.Kernel, r.Duration.Round(time.Second))
	if r.Machine.HAProxy != "" {
		fmt.Fprintf(&b, "haproxy: %s\n", r.Machine.HAProxy)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	for _, f := range r.Figures {
		fmt.Fprintf(&b, "\n%d. %s\n   %s\n", f.ID, f.Name, f.Measures)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "   \tpeer\tmetric\tvalue\tunit\tratio\tto\t\n")
		for _, row := range f.Rows {
			ratio, to := "", ""
			if row.Baseline != "" {
				ratio, to = fmt.Sprintf("%.2fx", row.Ratio), row.Baseline
			}
			fmt.Fprintf(tw, "   \t%s\t%s\t%s\t%s\t%s\t%s\t\n", row.Peer, row.Metric, number(row.Value), row.Unit, ratio, to)
		}
		tw.Flush()
		for _, g := range f.Goals {
			fmt.Fprintf(&b, "   goal %-4s %s: %s %s (limit %s)\n", g.verdict(), g.Text, number(g.Value), g.Unit, number(g.Limit))
		}
		for _, n := range f.Notes {
			fmt.Fprintf(&b, "   note: %s\n", n)
		}
		if f.Err != "" {
			fmt.Fprintf(&b, "   ERROR: %s\n", f.Err)
		}
	}
	b.WriteString("\ngoals:\n")
	for _, f := range r.Figures {
		for _, g := range f.Goals {
			fmt.Fprintf(&b, "  %-4s fig %d: %s: %s %s (limit %s)\n", g.verdict(), f.ID, g.Text, number(g.Value), g.Unit, number(g.Limit))
		}
	}
	return b.String()
}

func (g Goal) verdict() string {
	switch {
	case g.NA:
		return "n/a"
	case g.Pass:
		return "PASS"
	}
	return "MISS"
}

func number(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// percentile of sorted durations, in milliseconds.
func percentileMS(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return math.NaN()
	}
	if !slices.IsSorted(d) {
		slices.Sort(d)
	}
	i := int(math.Ceil(p/100*float64(len(d)))) - 1
	i = max(0, min(i, len(d)-1))
	return float64(d[i]) / float64(time.Millisecond)
}
