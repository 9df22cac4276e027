package chaos

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	count := func(ps []phase) map[string]int {
		m := map[string]int{}
		for _, p := range ps {
			for _, k := range p.faults {
				m[k]++
			}
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		cfg     Config
		phases  int
		perKind int
		cycling bool
	}{
		{"quick: each kind once in all", Config{Quick: true}, 2, 1, false},
		{"full: each kind once per ttl", Config{}, 2, 2, false},
		{"one ttl", Config{Quick: true, HeartbeatTTLs: []time.Duration{time.Second}}, 1, 1, false},
		{"duration: cycling", Config{Duration: time.Hour}, 2, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Binary = "roomlb"
			tc.cfg.setDefaults()
			if err := tc.cfg.validate(); err != nil {
				t.Fatal(err)
			}
			ps := tc.cfg.plan(rand.New(rand.NewPCG(1, 2)))
			if len(ps) != tc.phases {
				t.Fatalf("%d phases, want %d", len(ps), tc.phases)
			}
			m := count(ps)
			for _, k := range Kinds {
				if m[k] != tc.perKind {
					t.Errorf("%s planned %d times, want %d", k, m[k], tc.perKind)
				}
			}
			for _, p := range ps {
				if (p.until > 0) != tc.cycling {
					t.Errorf("phase %v: until %v", p.hb, p.until)
				}
			}
		})
	}
}

func TestPlanRepeatable(t *testing.T) {
	plan := func(seed uint64) [][]string {
		c := Config{Binary: "roomlb", Quick: true}
		c.setDefaults()
		var out [][]string
		for _, p := range c.plan(rand.New(rand.NewPCG(seed, 0))) {
			out = append(out, p.faults)
		}
		return out
	}
	a, b := plan(7), plan(7)
	if !slices.EqualFunc(a, b, slices.Equal) {
		t.Fatalf("seed 7 planned %v, then %v", a, b)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no binary", Config{}},
		{"unknown fault", Config{Binary: "roomlb", Faults: []string{"meteor"}}},
		{"tiny ttl", Config{Binary: "roomlb", HeartbeatTTLs: []time.Duration{time.Millisecond}}},
		{"two nodes", Config{Binary: "roomlb", Nodes: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.setDefaults()
			if err := tc.cfg.validate(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
