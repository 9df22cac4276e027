package chaos

import (
	"context"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/roomlbtest"
)

// shortFaults are the faults TestRunShort injects, at a 1 s heartbeat: the
// ones behind the safety defects roomlb chaos was built to catch (a lease
// re-adopted while it was released, service after Redis lost its data,
// rooms lost with it, a frozen owner stranding its clients), a drain
// storm, hostile clients, and a Sentinel failover (a second cluster, its
// registry behind Sentinel). Remove a kind here to leave it out while its
// defect is being fixed.
var shortFaults = []string{
	SidecarKill, SidecarPause, MonolithKill, RouterKill,
	RedisPauseLong, RedisRestart, RedisFlush, LinkStall, DrainStorm, HostileClients,
	RedisFailover,
}

// TestRunShort runs a short fault run on clusters of processes (Redis,
// three Node reference monoliths with their sidecars, two routers; then
// the same with the registry behind Sentinel) and wants no violation. Its only time bounds are the run's own.
func TestRunShort(t *testing.T) {
	if testing.Short() {
		t.Skip("a fault run takes over a minute")
	}
	for _, bin := range []string{"redis-server", "node"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s on PATH", bin)
		}
	}
	bin := roomlbtest.Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{
		Binary:         bin,
		Dir:            t.TempDir(),
		Seed:           1,
		Quick:          true,
		HeartbeatTTLs:  []time.Duration{time.Second},
		Faults:         shortFaults,
		Rooms:          6,
		ClientsPerRoom: 3,
		Steady:         2 * time.Second,
		Log:            t.Output(),
	})
	if rep != nil {
		t.Log("\n" + rep.Table())
	}
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var ran []string
	for _, f := range rep.Faults {
		ran = append(ran, f.Kind)
	}
	for _, k := range shortFaults {
		if !slices.Contains(ran, k) {
			t.Errorf("fault %s did not run (ran %v)", k, ran)
		}
	}
	if rep.Violations != 0 {
		t.Errorf("%d violations, want 0 (the table above has the evidence)", rep.Violations)
	}
}
