package chaos

import (
	"strings"
	"testing"
)

func TestParseServeLog(t *testing.T) {
	in := `{"node":"n1","room":"lobby","epoch":1733123456789012,"first":100,"last":200}

{"node":"n1","room":"Lobby","epoch":1733123456789012,"first":50,"last":150}
{"node":"n2","room":"lobby","epoch":1733123456789999,"first":300,"last":400}
{"node":"n2","room":"lob` // a sidecar killed mid-line
	lines, bad, err := parseServeLog(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 3 || bad != 1 {
		t.Fatalf("%d lines, %d bad; want 3 and 1", len(lines), bad)
	}
	// n1's two lines merge; n2 starts after n1's last: no violation. The
	// rules themselves are tested with sidecar.CheckServeLog.
	if v := checkServeLog(lines); len(v) != 0 {
		t.Errorf("violations %+v, want none", v)
	}
	lines[2].First = 150 // n2 now starts while n1 still served
	if v := checkServeLog(lines); len(v) != 1 || v[0].Invariant != InvDoubleService {
		t.Errorf("violations %+v, want one %s", v, InvDoubleService)
	}
}
