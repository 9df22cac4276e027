package otttest

import (
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/ott"
)

const (
	websocketCloseGoingAway    = 1001
	websocketCloseProtocolErr  = 1002
	writeTimeout               = 10 * time.Second
	closeWait                  = time.Second // for the peer's close frame after ours
	maxFrame                   = 100 << 20   // the ws library's default limit
	msgBalancerDidNotSendInit  = "Balancer did not send init message"
	receivedInvalid            = "invalid"
	upgradeRequiredContentType = "text/plain"
)

type upgrader = websocket.Upgrader

func newUpgrader() upgrader {
	// No subprotocol, no origin check: the real link has no authentication.
	return websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
}

// link is one accepted balancer connection. Its fields marked m.mu are
// guarded by the monolith's mutex; its queue by qmu (taken after m.mu, never
// before).
type link struct {
	m      *Monolith
	conn   *websocket.Conn
	remote string

	// m.mu
	balancerID  string // from the balancer's init
	initialised bool
	initTimer   *time.Timer

	qmu     sync.Mutex
	queue   [][]byte
	closing bool // a close frame is queued; nothing more is sent
	code    int
	text    string
	dead    bool
	wake    chan struct{}
	done    chan struct{} // closed by kill
	once    sync.Once
}

// serveBalancer accepts a balancer link on any path (§2.1).
func (m *Monolith) serveBalancer(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Content-Type", upgradeRequiredContentType)
		w.WriteHeader(http.StatusUpgradeRequired)
		w.Write([]byte(http.StatusText(http.StatusUpgradeRequired)))
		return
	}
	conn, err := m.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	conn.SetReadLimit(maxFrame)
	l := &link{
		m:      m,
		conn:   conn,
		remote: r.RemoteAddr,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	m.mu.Lock()
	if m.closed || m.shuttingDown {
		m.mu.Unlock()
		conn.NetConn().Close()
		return
	}
	m.links = append(m.links, l)
	m.log.Info("balancer link", logRemote, l.remote, "path", r.URL.RequestURI())
	// The monolith speaks first (§2.3).
	m.sendLocked(l, ott.TypeInit, ott.MonolithInit{Port: m.httpPort(), Region: m.cfg.Region, ID: m.id}.Append(nil))
	l.initTimer = m.afterFunc(m.cfg.InitTimeout, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if !l.initialised {
			m.log.Warn("balancer did not send init", logRemote, l.remote)
			l.close(websocketCloseProtocolErr, msgBalancerDidNotSendInit)
		}
	})
	m.goLocked(l.writeLoop)
	m.mu.Unlock()

	l.readLoop()

	m.mu.Lock()
	if i := slices.Index(m.links, l); i >= 0 {
		m.links = slices.Delete(m.links, i, i+1)
	}
	l.initTimer.Stop()
	m.log.Info("balancer link closed", logRemote, l.remote, logBalancer, l.balancerID)
	if !m.closed {
		m.linkClosedLocked(l)
	}
	m.mu.Unlock()
	l.kill()
}

func (l *link) readLoop() {
	m := l.m
	var dec ott.Decoder
	for {
		_, frame, err := l.conn.ReadMessage()
		if err != nil {
			m.log.Debug("balancer link read", logRemote, l.remote, logErr, err)
			return
		}
		msg, err := dec.DecodeB2M(frame)
		key := receivedInvalid
		if err == nil {
			key = msg.Type.String()
		}
		m.mu.Lock()
		m.received[key]++
		id := l.balancerID
		m.mu.Unlock()
		if h := m.cfg.OnReceive; h != nil {
			h(id, msg, err)
		}
		m.handle(l, msg, err)
	}
}

// writeLoop writes the queued frames in order; after a queued close frame
// it gives the peer closeWait to answer before the reader gives up.
func (l *link) writeLoop() {
	for {
		select {
		case <-l.wake:
		case <-l.done:
			return
		}
		l.qmu.Lock()
		q := l.queue
		l.queue = nil
		closing, code, text := l.closing, l.code, l.text
		l.qmu.Unlock()
		for _, frame := range q {
			l.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			if err := l.conn.WriteMessage(websocket.TextMessage, frame); err != nil {
				l.kill()
				return
			}
		}
		if closing {
			l.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(writeTimeout))
			l.conn.SetReadDeadline(time.Now().Add(closeWait))
			return
		}
	}
}

// enqueue queues a frame; false once the link is closing.
func (l *link) enqueue(frame []byte) bool {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	if l.closing || l.dead {
		return false
	}
	l.queue = append(l.queue, frame)
	l.signal()
	return true
}

func (l *link) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// close sends a close frame after what is queued, and nothing after it.
func (l *link) close(code int, text string) {
	l.qmu.Lock()
	defer l.qmu.Unlock()
	if l.closing || l.dead {
		return
	}
	l.closing, l.code, l.text = true, code, text
	l.signal()
}

// kill drops the connection without a close frame.
func (l *link) kill() {
	l.once.Do(func() {
		l.qmu.Lock()
		l.dead = true
		l.qmu.Unlock()
		close(l.done)
		l.conn.NetConn().Close()
	})
}

// handle acts on one frame of a link (§2.3, §3.1).
func (m *Monolith) handle(l *link, msg ott.B2M, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	if !l.initialised && (err != nil || msg.Type != ott.TypeInit) {
		// Before the balancer's init only an init handler listens.
		m.log.Debug("dropping message before init", logRemote, l.remote, "type", msg.Type.String())
		return
	}
	if err != nil {
		m.log.Warn("dropping invalid message", logBalancer, l.balancerID, logErr, err)
		return
	}
	switch msg.Type {
	case ott.TypeInit:
		first := !l.initialised
		l.balancerID, l.initialised = msg.Init.ID, true
		l.initTimer.Stop()
		if first {
			m.log.Info("balancer initialised", logRemote, l.remote, logBalancer, l.balancerID)
			m.sendLocked(l, ott.TypeGossip, m.gossipFrameLocked())
		}
	case ott.TypeLoad:
		name := msg.Load.Room
		m.goLocked(func() {
			if _, err := m.getRoom(name); err != nil {
				// No answer at all (§4.2).
				m.log.Info("load failed", logRoom, name, logErr, err)
			}
		})
	case ott.TypeUnload:
		r := m.findLoadedLocked(msg.Unload.Room)
		if r == nil {
			m.crashLocked(msg.Unload.Room)
			return
		}
		m.unloadCommandedLocked(r)
	case ott.TypeJoin:
		m.joinLocked(l, msg.Join)
	case ott.TypeLeave:
		m.leaveLocked(msg.Leave.Client)
	case ott.TypeClientMsg:
		m.clientMsgLocked(msg.ClientMsg)
	}
}

// firstByIDLocked is the first initialised link with the balancer id: where
// broadcasts go (§8 item 6).
func (m *Monolith) firstByIDLocked(id string) *link {
	for _, l := range m.links {
		if l.initialised && l.balancerID == id {
			return l
		}
	}
	return nil
}
