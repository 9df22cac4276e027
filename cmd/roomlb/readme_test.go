package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEDocumentsEveryFlag: every flag of every command appears in the
// README's configuration reference.
func TestREADMEDocumentsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	flagLine := regexp.MustCompile(`^  -([a-z-]+)`)
	for _, cmd := range []string{"sidecar", "router", "dev", "ctl", "bench", "chaos"} {
		var out bytes.Buffer
		Run(context.Background(), []string{cmd, "--help"}, &out, &out)
		n := 0
		for _, line := range strings.Split(out.String(), "\n") {
			m := flagLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			n++
			if !bytes.Contains(readme, []byte("`--"+m[1]+"`")) {
				t.Errorf("roomlb %s --%s is not in the README", cmd, m[1])
			}
		}
		if n == 0 {
			t.Errorf("roomlb %s --help listed no flags", cmd)
		}
	}
}
