package sidecar

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fasthttp"

	"github.com/roomlb/roomlb/contract"
)

// Client WebSockets are upgraded here rather than by websocket's
// FastHTTPUpgrader, which serves the connection inside fasthttp's hijack
// handler: that keeps the request's RequestCtx and fasthttp's read buffer
// (ReadBufferSize, sized for request headers) for the connection's whole
// life, some 10 KiB of an idle client. The server keeps hijacked
// connections (KeepHijackedConns), the hijack handler takes the bare
// connection, writes the handshake answer and returns, and fasthttp lets go
// of the request.

// clientReadBuffer is the read buffer of a client connection, held while it
// is open. Frames longer than it are read past it, straight into the frame.
// Above 256 bytes, so that the upgrader reads through the buffer given it
// (hijacked), which tells the client whether frames wait in it.
const clientReadBuffer = 512

// clientUpgrader builds the client connections. Routers check origins
// against their allow-list; the sidecar is only reachable by routers holding
// the secret.
var clientUpgrader = websocket.Upgrader{
	// The read buffer is hijacked's.
	WriteBufferSize: 1024,
	// Write buffers are shared between client connections, so an idle
	// client holds none.
	WriteBufferPool: &wsBufferPool,
	CheckOrigin:     func(*http.Request) bool { return true },
	// The handshake is checked before the hijack (upgrade); an error here
	// is a failed write, and the connection is closed.
	Error: func(http.ResponseWriter, *http.Request, int, error) {},
}

// wsBufferPool shares write buffers between client connections.
var wsBufferPool = syncBufferPool{}

// upgrade answers a WebSocket upgrade for rm (ctx is one, see
// websocket.FastHTTPIsWebSocketUpgrade) and serves the client.
func (s ingress) upgrade(ctx *fasthttp.RequestCtx, rm *room) {
	// The checks and answers of websocket.FastHTTPUpgrader.
	h := &ctx.Request.Header
	status := 0
	switch {
	case !ctx.IsGet():
		status = fasthttp.StatusMethodNotAllowed
	case !hasToken(h.Peek("Sec-Websocket-Version"), "13"):
		status = fasthttp.StatusBadRequest
	case !validKey(h.Peek("Sec-Websocket-Key")):
		status = fasthttp.StatusBadRequest
	}
	if status != 0 {
		ctx.Error(fasthttp.StatusMessage(status), status)
		return
	}
	req := &http.Request{Method: http.MethodGet, Header: http.Header{
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {string(h.Peek("Sec-Websocket-Key"))},
	}}
	answer := http.Header{contract.HeaderNode: {s.cfg.NodeID}}
	// A router carrying a client over says how many clients the room had
	// on its previous owner (0: unknown).
	carriedBy := h.Peek(contract.HeaderCarried)
	carried := len(carriedBy) > 0
	expect, _ := strconv.Atoi(string(carriedBy))
	// clientUpgrader writes the answer on the bare connection.
	ctx.HijackSetNoResponse(true)
	s.conns.Add(1)
	ctx.Hijack(func(hc net.Conn) {
		conn := bareConn(hc)
		br := bufio.NewReaderSize(conn, clientReadBuffer)
		ws, err := clientUpgrader.Upgrade(hijacked{conn, br}, req, answer)
		if err != nil {
			conn.Close()
			s.conns.Done()
			return
		}
		// Not in this goroutine: fasthttp holds the request and its
		// reader until it returns.
		go s.serveClient(ws, br, rm, carried, max(expect, 0))
	})
}

// bareConn returns the connection under fasthttp's hijacked one, which reads
// through the server's read buffer, with the bytes that buffer holds (a
// client that sent frames before the handshake's answer) in front.
func bareConn(hc net.Conn) net.Conn {
	u, ok := hc.(interface{ UnsafeConn() net.Conn })
	if !ok {
		return hc
	}
	conn := u.UnsafeConn()
	// A read deadline in the past: hc answers from its buffer, and once it
	// is empty the read fails at once without reading the connection.
	if conn.SetReadDeadline(time.Unix(1, 0)) != nil {
		return hc
	}
	var pre []byte
	var buf [512]byte
	for {
		n, err := hc.Read(buf[:])
		pre = append(pre, buf[:n]...)
		if err != nil || n == 0 {
			break
		}
	}
	if conn.SetReadDeadline(time.Time{}) != nil {
		return hc
	}
	if len(pre) > 0 {
		return &prefixConn{Conn: conn, pre: pre}
	}
	return conn
}

// prefixConn reads pre before its connection.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) == 0 {
		return c.Conn.Read(p)
	}
	n := copy(p, c.pre)
	c.pre = c.pre[n:]
	return n, nil
}

// hijacked is the http.ResponseWriter clientUpgrader hijacks conn from, to
// read it through br.
type hijacked struct {
	conn net.Conn
	br   *bufio.Reader
}

func (w hijacked) Header() http.Header         { return http.Header{} }
func (w hijacked) Write(b []byte) (int, error) { return len(b), nil }
func (w hijacked) WriteHeader(int)             {}

func (w hijacked) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	// clientUpgrader writes through buffers of its own (WriteBufferPool).
	return w.conn, bufio.NewReadWriter(w.br, bufio.NewWriterSize(w.conn, 16)), nil
}

// hasToken reports whether the comma-separated header value v holds token
// (case-insensitive).
func hasToken(v []byte, token string) bool {
	for len(v) > 0 {
		var t []byte
		t, v, _ = bytes.Cut(v, []byte{','})
		if bytes.EqualFold(bytes.TrimSpace(t), []byte(token)) {
			return true
		}
	}
	return false
}

// validKey reports whether a Sec-WebSocket-Key is base64 of 16 bytes (RFC
// 6455 §4.1), as the upgrade requires.
func validKey(k []byte) bool {
	var d [18]byte
	n, err := base64.StdEncoding.Decode(d[:], k)
	return len(k) == 24 && err == nil && n == 16
}
