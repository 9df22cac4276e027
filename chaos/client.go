package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/ott"
)

// session is one WebSocket connection of a client (or one failed attempt
// at one), as the client saw it. Times are wall-clock Unix nanoseconds, 0
// for never, comparable with the sidecars' serve logs.
type session struct {
	ID        int
	Client    int
	Room      string
	Node      string // X-Roomlb-Node of the upgrade; "" when it failed
	Router    int
	Reconnect bool    // dialled with ?reconnect=true
	Dial      int64   // the attempt started
	Open      int64   // the upgrade succeeded
	Sync      int64   // the join's full sync arrived: served
	Moved     int64   // a second join completed on the same socket (a router carried it over): the node is unknown from then on
	Moves     []int64 // every such join, Moved the first
	// Yous are the ids the session was given ("you"), and when: with the
	// sidecars' join lines they say which node served it from then on.
	Yous     []you
	Close    int64 // the socket ended
	Code     int   // its close code (1006 without one)
	ByClient bool  // the client ended it (a voluntary leave, the end of the run)
	Err      string
}

// you is a client id a session was given, and when.
type you struct {
	ID string
	At int64
}

// receipt is one chat a session received.
type receipt struct {
	Chat int32
	Sess int32
	At   int64
}

// away is a voluntary absence: from a leave to the next attempt.
type away struct{ From, To int64 }

// client behaves as OpenTogetherTube's web client in one room: it joins
// through a router, sends the auth frame, reconnects with backoff and
// ?reconnect=true on close codes below 4000, and stops on 4000 and above
// (but fetches a new token on 4004, as a reload would, and waits for the
// run to revive it after a 4002).
type client struct {
	id   int
	room string
	w    *workload
	rng  *rand.Rand // used by the client's goroutine only

	// Health, read by the run without the lock.
	synced   atomic.Bool
	lastChat atomic.Int64
	away     atomic.Bool  // voluntarily away (or gone), not expected to be served
	gone     atomic.Bool  // stopped on a close code >= 4000 other than 4004
	goneCode atomic.Int32 // the close code it stopped on

	wmu  sync.Mutex // serialises writes
	mu   sync.Mutex // guards what follows
	conn *websocket.Conn
	cur  *session
	// leaveFor is set by leave: the client closes and stays away this long.
	leaveFor time.Duration
	leaving  bool
	token    string
	sessions []*session
	receipts []receipt
	aways    []away

	revive chan struct{} // a gone client starts again
}

func newClient(w *workload, id int, room string, seed uint64) *client {
	return &client{id: id, room: room, w: w, rng: rand.New(rand.NewPCG(seed, uint64(id))), revive: make(chan struct{}, 1)}
}

// run connects, reads and reconnects until ctx ends.
func (c *client) run(ctx context.Context) {
	reconnect, attempt := false, 0
	for ctx.Err() == nil {
		s := c.connect(ctx, reconnect)
		if s.Open == 0 { // the upgrade failed: the browser's close event, 1006
			if !sleepCtx(ctx, c.backoff(attempt)) {
				return
			}
			attempt++
			reconnect = true
			continue
		}
		c.read(s)
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		leaving, stay := c.leaving, c.leaveFor
		c.leaving = false
		c.mu.Unlock()
		switch {
		case leaving:
			c.away.Store(true)
			from := time.Now().UnixNano()
			ok := sleepCtx(ctx, stay)
			c.addAway(from)
			c.away.Store(false)
			if !ok {
				return
			}
			reconnect, attempt = false, 0
		case s.Code == ott.CloseMissingToken:
			c.regrant(ctx)
			reconnect, attempt = true, 0
		case s.Code >= 4000:
			c.goneCode.Store(int32(s.Code))
			c.gone.Store(true)
			c.away.Store(true)
			select {
			case <-ctx.Done():
				return
			case <-c.revive:
			}
			c.gone.Store(false)
			c.away.Store(false)
			reconnect, attempt = false, 0
		default:
			if s.Sync != 0 {
				attempt = 0
			}
			if !sleepCtx(ctx, c.backoff(attempt)) {
				return
			}
			attempt++
			reconnect = true
		}
	}
}

// backoff is the browser's reconnect delay: (1000 + 2000*attempt) ms times
// a random factor in [0.5, 1.5), attempt counted from 0 and capped at 2.
func (c *client) backoff(attempt int) time.Duration {
	attempt = min(attempt, 2)
	ms := float64(1000+2000*attempt) * (0.5 + c.rng.Float64())
	return time.Duration(ms * float64(time.Millisecond))
}

func (c *client) addAway(from int64) {
	c.mu.Lock()
	c.aways = append(c.aways, away{From: from, To: time.Now().UnixNano()})
	c.mu.Unlock()
}

