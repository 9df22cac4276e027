package bench

import (
	"context"
	"encoding/json"
	"math"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/roomlbtest"
)

// TestRunTiny runs every figure end to end at the Tiny scale and checks that
// the report is complete and sane. It asserts no timing: the figures of a
// tiny run on a shared machine mean nothing.
func TestRunTiny(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("needs redis-server on PATH")
	}
	bin := roomlbtest.Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{
		Binary:         bin,
		Scale:          Tiny,
		Monolith:       MonolithFake,
		FanoutMonolith: MonolithFake,
		Dir:            t.TempDir(),
		Log:            t.Output(),
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Log("\n" + rep.Table())
	if len(rep.Figures) != 9 {
		t.Fatalf("%d figures, want 9", len(rep.Figures))
	}
	haproxy := rep.Machine.HAProxy != ""
	for i, f := range rep.Figures {
		if f.ID != i+1 || f.Name == "" || f.Measures == "" || f.Err != "" {
			t.Errorf("figure %d: id %d, name %q, error %q", i+1, f.ID, f.Name, f.Err)
		}
		if len(f.Rows) == 0 {
			t.Errorf("figure %d has no rows", f.ID)
		}
		for _, r := range f.Rows {
			bad := math.IsNaN(r.Value) || math.IsInf(r.Value, 0)
			// Differences of percentiles may be zero or negative; the
			// rest are durations, rates, sizes and counts.
			// An idle CPU may round to zero, and so should counts of
			// clients that failed, of chats lost, and shares.
			if !strings.HasPrefix(r.Metric, "added") && !strings.Contains(r.Metric, "idle") && r.Unit != "clients" &&
				!strings.Contains(r.Metric, "lost") && r.Unit != "%" && r.Value <= 0 {
				bad = true
			}
			// A ratio of two differences (one hop's addition to
			// another's) may be anything on a tiny run but NaN.
			added := strings.HasPrefix(r.Metric, "added")
			if r.Baseline != "" && (math.IsNaN(r.Ratio) || !added && (r.Ratio <= 0 || math.IsInf(r.Ratio, 0))) {
				bad = true
			}
			if bad {
				t.Errorf("figure %d: row %+v is not sane", f.ID, r)
			}
		}
		wantGoal := f.ID != 8
		if wantGoal != (len(f.Goals) > 0) {
			t.Errorf("figure %d: goals %+v", f.ID, f.Goals)
		}
		for _, g := range f.Goals {
			needsHAProxy := f.ID == 1 || f.ID == 2
			notRun := f.ID == 7 && strings.Contains(g.Text, "not run") // the tiny scale drains no 1,000 rooms
			if g.NA != (notRun || (needsHAProxy && !haproxy)) {
				t.Errorf("figure %d: goal %+v", f.ID, g)
			}
		}
	}
	if !hasPeer(rep.Figures[6], "chat, 3 rooms of 2") {
		t.Errorf("figure 7 has no chat-load rows")
	}
	if haproxy {
		for _, id := range []int{1, 2} {
			if !hasPeer(rep.Figures[id-1], "haproxy") {
				t.Errorf("figure %d has no haproxy row", id)
			}
		}
	}
	b, err := rep.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil || len(back.Figures) != 9 {
		t.Fatalf("JSON round trip: %v, %d figures", err, len(back.Figures))
	}
	for _, want := range []string{"goals:", "direct", "roomlb"} {
		if !strings.Contains(rep.Table(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
}

func hasPeer(f Figure, peer string) bool {
	for _, r := range f.Rows {
		if r.Peer == peer {
			return true
		}
	}
	return false
}
