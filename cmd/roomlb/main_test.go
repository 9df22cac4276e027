package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/cluster"
	"github.com/roomlb/roomlb/internal/redistest"
	"github.com/roomlb/roomlb/internal/roomlbtest"
)

// roomlbBinary builds the roomlb binary, with VCS information when the
// source is in a repository (GOFLAGS may turn it off).
func roomlbBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "roomlb")
	if out, err := exec.Command("go", "build", "-buildvcs=auto", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestVersion: `roomlb version` and `roomlb --version` print the module
// version, the commit (with the dirty flag) and the Go version the binary
// was built from, as `go version -m` reads them from it.
func TestVersion(t *testing.T) {
	bin := roomlbBinary(t)
	meta, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	build := map[string]string{}
	var goVersion, modVersion string
	for _, line := range strings.Split(string(meta), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && strings.HasSuffix(f[0], ":"):
			goVersion = f[1]
		case len(f) >= 3 && f[0] == "mod":
			modVersion = f[2]
		case len(f) == 2 && f[0] == "build":
			if k, v, ok := strings.Cut(f[1], "="); ok {
				build[k] = v
			}
		}
	}
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).Output()
		if err != nil {
			t.Fatalf("roomlb %s: %v", arg, err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 3 {
			t.Fatalf("roomlb %s printed %q, want three lines", arg, out)
		}
		if lines[0] != "roomlb "+modVersion {
			t.Errorf("roomlb %s: %q, want the module version %q", arg, lines[0], modVersion)
		}
		if rev := build["vcs.revision"]; rev == "" {
			if lines[1] != "commit: unknown (built without VCS information)" {
				t.Errorf("roomlb %s, built without VCS information: %q", arg, lines[1])
			}
		} else {
			want := "commit: " + rev + " " + build["vcs.time"]
			if build["vcs.modified"] == "true" {
				want += " (dirty: uncommitted changes)"
			}
			if lines[1] != want {
				t.Errorf("roomlb %s: %q, want %q", arg, lines[1], want)
			}
		}
		if want := "go: " + goVersion + " " + runtime.GOOS + "/" + runtime.GOARCH; lines[2] != want {
			t.Errorf("roomlb %s: %q, want %q", arg, lines[2], want)
		}
	}

	// In process (a test binary has no VCS information).
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"version"}, &out, &out); err != nil || !strings.Contains(out.String(), "go: "+runtime.Version()) {
		t.Fatalf("Run version: %v\n%s", err, out.String())
	}
}

func TestErrorLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
		want string
	}{
		{[]string{"ctl", "nodes"}, "ctl: cannot reach Redis", "roomlb ctl: cannot reach Redis"},
		{[]string{"ctl", "move", "a", "b"}, "ctl move: node-2 is draining", "roomlb ctl move: node-2 is draining"},
		{[]string{"router"}, "router: bad config: --secret is required", "roomlb router: bad config: --secret is required"},
		{[]string{"sidecar"}, "--redis-url: invalid URL scheme", "roomlb sidecar: --redis-url: invalid URL scheme"},
		{[]string{"sidecars"}, `unknown command "sidecars"`, `roomlb: unknown command "sidecars"`},
		{nil, "x", "roomlb: x"},
	} {
		if got := errorLine(tc.args, errors.New(tc.err)); got != tc.want {
			t.Errorf("errorLine(%q, %q) = %q, want %q", tc.args, tc.err, got, tc.want)
		}
	}
}

// TestBinaryLogs: a sidecar whose Redis is down logs every line, go-redis's
// too, in one format, each naming its node once, and go-redis's repeats
// are held back (at most one line per kind of message per 10 s).
func TestBinaryLogs(t *testing.T) {
	bin := roomlbBinary(t)
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	cmd := exec.Command(bin, "sidecar", "--node-id", "node-7", "--listen", "127.0.0.1:0",
		"--redis-url", "redis://"+closed(), "--monolith", "ws://"+closed()+"/")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	cmd.Process.Kill()
	cmd.Wait()

	seen := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if !strings.HasPrefix(line, "time=") || !strings.Contains(line, " level=") {
			t.Errorf("a line not in slog's text format: %q", line)
		}
		if n := strings.Count(line, "node="); n != 1 {
			t.Errorf("node named %d times: %q", n, line)
		}
		if _, msg, ok := strings.Cut(line, `msg="go-redis: `); ok {
			msg, _, _ = strings.Cut(msg, `"`)
			seen[strings.Map(func(r rune) rune {
				if '0' <= r && r <= '9' {
					return 'N'
				}
				return r
			}, msg)]++
		}
	}
	if len(seen) == 0 {
		t.Errorf("no go-redis line in 4s of Redis down:\n%s", stderr.String())
	}
	for msg, n := range seen {
		if n > 1 {
			t.Errorf("go-redis logged %q %d times in 4s, want once", msg, n)
		}
	}
	if t.Failed() {
		t.Logf("stderr:\n%s", stderr.String())
	}
}

// TestClusterLogNamesNodeOnce: in an in-process cluster (roomlb dev, the
// tests), which names each sidecar's logger after its node, a sidecar's
// lines name it once.
func TestClusterLogNamesNodeOnce(t *testing.T) {
	srv := redistest.New(t)
	var out roomlbtest.Buffer
	c, err := cluster.Start(context.Background(), cluster.Options{
		RedisURL: srv.URL(), Nodes: 1, Routers: 1, Monolith: cluster.FakeMonolith,
		Log: slog.New(slog.NewTextHandler(&out, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Stop()
	n := 0
	for _, line := range strings.Split(out.String(), "\n") {
		if !strings.Contains(line, `msg="sidecar: `) {
			continue
		}
		n++
		if k := strings.Count(line, "node=node-1"); k != 1 {
			t.Errorf("node named %d times: %q", k, line)
		}
	}
	if n == 0 {
		t.Fatalf("no sidecar line logged:\n%s", out.String())
	}
}
