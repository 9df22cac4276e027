package chaos

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	r := &Report{Seed: 3, Quick: true, ServeLogs: true,
		Phases: []Phase{{HeartbeatTTL: "1s", Violations: []Violation{{Invariant: InvCrash, Detail: "n1-sidecar.log:7: panic: boom"}}}},
		Faults: []Fault{
			{Kind: SidecarKill, HeartbeatTTL: "1s", Target: "n2", Violations: []Violation{}},
			{Kind: RedisFlush, HeartbeatTTL: "1s", Violations: []Violation{
				{Invariant: InvDoubleService, Room: "chaos-01", AtS: 12.5, Detail: "n1 and n2 both served"},
			}},
		},
	}
	r.count()
	if r.Violations != 2 {
		t.Fatalf("%d violations, want 2", r.Violations)
	}
	b, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Violations int
		Faults     []struct{ Kind string }
	}
	if err := json.Unmarshal(b, &back); err != nil || back.Violations != 2 || len(back.Faults) != 2 || back.Faults[1].Kind != RedisFlush {
		t.Fatalf("JSON %s: %v", b, err)
	}
	tab := r.Table()
	for _, want := range []string{SidecarKill, RedisFlush, "violations: 2", "double-service x1", "n1 and n2 both served", "panic: boom"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
}
