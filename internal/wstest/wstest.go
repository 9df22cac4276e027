// Package wstest is a browser-like OpenTogetherTube WebSocket client for
// tests: it dials a room through a router or a sidecar, sends the auth
// frame, and reads the server's messages in the background; and the
// HTTP calls the web client makes (Do, Grant, CreateRoom), and WaitFor.
package wstest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/contract"
)

// Client is one client of one room.
type Client struct {
	tb   testing.TB
	Conn *websocket.Conn
	// Node is the X-Roomlb-Node of the handshake: the node that serves it.
	Node string
	// Msgs carries every message, decoded; it is closed when the
	// connection ends, and Closed then carries the close code.
	Msgs   chan map[string]any
	Closed chan int
}

// Dial opens a WebSocket to url (ws://host/api/room/NAME) with hdr, and
// sends the auth frame when token is not empty. The connection is closed
// when the test ends.
func Dial(tb testing.TB, url string, hdr http.Header, token string) (*Client, *http.Response, error) {
	tb.Helper()
	conn, res, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		if res != nil {
			return nil, res, fmt.Errorf("%w (HTTP %d)", err, res.StatusCode)
		}
		return nil, res, err
	}
	c := &Client{tb: tb, Conn: conn, Node: res.Header.Get(contract.HeaderNode),
		Msgs: make(chan map[string]any, 1024), Closed: make(chan int, 1)}
	tb.Cleanup(func() { conn.Close() })
	go c.read()
	if token != "" {
		if err := c.Send(map[string]any{"action": "auth", "token": token}); err != nil {
			return nil, res, err
		}
	}
	return c, res, nil
}

func (c *Client) read() {
	for {
		_, data, err := c.Conn.ReadMessage()
		if err != nil {
			code := 1006
			if ce, ok := err.(*websocket.CloseError); ok {
				code = ce.Code
			}
			c.Closed <- code
			close(c.Msgs)
			return
		}
		var m map[string]any
		json.Unmarshal(data, &m)
		c.Msgs <- m
	}
}

// Send sends v as a JSON text frame.
func (c *Client) Send(v any) error {
	b, _ := json.Marshal(v)
	return c.Conn.WriteMessage(websocket.TextMessage, b)
}

// Chat sends a chat request.
func (c *Client) Chat(text string) error {
	return c.Send(map[string]any{"action": "req", "request": map[string]any{"type": 11, "text": text}})
}

// Next returns the next message whose action is want, skipping others.
func (c *Client) Next(want string, limit time.Duration) (map[string]any, error) {
	deadline := time.After(limit)
	for {
		select {
		case m, ok := <-c.Msgs:
			if !ok {
				return nil, fmt.Errorf("closed (%d) while waiting for %q", <-c.Closed, want)
			}
			if m["action"] == want {
				return m, nil
			}
		case <-deadline:
			return nil, fmt.Errorf("no %q within %v", want, limit)
		}
	}
}

// MustNext is Next, failing the test on error.
func (c *Client) MustNext(want string, limit time.Duration) map[string]any {
	c.tb.Helper()
	m, err := c.Next(want, limit)
	if err != nil {
		c.tb.Fatal(err)
	}
	return m
}

// CloseCode waits for the connection to end and returns its close code
// (1006 when it ended without one).
func (c *Client) CloseCode(limit time.Duration) int {
	c.tb.Helper()
	select {
	case code := <-c.Closed:
		return code
	case <-time.After(limit):
		c.tb.Fatalf("connection still open after %v", limit)
		return 0
	}
}
