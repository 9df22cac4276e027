package sidecar

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/ott"
)

// writeWait bounds one write to a client.
const writeWait = 10 * time.Second

// frameBufs recycles the buffers of client frames and link messages.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// out is one message queued for a client: a broadcast shared by the room's
// clients, a unicast, or the close frame that ends the connection.
type out struct {
	data  []byte
	close bool
	code  int
	text  string
}

// client is one browser WebSocket joined (or joining) a room.
type client struct {
	s    *Sidecar
	id   string
	rm   *room
	conn *websocket.Conn
	br   *bufio.Reader // conn's read buffer
	link *link         // the link its join went through
	// poll: how the poller watches the connection; nil when it does not.
	poll *pollConn

	// joined is closed when the join was sent, or the client is closed
	// before that.
	joined chan struct{}
	// kicked: the monolith forgot the client already (kick); send no leave.
	kicked bool // guarded by Sidecar.mu
	// synced: the monolith has sent the client its first message (the full
	// sync of its join). Broadcasts reach it only from then on: the ones
	// before were about a room it had not joined yet on the monolith.
	synced bool // guarded by Sidecar.mu

	// token is the auth token until the join carries it. Guarded by
	// Sidecar.mu.
	token string
	// carried: a router carried the client over from the room's previous
	// owner (contract.HeaderCarried); its join event is not passed on.
	// expect is the number of clients the room had there (0: unknown).
	// Guarded by Sidecar.mu.
	carried bool
	expect  int

	// gated: the client's room is moving or fenced, and no more of its
	// frames go to the monolith; got counts those that did (or that the
	// monolith would have refused anyway), for the routers that carry the
	// client over (contract.MovedReason). Guarded by mu.
	gated bool
	got   int
	// closed is set when a close frame is queued (read without the locks).
	closed atomic.Bool
	// done is closed with closed, to wake a client waiting for its join.
	done chan struct{}

	mu      sync.Mutex
	queue   []out
	writing bool
	closing bool // a close frame is queued: nothing more is
	// armed: the client is parked in the poller, and no goroutine reads it.
	armed bool
	// writer counts the running writeLoop (0 or 1): end waits for it
	// before it closes the connection.
	writer sync.WaitGroup
}

// markJoined releases serveClient's wait for the join. Sidecar.mu is held
// (see locked).
func (c *client) markJoined() {
	select {
	case <-c.joined:
	default:
		close(c.joined)
	}
}

// serveClient runs one client connection, upgraded for rm and reading
// through br, to its end; s.conns counts it until then.
func (s ingress) serveClient(conn *websocket.Conn, br *bufio.Reader, rm *room, carried bool, expect int) {
	c := s.joinClient(conn, rm, carried, expect)
	if c == nil {
		conn.Close()
		s.conns.Done()
		return
	}
	c.br = br
	c.poll = newPollConn(conn.UnderlyingConn())
	// Without a poller the reading goroutine is the idle client's cost:
	// a fresh one, whose stack has not grown for the auth and the join.
	go c.read(false)
}

// joinClient reads the client's auth frame and waits until its join is
// sent. It returns nil, the client forgotten, if the client is not joined.
func (s ingress) joinClient(conn *websocket.Conn, rm *room, carried bool, expect int) *client {
	conn.SetReadLimit(int64(s.cfg.MaxFrame))
	token, ok := s.readAuth(conn)
	if !ok {
		s.releaseIfIdle(rm)
		return nil
	}
	c := &client{s: s.Sidecar, id: uuid.NewString(), rm: rm, conn: conn, carried: carried, expect: expect, joined: make(chan struct{}), done: make(chan struct{})}
	lk := s.lock()
	added := lk.addClient(c, token)
	lk.unlock()
	if !added {
		s.releaseIfIdle(rm)
		c.finish()
		return nil
	}
	// addClient's load timer closes waiting clients; this is a backstop.
	backstop := time.NewTimer(s.cfg.LoadTimeout + time.Second)
	defer backstop.Stop()
	select {
	case <-c.joined:
		return c
	case <-c.done:
		// Closed while waiting: its room moved or failed to load.
	case <-backstop.C:
		c.close(contract.CloseTryAgain, "room not loaded")
	}
	lk = s.lock()
	lk.removeClient(c)
	lk.unlock()
	c.finish()
	return nil
}

// read relays the client's frames as long as they come without waiting
// (or, woken, the frame that woke it), then parks the client in the poller
// until the next one; without a poller it waits for it. At most one read
// runs for a client at a time: the poller wakes a parked client once. When
// the connection ends read forgets the client.
func (c *client) read(woken bool) {
	for {
		if !woken && c.br.Buffered() == 0 && c.park() {
			return
		}
		woken = false
		if !c.readFrame() {
			c.end()
			return
		}
	}
}

