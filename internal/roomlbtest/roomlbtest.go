// Package roomlbtest holds what tests of several packages share: the roomlb
// binary, built once for tests that run its commands as processes of their
// own (to pause and kill them: the sidecar's fault tests, the bench and the
// chaos run), and a Buffer the code under test writes to concurrently.
package roomlbtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	once sync.Once
	bin  string
	err  error
)

// Binary builds cmd/roomlb once per test process and returns its path. It
// skips the test when the go command is missing.
func Binary(tb testing.TB) string {
	tb.Helper()
	goBin, lookErr := exec.LookPath("go")
	if lookErr != nil {
		tb.Skip("needs the go command to build roomlb")
	}
	once.Do(func() {
		dir, e := os.MkdirTemp("", "roomlb-bin")
		if e != nil {
			err = e
			return
		}
		bin = filepath.Join(dir, "roomlb")
		out, e := exec.Command(goBin, "build", "-o", bin, "github.com/roomlb/roomlb/cmd/roomlb").CombinedOutput()
		if e != nil {
			err = fmt.Errorf("go build: %v\n%s", e, out)
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	return bin
}
