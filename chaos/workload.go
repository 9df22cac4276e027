package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/redis/go-redis/v9"
)

// chatRec is one chat the run sent.
type chatRec struct {
	Room   string
	Sender int   // client
	Sess   int   // the sender's session
	Sent   int64 // wall-clock Unix ns, taken before the write
	Failed bool  // the write failed: not sent
}

// roomSpec is a room the run created and the state it must keep.
type roomSpec struct {
	Name  string
	Title string
}

// workload is the clients of a phase and what drives them: a chat stream
// per room, users leaving and coming back, now and then a playback change
// (a storable change, which the monolith writes to Redis 5 s later).
type workload struct {
	cfg     *Config
	seed    uint64
	routers []string
	dialer  *websocket.Dialer
	hc      *http.Client
	rooms   []roomSpec
	clients []*client
	byRoom  map[string][]*client

	sessSeq  atomic.Int64
	stopping atomic.Bool

	chatMu sync.Mutex
	chats  []chatRec

	cancel context.CancelFunc
	wg     sync.WaitGroup // clients, chatters, the churner
}

// gapLimit is how long a served client may go without a chat of its
// room: longer is a gap in its service.
func (w *workload) gapLimit() time.Duration { return max(time.Second, 4*w.cfg.ChatInterval) }

func newWorkload(cfg *Config, routers []string, seed uint64) *workload {
	nd := &net.Dialer{Timeout: 3 * time.Second}
	w := &workload{
		cfg:     cfg,
		seed:    seed,
		routers: routers,
		dialer:  &websocket.Dialer{NetDialContext: nd.DialContext, HandshakeTimeout: 5 * time.Second},
		hc:      &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: nd.DialContext, MaxIdleConnsPerHost: 4}},
		byRoom:  map[string][]*client{},
	}
	for i := range cfg.Rooms {
		w.rooms = append(w.rooms, roomSpec{Name: fmt.Sprintf("chaos-%02d", i+1), Title: fmt.Sprintf("Chaos room %d (seed %d)", i+1, cfg.Seed)})
	}
	return w
}

func (w *workload) nextSession() int { return int(w.sessSeq.Add(1)) }

// grant gets a session token through router i (mod the routers).
func (w *workload) grant(ctx context.Context, i int) (string, error) {
	return grantToken(ctx, w.hc, w.routers[i%len(w.routers)])
}

// createRooms creates every room with its title through the routers.
func (w *workload) createRooms(ctx context.Context) error {
	for i, r := range w.rooms {
		if err := w.createRoom(ctx, i, r, 30*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// createRoom creates r (as temporary: the real API's default, whose state
// lives only in the monolith and in Redis); a name already taken is fine.
func (w *workload) createRoom(ctx context.Context, i int, r roomSpec, limit time.Duration) error {
	body, _ := json.Marshal(map[string]any{"name": r.Name, "title": r.Title, "visibility": "public"})
	return waitFor(ctx, limit, func(ctx context.Context) error {
		i++
		if err := createAt(ctx, w.hc, w.routers[i%len(w.routers)], body); err != nil {
			return fmt.Errorf("%s: %w", r.Name, err)
		}
		return nil
	})
}

// createAt sends one POST /api/room/create of body through router; a name
// already taken counts as created.
func createAt(ctx context.Context, hc *http.Client, router string, body []byte) error {
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+router+"/api/room/create", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode == 200 || bytes.Contains(b, []byte("RoomNameTaken")) {
		return nil
	}
	return fmt.Errorf("create: HTTP %d %s", res.StatusCode, truncate(string(b), 200))
}

// start grants every client a token and starts the clients, the chat
// streams and the churn.
func (w *workload) start(ctx context.Context) error {
	id := 0
	for _, r := range w.rooms {
		for range w.cfg.ClientsPerRoom {
			c := newClient(w, id, r.Name, w.seed)
			var err error
			if err = waitFor(ctx, 20*time.Second, func(ctx context.Context) error {
				c.token, err = w.grant(ctx, id)
				return err
			}); err != nil {
				return fmt.Errorf("chaos: grant a token: %w", err)
			}
			w.clients = append(w.clients, c)
			w.byRoom[r.Name] = append(w.byRoom[r.Name], c)
			id++
		}
	}
	ctx, w.cancel = context.WithCancel(ctx)
	for _, c := range w.clients {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			c.run(ctx)
		}()
	}
	for i, r := range w.rooms {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.chatter(ctx, r.Name, rand.New(rand.NewPCG(w.seed, uint64(1000+i))))
		}()
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.churn(ctx, rand.New(rand.NewPCG(w.seed, 999)))
	}()
	return nil
}

// chatter sends the room's chats from a random served client, and now and
// then a playback change.
func (w *workload) chatter(ctx context.Context, room string, rng *rand.Rand) {
	t := time.NewTicker(w.cfg.ChatInterval)
	defer t.Stop()
	playing := false
	// A playback change now and then, further apart than the monolith's
	// 5 s write debounce (which each change pushes back), so that the
	// room's state in Redis is never more than a few seconds old.
	nextChange := time.Now().Add(time.Duration(rng.Int64N(int64(stateChangeEvery))))
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var served []*client
		for _, c := range w.byRoom[room] {
			if c.synced.Load() && !c.away.Load() {
				served = append(served, c)
			}
		}
		if len(served) == 0 {
			continue
		}
		c := served[rng.IntN(len(served))]
		if time.Now().After(nextChange) {
			playing = !playing
			if _, err := c.send(playbackFrame(playing)); err == nil {
				nextChange = time.Now().Add(stateChangeEvery)
			}
			continue
		}
		w.chatMu.Lock()
		id := len(w.chats)
		w.chats = append(w.chats, chatRec{Room: room, Sender: c.id, Sent: time.Now().UnixNano()})
		w.chatMu.Unlock()
		sess, err := c.send([]byte(`{"action":"req","request":{"type":11,"text":"` + chatText(id) + `"}}`))
		w.chatMu.Lock()
		w.chats[id].Sess, w.chats[id].Failed = sess, err != nil
		w.chatMu.Unlock()
	}
}

