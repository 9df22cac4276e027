package chaos

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCrashLines(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"n1-sidecar.log":  "level=INFO msg=ok\npanic: runtime error: index out of range\n",
		"n2-sidecar.log":  "level=WARN msg=\"room fenced\"\n",
		"n1-monolith.log": "info room x: created\nfatal error: concurrent map writes\n",
	}
	var paths []string
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	paths = append(paths, filepath.Join(dir, "never-started.log"))
	got, err := crashLines(paths)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(got, "\n")
	if len(got) != 2 || !strings.Contains(joined, "n1-sidecar.log:2: panic:") || !strings.Contains(joined, "n1-monolith.log:2: fatal error") {
		t.Fatalf("crash lines %q", got)
	}
}
