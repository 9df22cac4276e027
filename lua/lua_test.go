package lua

import (
	"context"
	"testing"

	"github.com/roomlb/roomlb/internal/redistest"
)

// TestScriptsCompile loads every script into a real Redis: a syntax error
// in a .lua file (or in the prelude they share) fails here, by name.
func TestScriptsCompile(t *testing.T) {
	rdb := redistest.New(t).Client()
	ctx := context.Background()
	for name, s := range All {
		sha, err := s.Load(ctx, rdb).Result()
		if err != nil {
			t.Errorf("%s.lua: %v", name, err)
			continue
		}
		if sha != s.Hash() {
			t.Errorf("%s.lua: Redis hashed it %s, go-redis %s", name, sha, s.Hash())
		}
	}
}
