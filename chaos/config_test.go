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
		perKind int // each kind but the Sentinel ones, which run once in their phase
		cycling bool
	}{
		{"quick: each kind once in all", Config{Quick: true}, 3, 1, false},
		{"full: each kind once per ttl", Config{}, 3, 2, false},
		{"one ttl", Config{Quick: true, HeartbeatTTLs: []time.Duration{time.Second}}, 2, 1, false},
		{"duration: cycling", Config{Duration: time.Hour}, 3, 2, true},
		{"sentinel only", Config{Quick: true, Faults: []string{RedisFailover}}, 1, 1, false},
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
			for _, k := range tc.cfg.Faults {
				want := tc.perKind
				if slices.Contains(sentinelKinds, k) {
					want = 1
				}
				if m[k] != want {
					t.Errorf("%s planned %d times, want %d", k, m[k], want)
				}
			}
			for _, p := range ps {
				if (p.until > 0) != tc.cycling {
					t.Errorf("phase %v: until %v", p.hb, p.until)
				}
				for _, k := range p.faults {
					if slices.Contains(sentinelKinds, k) != p.sentinel {
						t.Errorf("phase %v (sentinel %v) got %s", p.hb, p.sentinel, k)
					}
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
