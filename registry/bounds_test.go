package registry

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A room that is claimed but never loaded (a request for a room that does
// not exist) leaves nothing behind for long: the epoch counter lives for
// ClaimEpochTTL until the room's first metadata write, which keeps it for
// EpochTTL.
func TestEpochCounterLivesWithTheRoom(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	l, err := r.Claim(ctx, "ghost", "node-a", live(t, r, "node-a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	if left := r.Client().PTTL(ctx, r.epochKey("ghost")).Val(); left <= 0 || left > ClaimEpochTTL {
		t.Fatalf("epoch counter of a room never loaded lives %v, want at most %v", left, ClaimEpochTTL)
	}

	l, err = r.Claim(ctx, "loaded", "node-a", live(t, r, "node-a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriteMeta(ctx, l, Meta{Name: "Loaded"}); err != nil {
		t.Fatal(err)
	}
	if left := r.Client().PTTL(ctx, r.epochKey("loaded")).Val(); left < DefaultEpochTTL-time.Minute {
		t.Fatalf("epoch counter of a loaded room lives %v, want about %v", left, DefaultEpochTTL)
	}
}

// The registry keeps at most MaxMetadata bytes of a room's metadata:
// /api/room/list serves every public room's to every client.
func TestMetadataBounded(t *testing.T) {
	r, _ := newRegistry(t)
	ctx := context.Background()
	l, err := r.Claim(ctx, "big", "node-a", live(t, r, "node-a"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		meta map[string]any
		keep string // a field that must survive
	}{
		{"huge title", map[string]any{"name": "Big", "title": strings.Repeat("é", 450_000), "users": 3}, "users"},
		{"huge video description", map[string]any{"name": "Big", "title": "t", "currentSource": map[string]any{"description": strings.Repeat("x", 20_000)}}, "title"},
		{"many small strings", map[string]any{"name": "Big", "visibility": "public", "tags": strings.Split(strings.Repeat("ab,", 10_000), ",")}, "visibility"},
	} {
		raw, _ := json.Marshal(tc.meta)
		if err := r.WriteMeta(ctx, l, Meta{Name: "Big", Metadata: raw}); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		m, _, err := r.Meta(ctx, "big")
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if len(m.Metadata) > MaxMetadata || json.Unmarshal(m.Metadata, &got) != nil {
			t.Fatalf("%s: stored %d bytes (%.40q...), want valid JSON of at most %d", tc.name, len(m.Metadata), m.Metadata, MaxMetadata)
		}
		if got["name"] != "Big" || got[tc.keep] == nil {
			t.Fatalf("%s: stored %.200s, want name and %s kept", tc.name, m.Metadata, tc.keep)
		}
	}
}
