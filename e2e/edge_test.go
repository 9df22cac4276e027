package e2e

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/internal/cluster"
	"github.com/roomlb/roomlb/router"
)

// TestBadInputAtTheEdge: bad input through a router gets its error, and a
// room in use meanwhile is not disturbed. (X-Forwarded-For from untrusted
// and trusted peers is tested in the router package, where the sidecar's
// view of the request can be read.)
func TestBadInputAtTheEdge(t *testing.T) {
	c, _ := start(t, 2, 1, func(o *cluster.Options) {
		o.Router = func(i int, rc *router.Config) {
			rc.AllowedOrigins = []string{"https://ott.example"}
			rc.ReadTimeout = 500 * time.Millisecond
		}
	})
	r := c.Routers[0].Addr
	token := grant(t, r)
	do(t, r, "POST", "/api/room/create", `{"name":"Calm","isTemporary":true}`)
	calm, err := join(t, r, "calm", token)
	if err != nil {
		t.Fatal(err)
	}
	calm.mustNext("you")

	cases := []struct {
		name string
		run  func(t *testing.T) int
		want int
	}{
		{"bad room name", func(t *testing.T) int { res, _ := do(t, r, "GET", "/api/room/no.dots", ""); return res.StatusCode }, 400},
		{"percent-encoded name", func(t *testing.T) int { res, _ := do(t, r, "GET", "/api/room/a%2Fb", ""); return res.StatusCode }, 400},
		{"huge room name", func(t *testing.T) int {
			res, _ := do(t, r, "GET", "/api/room/"+strings.Repeat("a", 5000), "")
			return res.StatusCode
		}, 400},
		{"oversized headers", func(t *testing.T) int {
			// Raw, so that the router's early answer (and close) is read
			// even while the client is still writing.
			conn, err := net.Dial("tcp", r)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			go conn.Write([]byte("GET /api/room/calm HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 64<<10) + "\r\n\r\n"))
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer to oversized headers: %v", err)
			}
			return res.StatusCode
		}, 431},
		{"bad name on a websocket", func(t *testing.T) int {
			_, res, _ := websocket.DefaultDialer.Dial("ws://"+r+"/api/room/%00", nil)
			return status(res)
		}, 400},
		{"disallowed origin", func(t *testing.T) int {
			_, res, _ := websocket.DefaultDialer.Dial("ws://"+r+"/api/room/calm", http.Header{"Origin": {"https://evil.example"}})
			return status(res)
		}, 403},
		{"allowed origin", func(t *testing.T) int {
			cl, err := join(t, r, "calm", token, "Origin", "https://ott.example")
			if err != nil {
				t.Fatal(err)
			}
			cl.mustNext("you")
			return 101
		}, 101},
		{"slow handshake", func(t *testing.T) int {
			conn, err := net.Dial("tcp", r)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write([]byte("GET /api/room/calm HTTP/1.1\r\nHost: x\r\n")) // and nothing more
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = bufio.NewReader(conn).ReadString('\n')
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("slow client neither answered nor closed after 5s")
			}
			if err == nil {
				return 408 // answered: a timeout status
			}
			return 0 // closed
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.run(t); got != tc.want && !(tc.want == 0 && got == 408) {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}

	// The room in use was not disturbed.
	calm.chat("still calm")
	if m := calm.mustNext("chat"); m["text"] != "still calm" {
		t.Fatalf("chat %v", m)
	}
}

func status(res *http.Response) int {
	if res == nil {
		return 0
	}
	return res.StatusCode
}
