package chaos

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/roomlb/roomlb/contract"
)

func TestHostileFrames(t *testing.T) {
	for _, f := range hostileFrames() {
		switch f.want {
		case 1007:
			if utf8.Valid(f.data) {
				t.Errorf("%s: valid UTF-8, want invalid for 1007", f.name)
			}
		case 1009:
			if len(f.data) <= 64<<10 || !utf8.Valid(f.data) {
				t.Errorf("%s: %d bytes (UTF-8 %v), want valid UTF-8 over 64 KiB for 1009", f.name, len(f.data), utf8.Valid(f.data))
			}
		case 0:
			if len(f.data) > 64<<10 || !utf8.Valid(f.data) {
				t.Errorf("%s: a frame to be dropped must be valid UTF-8 within 64 KiB", f.name)
			}
		default:
			t.Errorf("%s: want %d", f.name, f.want)
		}
	}
}

func TestTraversalPaths(t *testing.T) {
	ps := traversalPaths("hostile-1-a", "chaos-03")
	if len(ps) < 6 {
		t.Fatalf("%d paths", len(ps))
	}
	for _, p := range ps {
		if !contract.AmbiguousPath([]byte(p[1])) {
			t.Errorf("%s %s: not a path the router must refuse", p[0], p[1])
		}
		if strings.Contains(p[1], "hostile-1-a") {
			t.Errorf("%s: the attacker's room in its own casing, want another", p[1])
		}
	}
}

func TestTallySummary(t *testing.T) {
	var tl tally
	for _, a := range []string{"HTTP 404", "HTTP 503", "HTTP 404", "HTTP 429", "HTTP 404", "HTTP 429"} {
		tl.add("missing", a)
	}
	if got, want := tl.summary("missing"), "HTTP 404 x3, HTTP 429 x2, HTTP 503 x1"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	if tl.summary("other") != "" || tl.count("missing", "HTTP 404") != 3 {
		t.Errorf("summary of nothing %q, count %d", tl.summary("other"), tl.count("missing", "HTTP 404"))
	}
}

func TestFindingsKeptByCondense(t *testing.T) {
	var f findings
	f.add("a", "", "first a")
	f.add("b", "", "first b")
	f.add("a", "", "second a")
	vs := condense(f.list())
	if len(vs) != 2 || vs[0].Detail != "first a (x2)" || vs[1].Detail != "first b" || vs[0].Invariant != InvHostile {
		t.Errorf("condensed findings: %+v", vs)
	}
}

func TestVerdicts(t *testing.T) {
	// --creates-per-minute 120: a burst of 60, 2 a second after it.
	if v := creationVerdict(120, 60, 500*time.Millisecond, 120); v != "" {
		t.Errorf("the burst accepted: %s", v)
	}
	if v := creationVerdict(120, 63, 2*time.Second, 120); v != "" {
		t.Errorf("the burst and what refilled accepted: %s", v)
	}
	if v := creationVerdict(120, 120, time.Second, 120); !strings.Contains(v, "120 of 120") {
		t.Errorf("every creation accepted: %q", v)
	}
	if v := connVerdict(600, 500, 500, "router2"); v != "" {
		t.Errorf("500 held: %s", v)
	}
	if v := connVerdict(600, 600, 500, "router2"); !strings.Contains(v, "600 of 600") {
		t.Errorf("600 held: %q", v)
	}
}

// rawRequest writes the path as it is, which net/http would clean.
func TestRawRequest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		got <- strings.TrimSpace(line)
		c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 8\r\nConnection: close\r\n\r\nbad path"))
	}()
	path := `/api/room/X/x\..\..\y`
	code, body, err := rawRequest(context.Background(), &net.Dialer{}, ln.Addr().String(), "GET", path)
	if err != nil || code != http.StatusBadRequest || body != "bad path" {
		t.Errorf("rawRequest: %d %q %v", code, body, err)
	}
	if line := <-got; line != "GET "+path+" HTTP/1.1" {
		t.Errorf("request line %q", line)
	}
}

func TestIdleAnswer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		server func(net.Conn)
		want   string
	}{
		{"refused", func(c net.Conn) {
			c.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n"))
			c.Close()
		}, "HTTP 503"},
		{"kept", func(net.Conn) {}, answerHeld},
		{"closed", func(c net.Conn) { c.Close() }, "closed without an answer (EOF)"},
	} {
		client, server := net.Pipe() // synchronous: the server writes as the client reads
		done := make(chan struct{})
		go func() {
			defer close(done)
			tc.server(server)
		}()
		client.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if got := idleAnswer(client); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
		<-done
		client.Close()
		server.Close()
	}
}
