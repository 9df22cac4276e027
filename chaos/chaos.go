package chaos

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Run runs the faults of cfg, phase by phase, and returns the report. An
// error means the run could not be carried out (a cluster did not start,
// ctx ended); the report then holds what was done. Violations are in the
// report, not in the error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dir := cfg.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "roomlb-chaos")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "chaos.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cfg.Log = io.MultiWriter(cfg.Log, logf)
	rep := &Report{Seed: cfg.Seed, Quick: cfg.Quick, Started: time.Now(), ServeLogs: hasServeLog(cfg.Binary), Phases: []Phase{}, Faults: []Fault{}}
	switch {
	case cfg.Duration > 0:
		rep.Mode = "duration " + cfg.Duration.String()
	case cfg.Quick:
		rep.Mode = "quick"
	default:
		rep.Mode = "full"
	}
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6368616f73)) // "chaos"
	plan := cfg.plan(rng)
	fmt.Fprintf(cfg.Log, "chaos: seed %d, %d phases, serve logs %v, in %s\n", cfg.Seed, len(plan), rep.ServeLogs, dir)
	for i, ph := range plan {
		name := fmt.Sprintf("phase%d-hb%s", i+1, ph.hb)
		if ph.sentinel {
			name += "-sentinel"
		}
		p := &phaseRun{
			cfg:      &cfg,
			plan:     ph,
			dir:      filepath.Join(dir, name),
			serveLog: rep.ServeLogs,
			rng:      rng,
			runStart: rep.Started,
		}
		err = p.run(ctx)
		rep.Phases = append(rep.Phases, p.report)
		for _, f := range p.faults {
			rep.Faults = append(rep.Faults, f.Fault)
		}
		if err != nil {
			break
		}
	}
	rep.ElapsedS = time.Since(rep.Started).Seconds()
	rep.count()
	return rep, err
}

// hasServeLog reports whether the binary's sidecar takes --serve-log: an
// older roomlb (a run against an earlier commit) does not.
func hasServeLog(bin string) bool { return hasFlag(bin, "sidecar", "serve-log") }

// hasFlag reports whether the binary's command takes --flag.
func hasFlag(bin, command, flag string) bool {
	out, _ := exec.Command(bin, command, "--help").CombinedOutput()
	return bytes.Contains(out, []byte("-"+flag+" "))
}