// connect dials the next router (each attempt goes to the next one, as a
// load balancer in front of them would spread a browser's reconnects) and
// sends the auth frame.
func (c *client) connect(ctx context.Context, reconnect bool) *session {
	routers := c.w.routers
	c.mu.Lock()
	n := len(c.sessions)
	token := c.token
	c.mu.Unlock()
	r := (c.id + n) % len(routers)
	s := &session{ID: c.w.nextSession(), Client: c.id, Room: c.room, Router: r, Reconnect: reconnect, Dial: time.Now().UnixNano()}
	c.mu.Lock()
	c.sessions = append(c.sessions, s)
	c.mu.Unlock()
	url := "ws://" + routers[r] + "/api/room/" + c.room
	if reconnect {
		url += "?reconnect=true"
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, res, err := c.w.dialer.DialContext(dctx, url, nil)
	if err != nil {
		msg := err.Error()
		if res != nil {
			msg += " (HTTP " + strconv.Itoa(res.StatusCode) + ")"
		}
		c.mu.Lock()
		s.Err, s.Close, s.Code = msg, time.Now().UnixNano(), 1006
		c.mu.Unlock()
		return s
	}
	c.mu.Lock()
	s.Open = time.Now().UnixNano()
	s.Node = res.Header.Get(contract.HeaderNode)
	c.conn, c.cur = conn, s
	if c.w.stopping.Load() {
		// The run stopped while this dial was under way, after stop
		// looked for sockets to close: read ends at once.
		conn.Close()
	}
	c.mu.Unlock()
	c.write(websocket.TextMessage, []byte(`{"action":"auth","token":"`+token+`"}`))
	return s
}

// frame is what the client reads of a server message.
type frame struct {
	Action string `json:"action"`
	Text   string `json:"text"`
	Info   struct {
		ID string `json:"id"`
	} `json:"info"`
}

// read reads s's messages until the socket ends.
func (c *client) read(s *session) {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	var f frame
	yous := 0
	for {
		_, data, err := conn.ReadMessage()
		now := time.Now().UnixNano()
		if err != nil {
			code := 1006
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code = ce.Code
			}
			c.synced.Store(false)
			c.mu.Lock()
			s.Close, s.Code = now, code
			s.ByClient = c.leaving || c.w.stopping.Load()
			c.conn, c.cur = nil, nil
			c.mu.Unlock()
			conn.Close()
			return
		}
		f = frame{}
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		switch f.Action {
		case "sync":
			if s.Sync == 0 {
				c.mu.Lock()
				s.Sync = now
				c.mu.Unlock()
				c.synced.Store(true)
			}
		case "you":
			// A second join completion on one socket: a router joined it
			// again elsewhere behind the client's back.
			c.mu.Lock()
			s.Yous = append(s.Yous, you{ID: f.Info.ID, At: now})
			c.mu.Unlock()
			if yous++; yous > 1 {
				c.mu.Lock()
				if s.Moved == 0 {
					s.Moved = now
				}
				s.Moves = append(s.Moves, now)
				c.mu.Unlock()
			}
		case "chat":
			id, ok := chatID(f.Text)
			if !ok {
				continue
			}
			c.lastChat.Store(now)
			c.mu.Lock()
			c.receipts = append(c.receipts, receipt{Chat: int32(id), Sess: int32(s.ID), At: now})
			c.mu.Unlock()
		}
	}
}

// write sends one frame on the current socket.
func (c *client) write(mt int, data []byte) error {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return errors.New("not connected")
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	return conn.WriteMessage(mt, data)
}

// send sends data if the client is served; it returns the session.
func (c *client) send(data []byte) (sess int, err error) {
	c.mu.Lock()
	s := c.cur
	c.mu.Unlock()
	if s == nil || !c.synced.Load() {
		return 0, errors.New("not served")
	}
	return s.ID, c.write(websocket.TextMessage, data)
}

// currentSession is the session the client is served on, or nil.
func (c *client) currentSession() *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil || c.cur.Sync == 0 {
		return nil
	}
	return c.cur
}

// leave closes the socket as a user closing the tab would, and stays away
// for d; false when the client is not connected.
func (c *client) leave(d time.Duration) bool {
	c.mu.Lock()
	conn := c.conn
	if conn == nil || c.leaving {
		c.mu.Unlock()
		return false
	}
	c.leaving, c.leaveFor = true, d
	c.mu.Unlock()
	conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	conn.Close()
	return true
}

// stop closes the socket at the end of the run.
func (c *client) stop() {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// wake starts a gone client again.
func (c *client) wake() {
	select {
	case c.revive <- struct{}{}:
	default:
	}
}

// regrant gets a new session token through a router (the old one's
// session was lost with Redis's data).
func (c *client) regrant(ctx context.Context) {
	for i := 0; ctx.Err() == nil && i < 20; i++ {
		tok, err := c.w.grant(ctx, c.id+i)
		if err == nil {
			c.mu.Lock()
			c.token = tok
			c.mu.Unlock()
			return
		}
		sleepCtx(ctx, 250*time.Millisecond)
	}
}

// healthy: the client is away, or served and receiving its room's chats.
func (c *client) healthy(now int64, gap time.Duration) bool {
	if c.away.Load() && !c.gone.Load() {
		return true
	}
	return c.synced.Load() && now-c.lastChat.Load() < int64(gap)
}

// records copies what the client recorded.
func (c *client) records() ([]session, []receipt, []away) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ss := make([]session, len(c.sessions))
	for i, s := range c.sessions {
		ss[i] = *s
	}
	return ss, append([]receipt(nil), c.receipts...), append([]away(nil), c.aways...)
}

// chatText is the text of chat id: unique within a run.
func chatText(id int) string { return "chaos:" + strconv.Itoa(id) }

func chatID(text string) (int, bool) {
	v, ok := strings.CutPrefix(text, "chaos:")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil
}

// grantToken gets a session token from a router's /api/auth/grant.
func grantToken(ctx context.Context, hc *http.Client, router string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+router+"/api/auth/grant", nil)
	res, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var g struct{ Token string }
	if err := json.NewDecoder(res.Body).Decode(&g); err != nil || res.StatusCode != 200 || g.Token == "" {
		return "", errors.New("grant: HTTP " + strconv.Itoa(res.StatusCode))
	}
	return g.Token, nil
}
