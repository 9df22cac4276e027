package wstest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Do sends an HTTP request to addr (host:port) as a browser would, with the
// header name, value pairs hdr, and returns the response and its body (read
// and closed).
func Do(tb testing.TB, addr, method, path, body string, hdr ...string) (*http.Response, string) {
	tb.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// Grant gets an auth token from addr, as the web client does before it
// joins a room.
func Grant(tb testing.TB, addr string, hdr ...string) string {
	tb.Helper()
	res, body := Do(tb, addr, "GET", "/api/auth/grant", "", hdr...)
	var g struct{ Token string }
	if res.StatusCode != 200 || json.Unmarshal([]byte(body), &g) != nil || g.Token == "" {
		tb.Fatalf("grant: %d %s", res.StatusCode, body)
	}
	return g.Token
}

// CreateRoom creates a temporary room at addr.
func CreateRoom(tb testing.TB, addr, name string, hdr ...string) {
	tb.Helper()
	res, body := Do(tb, addr, "POST", "/api/room/create", fmt.Sprintf(`{"name":%q,"isTemporary":true}`, name), hdr...)
	if res.StatusCode != 200 && res.StatusCode != 201 {
		tb.Fatalf("create %s: %d %s", name, res.StatusCode, body)
	}
}

// WaitFor polls cond until it holds, and fails the test when limit passes
// first.
func WaitFor(tb testing.TB, limit time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
