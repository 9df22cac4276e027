package router

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/roomlb/roomlb/contract"
)

// upgrade is a sidecar's accepted WebSocket handshake waiting for the
// client's connection to be hijacked.
type upgrade struct {
	conn net.Conn      // to the sidecar
	br   *bufio.Reader // holds what the sidecar sent right after its 101
	head []byte        // the 101 for the client
	// timer closes conn if the hijack never happens (the client's
	// connection failed before fasthttp handed it over).
	timer *time.Timer
	// room ("" for a WebSocket about no room), node and epoch (0: placed)
	// are the owner the handshake was routed by; see supersede.
	room  string
	node  string
	epoch int64
	// hs is the handshake request up to the router's headers, kept by the
	// relay of a room to carry its client over.
	hs []byte
}

// isUpgrade reports whether the client asks for a WebSocket.
func isUpgrade(h *fasthttp.RequestHeader) bool {
	found := false
	connectionTokens(h.Peek("Upgrade"), func(tok []byte) {
		if equalFold(tok, "websocket") {
			found = true
		}
	})
	return found
}

// checkUpgrade validates a WebSocket handshake (RFC 6455 section 4.2.1) and
// its Origin; on failure the answer is in ctx.
func (c *call) checkUpgrade() (outcome, bool) {
	ctx := c.ctx
	h := &ctx.Request.Header
	if !h.IsGet() || !h.ConnectionUpgrade() {
		return c.fail(fasthttp.StatusBadRequest, "a WebSocket handshake is a GET with Connection: Upgrade"), false
	}
	if v := h.Peek("Sec-WebSocket-Version"); string(v) != "13" {
		o := c.fail(fasthttp.StatusUpgradeRequired, "unsupported WebSocket version; want 13")
		ctx.Response.Header.Set("Sec-WebSocket-Version", "13")
		return o, false
	}
	var key [18]byte
	if v := h.Peek("Sec-WebSocket-Key"); len(v) != 24 {
		return c.fail(fasthttp.StatusBadRequest, "bad Sec-WebSocket-Key"), false
	} else if n, err := base64.StdEncoding.Decode(key[:], v); err != nil || n != 16 {
		return c.fail(fasthttp.StatusBadRequest, "bad Sec-WebSocket-Key"), false
	}
	if !c.r.originAllowed(h.Peek("Origin")) {
		return c.fail(fasthttp.StatusForbidden, "origin not allowed"), false
	}
	return 0, true
}

// originAllowed checks an Origin header against Config.AllowedOrigins.
func (r *Router) originAllowed(origin []byte) bool {
	if r.cfg.origins == nil || len(origin) == 0 {
		return true
	}
	var buf [256]byte
	if len(origin) > len(buf) {
		return false
	}
	for i, ch := range origin {
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		buf[i] = ch
	}
	return r.cfg.origins[string(buf[:len(origin)])]
}

// tryWS opens the WebSocket handshake with t's sidecar: a 101 leaves the
// connection in c.up; a refusal of the contract is judged; any other answer
// is relayed to the client.
func (c *call) tryWS(t target) (verdict, hint) {
	conn, err := c.r.dialer.Dial("tcp", t.node.Addr)
	if err != nil {
		return unreachable, hint{}
	}
	conn.SetDeadline(time.Now().Add(c.r.cfg.UpstreamTimeout))
	c.s.head = append(c.s.head[:0], c.hs...)
	c.s.head = c.r.appendRouterHeaders(c.s.head, t)
	if c.carried {
		c.s.head = append(c.s.head, contract.HeaderCarried+": "...)
		c.s.head = strconv.AppendInt(c.s.head, int64(c.expect), 10)
		c.s.head = append(c.s.head, "\r\n"...)
	}
	c.s.head = append(c.s.head, "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"...)
	if _, err := conn.Write(c.s.head); err != nil {
		conn.Close()
		return upstreamError(err), hint{}
	}
	br := getUpgradeReader(conn)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := readResponse(br, resp); err != nil {
		putUpgradeReader(br)
		conn.Close()
		return upstreamError(err), hint{}
	}
	if resp.StatusCode() == fasthttp.StatusSwitchingProtocols {
		conn.SetDeadline(time.Time{})
		c.up = &upgrade{conn: conn, br: br, head: appendSwitching(nil, &resp.Header, t.node.ID),
			node: t.node.ID, epoch: t.epoch}
		if c.route == routeRoom {
			c.up.room = c.roomName()
			if !c.carried {
				c.up.hs = bytes.Clone(c.hs)
			}
		}
		return served, hint{}
	}
	putUpgradeReader(br)
	conn.Close()
	if v, h := c.judge(resp.StatusCode(), &resp.Header); v != served {
		return v, h
	}
	dst := &c.ctx.Response
	resp.Header.CopyTo(&dst.Header)
	dst.Header.SetNoDefaultContentType(true)
	stripResponse(&dst.Header, &c.s)
	dst.SetBody(resp.Body())
	return served, hint{}
}

