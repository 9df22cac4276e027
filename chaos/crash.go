package chaos

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// crashLines are the lines of the processes' logs that say a process
// crashed: a Go panic or fatal error, a data race, Node's uncaught errors.
func crashLines(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			continue // a process that never started has no log
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			for _, m := range crashMarkers {
				if strings.Contains(line, m) {
					out = append(out, fmt.Sprintf("%s:%d: %s", filepath.Base(p), n, truncate(line, 200)))
					break
				}
			}
		}
		f.Close()
	}
	return out, nil
}

var crashMarkers = []string{"panic:", "fatal error", "WARNING: DATA RACE", "UnhandledPromiseRejection", "Uncaught "}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
