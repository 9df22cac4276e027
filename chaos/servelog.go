package chaos

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/roomlb/roomlb/sidecar"
)

// serveLine is one line of a sidecar's --serve-log (sidecar.ServeRecord):
// node served room under epoch from First to Last (wall-clock Unix ns of
// the first and last client frame forwarded to the monolith or room message
// delivered to a client, since the node's previous line for that room and
// epoch). A line with Client is a join: node joined that client id to room
// at First.
type serveLine = sidecar.ServeRecord

// joinedAt maps the client ids of the join lines to their node.
func joinedAt(lines []serveLine) map[string]string {
	m := map[string]string{}
	for _, l := range lines {
		if l.Client != "" {
			m[l.Client] = l.Node
		}
	}
	return m
}

// parseServeLog reads serve-log lines; it skips (and counts) lines it
// cannot parse, such as the last one of a sidecar killed mid-write.
func parseServeLog(r io.Reader) (lines []serveLine, bad int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var l serveLine
		if json.Unmarshal(b, &l) != nil || l.Node == "" || l.Room == "" || l.First == 0 || l.Last < l.First {
			bad++
			continue
		}
		lines = append(lines, l)
	}
	return lines, bad, sc.Err()
}

// readServeLogs parses the serve-log files; a file that does not exist
// (a sidecar that never served) is no error.
func readServeLogs(paths []string) (lines []serveLine, bad int, err error) {
	for _, p := range paths {
		f, err := os.Open(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, bad, err
		}
		l, b, err := parseServeLog(f)
		f.Close()
		if err != nil {
			return nil, bad, fmt.Errorf("%s: %w", p, err)
		}
		lines, bad = append(lines, l...), bad+b
	}
	return lines, bad, nil
}

// checkServeLog turns the serve logs' faults (sidecar.CheckServeLog) into
// violations.
func checkServeLog(lines []serveLine) []Violation {
	var out []Violation
	for _, f := range sidecar.CheckServeLog(lines) {
		inv := InvEpochBack
		if f.Double {
			inv = InvDoubleService
		}
		out = append(out, Violation{Invariant: inv, Room: f.Room, at: f.At, Detail: "serve logs: " + f.Detail})
	}
	return out
}

// clock formats a Unix ns time of day, to the microsecond, for evidence.
func clock(ns int64) string { return time.Unix(0, ns).Format("15:04:05.000000") }