// stateChangeEvery is the time between two playback changes in a room.
const stateChangeEvery = 12 * time.Second

func playbackFrame(playing bool) []byte {
	return []byte(`{"action":"req","request":{"type":2,"state":` + strconv.FormatBool(playing) + `}}`)
}

// restoreState makes a storable change in every room (as its users would
// sooner or later) and waits until the monolith has written every room's
// state to Redis again, up to limit; it returns the rooms still missing.
// After Redis lost its data a room lives only in its monolith's memory
// until that write: a fault in that window loses it whatever roomlb does.
func (w *workload) restoreState(ctx context.Context, rdb *redis.Client, limit time.Duration) []string {
	for _, r := range w.rooms {
		for _, c := range w.byRoom[r.Name] {
			// One of the two is a change, whatever the room's state.
			if _, err := c.send(playbackFrame(false)); err == nil {
				c.send(playbackFrame(true))
				break
			}
		}
	}
	return w.waitState(ctx, rdb, limit)
}

// waitState waits until every room's state is in Redis, up to limit; it
// returns the rooms still missing.
func (w *workload) waitState(ctx context.Context, rdb *redis.Client, limit time.Duration) []string {
	var missing []string
	waitFor(ctx, limit, func(ctx context.Context) error {
		missing = missing[:0]
		for _, r := range w.rooms {
			n, err := rdb.Exists(ctx, "room:"+r.Name).Result()
			if err != nil {
				return err
			}
			if n == 0 {
				missing = append(missing, r.Name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d rooms not in Redis", len(missing))
		}
		return nil
	})
	return missing
}

// churn makes a random client leave every second and come back after 0.5
// to 3 s, as users do.
func (w *workload) churn(ctx context.Context, rng *rand.Rand) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c := w.clients[rng.IntN(len(w.clients))]
		c.leave(500*time.Millisecond + time.Duration(rng.Int64N(int64(2500*time.Millisecond))))
	}
}

// burst makes a third of the clients leave and join again at once.
func (w *workload) burst(rng *rand.Rand) {
	for _, c := range w.clients {
		if rng.IntN(3) == 0 {
			c.leave(time.Duration(rng.Int64N(int64(300 * time.Millisecond))))
		}
	}
}

// unhealthy lists the clients that are expected to be served and are not.
func (w *workload) unhealthy() []*client {
	now := time.Now().UnixNano()
	var out []*client
	for _, c := range w.clients {
		if !c.healthy(now, w.gapLimit()) {
			out = append(out, c)
		}
	}
	return out
}

