package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/roomlb/roomlb/ott"
)

// link is one connection to the monolith's balancer port.
type link struct {
	s    *Sidecar
	conn *websocket.Conn
	id   string // our balancer id, fresh per connection (§8 item 6)

	out       chan linkMsg
	done      chan struct{}
	closeOnce sync.Once
	lastPong  atomic.Int64 // lease clock
	// dec decodes the monolith's messages (readLoop's only), reusing the
	// strings of room names and client ids.
	dec ott.Decoder

	// From the monolith's init.
	monolithID string
	httpAddr   string // host:port of its HTTP API
	http       *fasthttp.HostClient
}

// linkLoop keeps a link to the monolith up, redialling with backoff.
func (s *Sidecar) linkLoop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := s.runLink(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		s.log.Warn("sidecar: monolith link down", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, DefaultRedialMax)
	}
}

// runLink dials the monolith, does the init handshake and serves the link
// until it ends.
func (s *Sidecar) runLink(ctx context.Context) error {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}
	conn, _, err := d.DialContext(ctx, s.cfg.Monolith, nil)
	if err != nil {
		return fmt.Errorf("dial %s: %w", s.cfg.Monolith, err)
	}
	l := &link{
		s:    s,
		conn: conn,
		id:   uuid.NewString(),
		out:  make(chan linkMsg, linkQueue),
		done: make(chan struct{}),
	}
	defer l.close()
	stop := context.AfterFunc(ctx, l.close)
	defer stop()

	// Our init goes first; the monolith's may come before or after it.
	if err := conn.WriteMessage(websocket.TextMessage, ott.BalancerInit{ID: l.id}.Append(nil)); err != nil {
		return fmt.Errorf("send init: %w", err)
	}
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, data, err := conn.ReadMessage()
	if err != nil {
		return fmt.Errorf("wait for the monolith's init: %w", err)
	}
	m, err := ott.DecodeM2B(data)
	if err != nil || m.Type != ott.TypeInit {
		return fmt.Errorf("first message from the monolith is not its init: %q", truncate(data, 200))
	}
	conn.SetReadDeadline(time.Time{})
	host, _, err := net.SplitHostPort(hostOf(s.cfg.Monolith))
	if err != nil {
		return err
	}
	l.monolithID = m.Init.ID
	l.httpAddr = net.JoinHostPort(host, strconv.Itoa(m.Init.Port))
	l.http = &fasthttp.HostClient{
		Addr:                          l.httpAddr,
		MaxConns:                      1024,
		ReadTimeout:                   30 * time.Second,
		WriteTimeout:                  30 * time.Second,
		MaxIdleConnDuration:           s.cfg.MonolithIdle,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
	}
	l.lastPong.Store(s.now())
	conn.SetPongHandler(func(string) error { l.lastPong.Store(s.now()); return nil })

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		l.writeLoop()
	}()
	s.linkUp(l)
	err = l.readLoop()
	s.linkDown(l, err)
	return err
}

func hostOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	if u.Port() == "" {
		if u.Scheme == "wss" {
			return u.Host + ":443"
		}
		return u.Host + ":80"
	}
	return u.Host
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// linkQueue is how many messages may wait for the monolith. A monolith
// that falls this far behind is not reading: the link is dropped (its rooms
// are released and go elsewhere) rather than blocking the sidecar, which
// sends with Sidecar.mu held.
const linkQueue = 1 << 16

// linkMsg is one message queued for the monolith: a buffer (from
// frameBufs when pooled) and, for a client message, the client's room,
// whose lease is checked again when the message is written.
type linkMsg struct {
	bp *[]byte
	rm *room
}

// send queues one message for the monolith without blocking. It is dropped
// if the link is closed (the rooms and clients it was about are gone with
// the link).
func (l *link) send(msg []byte) { l.sendPooled(&msg, nil) }

// sendPooled is send for a buffer from frameBufs; the writer returns it.
// A client message names its room rm: it is written only if the room may
// still be served then (the queue may hold it past the lease's deadline).
func (l *link) sendPooled(bp *[]byte, rm *room) {
	select {
	case l.out <- linkMsg{bp, rm}:
		return
	case <-l.done:
	default:
		l.s.log.Error("sidecar: the monolith is not reading its link: dropping it", "queued", linkQueue)
		l.close()
	}
	*bp = (*bp)[:0]
	frameBufs.Put(bp)
}

func (l *link) close() {
	l.closeOnce.Do(func() {
		close(l.done)
		l.conn.Close()
	})
}

// writeLoop writes queued messages and pings the monolith; a monolith that
// does not answer two pings in a row is taken for dead.
func (l *link) writeLoop() {
	ping := time.NewTicker(l.s.cfg.PingInterval)
	defer ping.Stop()
	sent := l.s.metrics.messages.WithLabelValues("out")
	for {
		select {
		case <-l.done:
			return
		case m := <-l.out:
			bp := m.bp
			if m.rm != nil && hooks.beforeClientMsg != nil {
				hooks.beforeClientMsg()
			}
			var now int64 // the lease clock, for client frames
			if m.rm != nil {
				now = l.s.now()
			}
			if m.rm != nil && !m.rm.valid(now) {
				// The lease ran out while the message waited: this node
				// may not serve it now. (A moving room's messages were
				// queued before its unload, and the monolith's write
				// after the unload, which the move waits for, has them.)
				l.s.metrics.dropped.Inc()
				*bp = (*bp)[:0]
				frameBufs.Put(bp)
				continue
			}
			if m.rm != nil && l.s.serves != nil {
				// Stamped when the lease allowed the frame out, before
				// the write: a write the monolith is slow to read ends
				// later, but the frame was let go within the lease.
				m.rm.served(l.s.wall(now))
			}
			l.conn.SetWriteDeadline(time.Now().Add(writeWait))
			err := l.conn.WriteMessage(websocket.TextMessage, *bp)
			*bp = (*bp)[:0]
			if cap(*bp) <= 64<<10 {
				frameBufs.Put(bp)
			}
			if err != nil {
				l.close()
				return
			}
			sent.Inc()
		case <-ping.C:
			if time.Duration(l.s.now()-l.lastPong.Load()) > 2*l.s.cfg.PingInterval+time.Second {
				l.s.log.Warn("sidecar: monolith does not answer pings")
				l.close()
				return
			}
			l.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait))
		}
	}
}

// errLinkClosed is the error of a link closed from this side.
var errLinkClosed = errors.New("sidecar: monolith link closed")

// readLoop dispatches the monolith's messages until the link ends.
func (l *link) readLoop() error {
	received := l.s.metrics.messages.WithLabelValues("in")
	for {
		_, data, err := l.conn.ReadMessage()
		if err != nil {
			select {
			case <-l.done:
				return errLinkClosed
			default:
			}
			return err
		}
		received.Inc()
		m, err := l.dec.DecodeM2B(data)
		if err != nil {
			l.s.log.Warn("sidecar: bad message from the monolith", "err", err, "msg", truncate(data, 200))
			continue
		}
		l.s.dispatch(&m)
	}
}