// park hands the client to the poller, if there is one and the connection
// is not closing (then the read ends when the peer answers the close, or at
// the deadline the writer set). It reports whether it did.
func (c *client) park() bool {
	if c.poll == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || clientPoller().arm(c) != nil {
		return false
	}
	c.armed = true
	return true
}

// readable is the poller's: the parked client's connection is readable, or
// ended.
func (c *client) readable() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wakeLocked()
}

// wakeLocked has a parked client read again (c.mu is held): it has a frame,
// or its connection is closing and the read must see the end.
func (c *client) wakeLocked() {
	if c.armed {
		c.armed = false
		go c.read(true)
	}
}

// end forgets a client whose connection ended.
func (c *client) end() {
	lk := c.s.lock()
	lk.removeClient(c)
	lk.unlock()
	c.finish()
	lingerClose(c.conn.NetConn())
	if c.poll != nil {
		clientPoller().forget(c)
	}
	c.s.conns.Done()
}

// Closing a socket that still holds unread bytes (the rest of a frame too
// large, what a client sent after its last frame was refused) sends a
// reset, which may make the client drop the close frame written just before
// and see 1006 instead of its code. lingerClose shuts the sending side after
// the close frame and reads what is left, up to lingerBytes for lingerWait,
// before it closes.
const (
	lingerBytes = 256 << 10
	lingerWait  = 500 * time.Millisecond
)

func lingerClose(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		nc.SetReadDeadline(time.Now().Add(lingerWait))
		io.CopyN(io.Discard, nc, lingerBytes)
	}
	nc.Close()
}

// readAuth reads the client's first frame: {"action":"auth","token":...}
// within AuthTimeout, answering bad ones as the upstream balancer does
// (ott/PROTOCOL.md §5.2).
func (s ingress) readAuth(conn *websocket.Conn) (string, bool) {
	conn.SetReadDeadline(time.Now().Add(s.cfg.AuthTimeout))
	mt, data, err := conn.ReadMessage()
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			closeNow(conn, ott.CloseMissingToken, "did not send auth token")
		} else if errors.Is(err, websocket.ErrReadLimit) {
			closeNow(conn, contract.CloseTooBig, "frame too large")
		}
		return "", false
	}
	if mt != websocket.TextMessage {
		return "", false // upstream drops the connection without a close frame
	}
	if !utf8.Valid(data) {
		closeNow(conn, contract.CloseInvalidData, "invalid UTF-8")
		return "", false
	}
	var auth struct {
		Action *string          `json:"action"`
		Token  *json.RawMessage `json:"token"`
	}
	if err := json.Unmarshal(data, &auth); err != nil || auth.Action == nil {
		closeNow(conn, contract.CloseProtocol, "failed to deserialize message")
		return "", false
	}
	if *auth.Action != "auth" {
		closeNow(conn, ott.CloseMissingToken, "did not send auth token")
		return "", false
	}
	var token string
	if auth.Token == nil || json.Unmarshal(*auth.Token, &token) != nil {
		closeNow(conn, contract.CloseProtocol, "failed to deserialize message")
		return "", false
	}
	return token, true
}

// closeNow writes a close frame on a connection that has no writer yet.
func closeNow(conn *websocket.Conn, code int, text string) {
	conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
}

// readFrame relays the client's next frame to the monolith as a
// client_msg. It reports false when the connection is over.
func (c *client) readFrame() bool {
	s := c.s
	mt, r, err := c.conn.NextReader()
	if err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			c.close(contract.CloseTooBig, "frame too large")
		}
		return false
	}
	if mt != websocket.TextMessage && mt != websocket.BinaryMessage {
		return true
	}
	bp := frameBufs.Get().(*[]byte)
	frame, err := ott.ReadMessage((*bp)[:0], r)
	if err != nil {
		*bp = frame[:0]
		frameBufs.Put(bp)
		if errors.Is(err, websocket.ErrReadLimit) {
			c.close(contract.CloseTooBig, "frame too large")
		}
		return false
	}
	if c.rm.movingNow.Load() || c.closed.Load() {
		// Closed (kicked, or its room moving): a change now would miss
		// the state the next owner loads. Not counted: a router
		// carrying the client over sends it to the next owner.
		*bp = frame[:0]
		frameBufs.Put(bp)
		return true
	}
	now := s.now()
	if !c.rm.valid(now) {
		// The lease ran out (or the room was fenced): serve nothing.
		*bp = frame[:0]
		frameBufs.Put(bp)
		lk := s.lock()
		lk.fence(c.rm, c.rm.invalidReason(now))
		lk.unlock()
		return false
	}
	if !utf8.Valid(frame) {
		// The payload goes to the monolith inside a text frame of the
		// link, and Node fails a link whose text frame is not UTF-8
		// (1007), with every room of the node. A text frame that is not
		// UTF-8 fails this client's connection alone, as RFC 6455 says;
		// binary frames are relayed as text too, so the same holds.
		*bp = frame[:0]
		frameBufs.Put(bp)
		c.close(contract.CloseInvalidData, "invalid UTF-8")
		return false
	}
	// The monolith takes only JSON objects as payloads (§8 item 13);
	// anything else is dropped, as the upstream balancer drops non-JSON.
	if !isJSONObject(frame) {
		*bp = frame[:0]
		frameBufs.Put(bp)
		c.mu.Lock()
		if !c.gated {
			c.got++
		}
		c.mu.Unlock()
		return true
	}
	if ott.RequestChangesState(frame) {
		c.rm.lastChange.Store(now)
	}
	mp := frameBufs.Get().(*[]byte)
	msg := ott.ClientMsg{ClientID: c.id, Payload: frame}.Append((*mp)[:0])
	*bp = frame[:0]
	frameBufs.Put(bp)
	*mp = msg
	// Counted and queued on the link in one step against gate: a frame is
	// either counted and ahead of the room's unload on the link, or
	// neither.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gated {
		*mp = (*mp)[:0]
		frameBufs.Put(mp)
		return true
	}
	c.got++
	if c.rm.holding.Load() && c.hold(mp) {
		return true
	}
	c.link.sendPooled(mp, c.rm)
	return true
}