// waitServed waits until every client is served (or away) or until
// deadline; it returns when and the clients still not served.
func (w *workload) waitServed(ctx context.Context, deadline time.Time) (time.Time, []*client) {
	for {
		bad := w.unhealthy()
		now := time.Now()
		if len(bad) == 0 || !now.Before(deadline) || ctx.Err() != nil || allGone(bad) {
			return now, bad
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// allGone: every client of cs stopped (on a close code of 4000 and up),
// which only a repair changes.
func allGone(cs []*client) bool {
	for _, c := range cs {
		if !c.gone.Load() {
			return false
		}
	}
	return true
}

// busiestNodes orders the nodes by the clients they serve, most first,
// ties broken by rng.
func (w *workload) busiestNodes(ids []string, rng *rand.Rand) []string {
	count := map[string]int{}
	for _, c := range w.clients {
		if s := c.currentSession(); s != nil {
			count[s.Node]++
		}
	}
	out := append([]string(nil), ids...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	// Stable insertion sort: n is the number of nodes.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && count[out[j]] > count[out[j-1]]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// repair creates again the rooms whose clients were told they do not exist
// (4002: the room was lost, which the report already counts) and wakes
// every client that stopped, so that the next fault has clients to hurt.
func (w *workload) repair(ctx context.Context) []string {
	var recreated []string
	for i, r := range w.rooms {
		lost := false
		for _, c := range w.byRoom[r.Name] {
			if c.gone.Load() {
				lost = true
			}
		}
		if !lost {
			continue
		}
		if err := w.createRoom(ctx, i, r, 10*time.Second); err == nil {
			recreated = append(recreated, r.Name)
		}
		for _, c := range w.byRoom[r.Name] {
			c.wake()
		}
	}
	return recreated
}

// roomCheck is the end of run check of one room.
type roomCheck struct {
	Room string
	Err  error // nil: joined, with its title
}

// checkRooms joins every room with a new client and checks its title.
func (w *workload) checkRooms(ctx context.Context) []roomCheck {
	var out []roomCheck
	for i, r := range w.rooms {
		out = append(out, roomCheck{Room: r.Name, Err: w.checkRoom(ctx, i, r)})
	}
	return out
}

func (w *workload) checkRoom(ctx context.Context, i int, r roomSpec) error {
	var final error
	err := waitFor(ctx, 20*time.Second, func(ctx context.Context) error {
		tok, err := w.grant(ctx, i)
		if err != nil {
			return err
		}
		i++
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		conn, _, err := w.dialer.DialContext(dctx, "ws://"+w.routers[i%len(w.routers)]+"/api/room/"+r.Name, nil)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.WriteMessage(websocket.TextMessage, []byte(`{"action":"auth","token":"`+tok+`"}`))
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			_, data, err := conn.ReadMessage()
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code >= 4000 {
				final = fmt.Errorf("closed with %d", ce.Code)
				return nil // a definite answer: stop retrying
			}
			if err != nil {
				return err
			}
			var m struct {
				Action string  `json:"action"`
				Title  *string `json:"title"`
			}
			if json.Unmarshal(data, &m) != nil || m.Action != "sync" || m.Title == nil {
				continue
			}
			if *m.Title != r.Title {
				final = fmt.Errorf("title %q, want %q", *m.Title, r.Title)
			}
			return nil
		}
	})
	if err != nil {
		return err
	}
	return final
}

// stop ends every client and waits for the workload's goroutines.
func (w *workload) stop() {
	if w.cancel == nil {
		return
	}
	w.stopping.Store(true)
	w.cancel()
	for _, c := range w.clients {
		c.stop()
	}
	w.wg.Wait()
}

// records is everything the clients recorded.
type records struct {
	sessions []session
	receipts []receipt
	aways    map[int][]away // by client
	chats    []chatRec

	// joined maps client ids to the node that joined them (the sidecars'
	// join lines); nil without serve logs.
	joined map[string]string

	// Built by index.
	byID map[int]session
	got  map[uint64]struct{} // chat<<32 | session
}

func (w *workload) records() records {
	r := records{aways: map[int][]away{}}
	for _, c := range w.clients {
		ss, rs, as := c.records()
		r.sessions = append(r.sessions, ss...)
		r.receipts = append(r.receipts, rs...)
		r.aways[c.id] = as
	}
	w.chatMu.Lock()
	r.chats = append([]chatRec(nil), w.chats...)
	w.chatMu.Unlock()
	r.index()
	return r
}
