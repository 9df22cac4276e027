package roomlbtest

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is a bytes.Buffer for a writer the code under test uses from
// goroutines of its own (a logger, a serve log, a process's output), read
// by the test meanwhile.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Lines returns the lines written so far (without blank ones).
func (b *Buffer) Lines() []string { return lines(b.String()) }

// Take returns the lines written since the last Take.
func (b *Buffer) Take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.b.String()
	b.b.Reset()
	return lines(s)
}

func lines(s string) []string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}
