package router

import (
	"bytes"
	"iter"
	"net"
	"net/netip"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/roomlb/roomlb/contract"
)

// The forwarding headers the router sets.
const (
	headerXFF = "X-Forwarded-For"
	headerXFP = "X-Forwarded-Proto"
)

// hopByHop are the headers that describe one connection, not the message
// (RFC 9110 section 7.6.1), in lower case. Proxy-* headers are dropped by
// prefix.
var hopByHop = [...]string{"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}

// forwardingHeaders say who the client is; a client's own are never passed
// on (they could make the monolith believe another address): the router
// sends X-Forwarded-For and -Proto of its own (see forwarded), keeping a
// trusted proxy's.
// In lower case.
var forwardingHeaders = [...]string{"x-forwarded-for", "x-forwarded-proto", "forwarded", "x-real-ip", "x-forwarded-host"}

// isForwarding reports whether key is one of forwardingHeaders.
func isForwarding(key []byte) bool {
	for _, h := range forwardingHeaders {
		if equalFold(key, h) {
			return true
		}
	}
	return false
}

// dropHeader reports whether a client's or a sidecar's header must not be
// passed on: hop-by-hop (Proxy-* included) or internal.
func dropHeader(key []byte) bool {
	if contract.HasPrefixFold(key, contract.InternalPrefix) || contract.HasPrefixFold(key, "proxy-") {
		return true
	}
	for _, h := range hopByHop {
		if equalFold(key, h) {
			return true
		}
	}
	return false
}

// equalFold reports whether b equals s ignoring ASCII case; s must be lower
// case.
func equalFold(b []byte, s string) bool {
	return len(b) == len(s) && contract.HasPrefixFold(b, s)
}

// namedIn reports whether key is one of the tokens of a Connection value.
func namedIn(conn, key []byte) bool {
	found := false
	connectionTokens(conn, func(tok []byte) {
		if !found && bytes.EqualFold(tok, key) {
			found = true
		}
	})
	return found
}

// connectionTokens calls fn for every token of a Connection header value.
func connectionTokens(v []byte, fn func(tok []byte)) {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		if tok = bytes.TrimSpace(tok); len(tok) > 0 {
			fn(tok)
		}
	}
}

// scratch is per-request space for header work.
type scratch struct {
	keys [][]byte
	buf  []byte // header names being deleted
	fwd  []byte // X-Forwarded-For and -Proto values
	num  []byte // the epoch
	head []byte // a WebSocket handshake request
	hs   []byte // its part up to the router's headers
}

// header is what stripping needs of fasthttp's request and response
// headers.
type header interface {
	Peek(key string) []byte
	All() iter.Seq2[[]byte, []byte]
	Del(key string)
	DelBytes(key []byte)
}

// strip removes hop-by-hop headers, those named in Connection, and
// internal ones.
func strip[H header](h H, s *scratch) {
	s.keys = s.keys[:0]
	s.buf = s.buf[:0]
	if conn := h.Peek("Connection"); len(conn) > 0 {
		connectionTokens(conn, func(tok []byte) {
			s.buf = append(s.buf, tok...)
			s.keys = append(s.keys, s.buf[len(s.buf)-len(tok):])
		})
	}
	for k := range h.All() {
		if dropHeader(k) {
			s.buf = append(s.buf, k...)
			s.keys = append(s.keys, s.buf[len(s.buf)-len(k):])
		}
	}
	for _, k := range s.keys {
		h.DelBytes(k)
	}
	for _, k := range hopByHop {
		h.Del(k)
	}
}

// stripRequest strips a client's request, and drops the forwarding headers
// the router sets itself.
func stripRequest(h *fasthttp.RequestHeader, s *scratch) {
	strip(h, s)
	for _, k := range forwardingHeaders {
		h.Del(k)
	}
	// The router has read the body already (and answered 100 Continue).
	h.Del("Expect")
}

// stripResponse strips a sidecar's response.
func stripResponse(h *fasthttp.ResponseHeader, s *scratch) {
	strip(h, s)
	h.ResetConnectionClose()
}

// forwarded computes X-Forwarded-For and X-Forwarded-Proto for a request:
// a trusted peer's values are kept (the peer appended to X-Forwarded-For),
// anybody else's are replaced by the peer address and the router's own
// scheme. It reads the request's headers, so call it before stripping.
func (r *Router) forwarded(ctx *fasthttp.RequestCtx, s *scratch) (xff, xfp []byte) {
	peer := peerAddr(ctx.RemoteAddr())
	scheme := "http"
	if ctx.IsTLS() {
		scheme = "https"
	}
	b := s.fwd[:0]
	if peer.IsValid() && r.trusted(peer) {
		for _, v := range ctx.Request.Header.PeekAll(headerXFF) {
			if v = bytes.TrimSpace(v); len(v) > 0 {
				if len(b) > 0 {
					b = append(b, ", "...)
				}
				b = append(b, v...)
			}
		}
		if len(b) > 0 {
			b = append(b, ", "...)
		}
		b = peer.AppendTo(b)
		n := len(b)
		if v := ctx.Request.Header.Peek(headerXFP); len(v) > 0 {
			b = append(b, v...)
		} else {
			b = append(b, scheme...)
		}
		s.fwd = b
		return b[:n], b[n:]
	}
	if peer.IsValid() {
		b = peer.AppendTo(b)
	}
	n := len(b)
	b = append(b, scheme...)
	s.fwd = b
	return b[:n], b[n:]
}

func (r *Router) trusted(peer netip.Addr) bool {
	for _, p := range r.cfg.trusted {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

func peerAddr(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// target is where one attempt of a request goes.
type target struct {
	node  *node
	epoch int64 // the owner epoch routed by; 0 when placing
	place bool  // X-Roomlb-Place: 1
}

// appendRouterHeaders appends the contract's request headers for t to buf,
// in wire form ("Key: value\r\n").
func (r *Router) appendRouterHeaders(buf []byte, t target) []byte {
	buf = append(buf, contract.HeaderSecret+": "...)
	buf = append(buf, r.cfg.Secret...)
	buf = append(buf, "\r\n"...)
	if t.epoch > 0 {
		buf = append(buf, contract.HeaderEpoch+": "...)
		buf = strconv.AppendInt(buf, t.epoch, 10)
		buf = append(buf, "\r\n"...)
	}
	if t.place {
		buf = append(buf, contract.HeaderPlace+": 1\r\n"...)
	}
	return buf
}

// setRouterHeaders sets the contract's request headers for t on h.
func (r *Router) setRouterHeaders(h *fasthttp.RequestHeader, t target, s *scratch) {
	h.Set(contract.HeaderSecret, r.cfg.Secret)
	if t.epoch > 0 {
		s.num = strconv.AppendInt(s.num[:0], t.epoch, 10)
		h.SetBytesV(contract.HeaderEpoch, s.num)
	} else {
		h.Del(contract.HeaderEpoch)
	}
	if t.place {
		h.Set(contract.HeaderPlace, "1")
	} else {
		h.Del(contract.HeaderPlace)
	}
}