// gate stops the client's frames from going to the monolith and returns how
// many did (see got).
func (c *client) gate() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gated = true
	return c.got
}

// closeMoved gates the client and closes it with CloseServiceRestart: its
// room continues elsewhere, where routers carry it over. The room had
// clients clients.
func (c *client) closeMoved(text string, clients int) {
	c.close(contract.CloseServiceRestart, contract.MovedReason(text, clients, c.gate()))
}

// finish stops queueing and waits for the writer to write what is queued
// (a close frame, say; each write is bounded by writeWait): nothing may
// write to the connection once it is closed.
func (c *client) finish() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.writer.Wait()
}

// isJSONObject reports whether b is one valid JSON object.
func isJSONObject(b []byte) bool {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i < len(b) && b[i] == '{' && json.Valid(b)
}

// send queues data for the client. data is not copied: a broadcast's
// payload is one slice shared read-only by the room's clients, each writing
// it through its own pooled write buffer. (websocket.PreparedMessage would
// build a throwaway connection with a 4 KiB buffer per message; writing a
// prebuilt frame to the socket directly would bypass websocket.Conn's write
// lock and deadline.)
func (c *client) send(data []byte) { c.enqueue(out{data: data}) }

// close queues a close frame after what is already queued; the connection
// ends when it is written.
func (c *client) close(code int, text string) {
	c.enqueue(out{close: true, code: code, text: text})
}

// abort drops the connection without a close frame, as a crash would.
func (c *client) abort() {
	c.conn.Close()
	c.mu.Lock()
	c.closing = true
	c.queue = nil
	if !c.closed.Swap(true) {
		close(c.done)
	}
	c.wakeLocked() // the read ends and cleans up
	c.mu.Unlock()
}

func (c *client) enqueue(m out) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if !m.close && len(c.queue) >= c.s.cfg.SendQueue {
		// A client this far behind gets a fresh start: it reconnects and
		// receives the whole state again.
		m = out{close: true, code: contract.CloseTryAgain, text: "too slow"}
	}
	if m.close {
		c.closing = true
		if !c.closed.Swap(true) {
			close(c.done)
		}
		c.wakeLocked()
	}
	c.queue = append(c.queue, m)
	if !c.writing {
		c.writing = true
		c.writer.Add(1)
		go c.writeLoop()
	}
	c.mu.Unlock()
}

// writeLoop writes the queue out and exits when it is empty, so an idle
// client has no writer goroutine.
func (c *client) writeLoop() {
	defer c.writer.Done()
	var batch []out
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		batch, c.queue = c.queue, batch[:0]
		c.mu.Unlock()
		for i, m := range batch {
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			var err error
			switch {
			case m.close:
				err = c.conn.WriteControl(websocket.CloseMessage,
					websocket.FormatCloseMessage(m.code, m.text), time.Now().Add(time.Second))
				// The read loop ends when the peer answers or after a second.
				c.conn.SetReadDeadline(time.Now().Add(time.Second))
			default:
				err = c.conn.WriteMessage(websocket.TextMessage, m.data)
			}
			batch[i] = out{}
			if err != nil {
				c.abort()
				c.mu.Lock()
				c.writing = false
				c.mu.Unlock()
				return
			}
		}
		c.s.metrics.messages.WithLabelValues("delivered").Add(float64(len(batch)))
	}
}