// appendHandshake appends the handshake request for a sidecar up to the
// router's own headers: the client's request line and end-to-end headers
// and the forwarding headers. tryWS adds the contract's headers for its
// target and the upgrade.
func (c *call) appendHandshake(b []byte) []byte {
	h := &c.ctx.Request.Header
	uri := c.ctx.URI()
	b = append(b, "GET "...)
	b = append(b, uri.PathOriginal()...)
	if q := uri.QueryString(); len(q) > 0 {
		b = append(b, '?')
		b = append(b, q...)
	}
	b = append(b, " HTTP/1.1\r\n"...)
	c.s.buf = append(c.s.buf[:0], h.Peek("Connection")...)
	conn := c.s.buf
	for k, v := range h.All() {
		if dropHeader(k) || namedIn(conn, k) || isForwarding(k) || equalFold(k, "content-length") {
			continue
		}
		b = append(b, k...)
		b = append(b, ": "...)
		b = append(b, v...)
		b = append(b, "\r\n"...)
	}
	if len(c.xff) > 0 {
		b = append(b, headerXFF+": "...)
		b = append(b, c.xff...)
		b = append(b, "\r\n"...)
	}
	b = append(b, headerXFP+": "...)
	b = append(b, c.xfp...)
	return append(b, "\r\n"...)
}

// appendSwitching appends the 101 for the client: the sidecar's headers
// without hop-by-hop and internal ones, and the node that serves it.
func appendSwitching(b []byte, h *fasthttp.ResponseHeader, node string) []byte {
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\n"...)
	conn := bytes.Clone(h.Peek("Connection"))
	for k, v := range h.All() {
		if dropHeader(k) || namedIn(conn, k) || equalFold(k, "content-length") || equalFold(k, "content-type") {
			continue
		}
		b = append(b, k...)
		b = append(b, ": "...)
		b = append(b, v...)
		b = append(b, "\r\n"...)
	}
	b = append(b, contract.HeaderNode+": "...)
	b = append(b, node...)
	return append(b, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"...)
}

// hijack hands the client's connection to a relay once fasthttp lets go of
// it. The call's WebSocket slot goes with it.
func (c *call) hijack() {
	up := c.up
	r := c.r
	up.timer = time.AfterFunc(r.cfg.UpstreamTimeout, func() {
		up.conn.Close()
		putUpgradeReader(up.br)
		r.releaseWS()
	})
	c.ctx.HijackSetNoResponse(true)
	c.ctx.Hijack(func(client net.Conn) { r.relay(client, up) })
}

// upgradeReaders read sidecars' answers to WebSocket handshakes; a relay
// gives its reader back once it has passed on what it held.
var upgradeReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

func getUpgradeReader(conn net.Conn) *bufio.Reader {
	br := upgradeReaders.Get().(*bufio.Reader)
	br.Reset(conn)
	return br
}

func putUpgradeReader(br *bufio.Reader) {
	br.Reset(nil)
	upgradeReaders.Put(br)
}
