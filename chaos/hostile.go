package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fasthttp/websocket"
)

// The hostile-clients fault: while the usual clients chat, attackers
// dialling from attackerIP (every usual client is on 127.0.0.1, so the
// routers' per-address bounds fall on the attackers alone) send malformed
// frames in rooms of their own, traversal paths, requests for rooms that do
// not exist, a burst of room creations and a flood of idle connections.
// Each attack has its documented refusal (README, "Security"); any other
// answer is an InvHostile violation. The usual checks (clients cut, rooms
// hit, chats lost, crashes) say whether anyone else noticed.

// attackerIP is the loopback address the attackers dial from.
const attackerIP = "127.0.0.2"

const (
	// hostileMissing is how many rooms that do not exist are asked for.
	hostileMissing = 300
	// hostileConnExtra is how many idle connections past the router's
	// per-address bound the connection flood opens.
	hostileConnExtra = 100
	// hostileParallel is how many requests a flood has under way.
	hostileParallel = 8
	// hostilePause is the time between two frames of one attacker.
	hostilePause = 50 * time.Millisecond
	// hostileAnswerWait bounds the wait for the answer to one frame or
	// request.
	hostileAnswerWait = 2 * time.Second
	// hostileOversize is the oversized frame: over the sidecar's 64 KiB.
	hostileOversize = 70 << 10
)

// Routers' bounds in a run. The run's own clients are all on 127.0.0.1:
// the per-address bound must hold every one of them on one router (the
// other one may be down) with room to spare, and the creation budget must
// cover the run's own creations with a wide margin (each router gets half
// of the rooms at the start, and again at most half after a fault lost
// them; a creation refused with 429 is retried as any failed one), while
// staying small enough that a burst of creations soon meets it.
func routerPerAddr(cfg *Config) int { return max(500, cfg.Rooms*cfg.ClientsPerRoom+100) }

func routerCreatesPerMinute(cfg *Config) int { return max(120, 4*cfg.Rooms) }

// createBurst is the burst of the router's creation limit: half a minute's.
func createBurst(perMinute int) int { return max(perMinute/2, 1) }

// hostileFrame is one malformed frame and its expected answer.
type hostileFrame struct {
	name string
	kind int // websocket.TextMessage or BinaryMessage
	data []byte
	// want is the close code the attacker's connection must get; 0: the
	// frame is dropped and the connection kept (its own chat comes back).
	want int
	// resetOK: a reset (1006) is taken too. The rest of a frame too large
	// may still be on its way when the connection closes, and a reset
	// then overtakes the close frame on the attacker's side.
	resetOK bool
}

// hostileFrames are the frames the attackers send, in turn.
func hostileFrames() []hostileFrame {
	nested := strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)
	big := `{"action":"req","request":{"type":11,"text":"` + strings.Repeat("a", hostileOversize) + `"}}`
	return []hostileFrame{
		{"text, JSON-shaped, invalid UTF-8", websocket.TextMessage, []byte(`{"x":"` + "\xff" + `"}`), 1007, false},
		{"binary, JSON chat, invalid UTF-8", websocket.BinaryMessage, []byte(`{"action":"req","request":{"type":11,"text":"` + "\xc3\x28" + `"}}`), 1007, false},
		{"binary garbage", websocket.BinaryMessage, []byte("\x00\x01\x02\xfe\xff\x80garbage\xc0"), 1007, false},
		{"text, oversized JSON chat", websocket.TextMessage, []byte(big), 1009, true},
		{"text, not JSON", websocket.TextMessage, []byte("hello, this is not JSON"), 0, false},
		{"text, nested 5000 deep", websocket.TextMessage, []byte(nested), 0, false},
	}
}

// expected is the answer f must get.
func (f hostileFrame) expected() string {
	if f.want == 0 {
		return answerKept
	}
	return "closed " + strconv.Itoa(f.want)
}

// answerKept: the frame was dropped and the sender is still served.
const answerKept = "kept"

// traversalPaths are requests whose paths a server behind the router would
// read as another room's (Node reads a backslash, raw or %5C, as '/') or as
// another route; each must be refused with 400. own is a room of the
// attacker's (named in other casings, which routers still route to it),
// victim a room of the usual clients.
func traversalPaths(own, victim string) [][2]string {
	up, mixed := strings.ToUpper(own), []byte(strings.ToLower(own))
	for i := 0; i < len(mixed); i += 2 {
		mixed[i] = strings.ToUpper(string(mixed[i]))[0]
	}
	return [][2]string{
		{"GET", "/api/room/" + up + "/x%5C..%5C..%5C" + victim},
		{"GET", "/api/room/" + string(mixed) + "/x%5c..%5c..%5c" + victim},
		{"GET", "/api/room/" + up + `/x\..\..\` + victim},
		{"POST", "/api/room/" + up + "/x%5C..%5C..%5Ccreate"},
		{"GET", "/api/x%5C..%5Croom%5C" + victim},
		{"GET", "/api/room/" + up + "/%2e%2e/" + victim},
		{"GET", "/api/room/" + up + "/%2E%2E/%2e%2e/room/" + victim},
		{"GET", "/api/room/" + up + "/..%2F" + victim},
	}
}

// tally counts the answers of each part of an attack.
type tally struct {
	mu    sync.Mutex
	parts []string // in the order first seen
	n     map[string]map[string]int
}

func (t *tally) add(part, answer string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = map[string]map[string]int{}
	}
	if t.n[part] == nil {
		t.n[part] = map[string]int{}
		t.parts = append(t.parts, part)
	}
	t.n[part][answer]++
}

// summary is "answer xN, ..." for part, most frequent first.
func (t *tally) summary(part string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.n[part]
	answers := make([]string, 0, len(m))
	for a := range m {
		answers = append(answers, a)
	}
	slices.SortFunc(answers, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	out := make([]string, len(answers))
	for i, a := range answers {
		out[i] = fmt.Sprintf("%s x%d", a, m[a])
	}
	return strings.Join(out, ", ")
}

func (t *tally) count(part, answer string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n[part][answer]
}

// findings keeps one violation per kind of wrong answer, with how often it
// was seen: an attack repeats the same wrong answer many times.
type findings struct {
	mu    sync.Mutex
	keys  []string
	first map[string]Violation
	n     map[string]int
}

func (f *findings) add(key, room, detail string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.first == nil {
		f.first, f.n = map[string]Violation{}, map[string]int{}
	}
	if f.n[key]++; f.n[key] == 1 {
		f.keys = append(f.keys, key)
		f.first[key] = Violation{Invariant: InvHostile, Room: room, Detail: detail, at: time.Now().UnixNano(), kept: true}
	}
}

func (f *findings) list() []Violation {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Violation
	for _, k := range f.keys {
		v := f.first[k]
		if n := f.n[k]; n > 1 {
			v.Detail += fmt.Sprintf(" (x%d)", n)
		}
		out = append(out, v)
	}
	return out
}

// creationVerdict checks a burst of room creations from one address: at
// most the burst and what refilled meanwhile may succeed, the rest must be
// refused (429). It returns the evidence of a violation, or "".
func creationVerdict(sent, ok int, took time.Duration, perMinute int) string {
	allowed := createBurst(perMinute) + int(took.Seconds()*float64(perMinute)/60) + 1
	if ok <= allowed {
		return ""
	}
	return fmt.Sprintf("%d of %d POST /api/room/generate from %s answered 200 in %.2f s, want at most %d (--creates-per-minute %d: a burst of %d and what refilled), then 429",
		ok, sent, attackerIP, took.Seconds(), allowed, perMinute, createBurst(perMinute))
}

// connVerdict checks a flood of idle connections from one address: at
// most perAddr may be held open. It returns the evidence of a violation,
// or "".
func connVerdict(opened, held, perAddr int, router string) string {
	if held <= perAddr {
		return ""
	}
	return fmt.Sprintf("%d of %d idle connections from %s to %s held open, want at most %d (--max-conns-per-addr), then 503",
		held, opened, attackerIP, router, perAddr)
}

// errClass names a transport error briefly, without addresses.
func errClass(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return truncate(err.Error(), 60)
}

// rawRequest sends a request with its path exactly as given (net/http
// cleans paths) over a new connection, and returns the status and the
// start of the body.
func rawRequest(ctx context.Context, d *net.Dialer, addr, method, path string) (int, string, error) {
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(hostileAnswerWait))
	req := method + " " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		return 0, "", err
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 200))
	return res.StatusCode, strings.TrimSpace(string(b)), nil
}

// hostile is one hostile-clients fault under way.
type hostile struct {
	front, flooded *routerProc // frames, paths, floods; the connection flood
	rooms          []string    // the attackers' own rooms
	victim         string      // a room of the usual clients
	perMinute      int         // the routers' --creates-per-minute; 0: none
	perAddr        int         // the routers' --max-conns-per-addr; 0: none
	seq            int         // the fault's number in the phase: unique names

	until time.Time
	dial  *net.Dialer
	hc    *http.Client
	ws    *websocket.Dialer

	t     tally
	found findings
	notes []string // written by start and wait only
	joins atomic.Int64
	// How long each flood took: written by its goroutine, read after
	// wg.Wait.
	missingTook, generateTook time.Duration
	wg                        sync.WaitGroup
}

// hostileClients builds the fault: attacks through one router, the
// connection flood at the other.
func (p *phaseRun) hostileClients() nemesis {
	i := p.rng.IntN(len(p.cl.routers))
	d := &net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(attackerIP)}}
	seq := len(p.faults) + 1
	h := &hostile{
		front:     p.cl.routers[i],
		flooded:   p.cl.routers[(i+1)%len(p.cl.routers)],
		rooms:     []string{fmt.Sprintf("hostile-%d-a", seq), fmt.Sprintf("hostile-%d-b", seq)},
		victim:    p.w.rooms[p.rng.IntN(len(p.w.rooms))].Name,
		perMinute: p.cl.createsPerMinute,
		perAddr:   p.cl.perAddr,
		seq:       seq,
		dial:      d,
		hc: &http.Client{Timeout: 5 * time.Second,
			Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: hostileParallel}},
		ws: &websocket.Dialer{NetDialContext: d.DialContext, HandshakeTimeout: 5 * time.Second},
	}
	return nemesis{
		target: h.front.name + "+" + h.flooded.name,
		hold:   2 * p.hb,
		inject: func(ctx context.Context) error { h.start(ctx, 2*p.hb); return nil },
		wait:   h.wait,
		found:  h.found.list,
	}
}

// start creates the attackers' rooms and starts every attack; each ends on
// its own by the end of the hold (a flood once it has been answered).
func (h *hostile) start(ctx context.Context, hold time.Duration) {
	h.until = time.Now().Add(hold)
	h.notes = append(h.notes, fmt.Sprintf("attackers from %s via %s, in rooms of their own: %s",
		attackerIP, h.front.name, strings.Join(h.rooms, ", ")))
	var rooms []string
	for _, r := range h.rooms {
		if err := h.createRoom(ctx, r); err != nil {
			h.notes = append(h.notes, fmt.Sprintf("create %s: %v", r, err))
			continue
		}
		rooms = append(rooms, r)
	}
	token := ""
	if len(rooms) > 0 {
		var err error
		if token, err = grantToken(ctx, h.hc, h.front.addr); err != nil {
			h.notes = append(h.notes, "grant: "+err.Error())
			rooms = nil
		}
	}
	for i, r := range rooms {
		h.goRun(func() { h.frames(ctx, r, token, i) })
	}
	h.goRun(func() { h.paths(ctx) })
	h.goRun(func() { h.missing(ctx) })
	h.goRun(func() { h.creations(ctx) })
	h.goRun(func() { h.connFlood(ctx) })
}

func (h *hostile) goRun(f func()) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		f()
	}()
}

// wait waits for every attack (each closed its connections) and returns
// what the attackers did and how the cluster answered.
func (h *hostile) wait() []string {
	h.wg.Wait()
	h.hc.CloseIdleConnections()
	notes := h.notes
	var frames []string
	for _, fr := range hostileFrames() {
		if s := h.t.summary(fr.name); s != "" {
			frames = append(frames, fr.name+": "+s)
		}
	}
	if s := h.t.summary("join"); s != "" {
		frames = append(frames, "failed joins: "+s)
	}
	if len(frames) > 0 {
		notes = append(notes, fmt.Sprintf("frames (%d joins): %s", h.joins.Load(), strings.Join(frames, "; ")))
	}
	for _, part := range []string{"paths", "missing", "generate", "connections"} {
		if s := h.t.summary(part); s != "" {
			notes = append(notes, h.partNote(part)+": "+s)
		}
	}
	return notes
}

// partNote says what a part of the attack was.
func (h *hostile) partNote(part string) string {
	switch part {
	case "paths":
		return fmt.Sprintf("%d traversal paths towards %s", len(traversalPaths(h.rooms[0], h.victim)), h.victim)
	case "missing":
		return fmt.Sprintf("GET of %d rooms that do not exist in %.2f s", hostileMissing, h.missingTook.Seconds())
	case "generate":
		limit := "the routers have no --creates-per-minute"
		if h.perMinute > 0 {
			limit = fmt.Sprintf("--creates-per-minute %d: burst %d", h.perMinute, createBurst(h.perMinute))
		}
		return fmt.Sprintf("%d POST /api/room/generate in %.2f s (%s)", h.generateCount(), h.generateTook.Seconds(), limit)
	case "connections":
		if h.perAddr == 0 {
			return fmt.Sprintf("%d idle connections to %s (the routers have no --max-conns-per-addr)", h.connCount(), h.flooded.name)
		}
		return fmt.Sprintf("%d idle connections to %s (--max-conns-per-addr %d)", h.connCount(), h.flooded.name, h.perAddr)
	}
	return part
}

func (h *hostile) createRoom(ctx context.Context, name string) error {
	body := []byte(`{"name":"` + name + `","title":"attackers","isTemporary":true}`)
	return waitFor(ctx, 10*time.Second, func(ctx context.Context) error {
		return createAt(ctx, h.hc, h.front.addr, body)
	})
}

// frames joins room properly and sends the malformed frames in turn, from
// the first'th on, until the hold ends; it joins again after each close.
func (h *hostile) frames(ctx context.Context, room, token string, first int) {
	frames := hostileFrames()
	var conn *websocket.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for k := first; ctx.Err() == nil && time.Now().Before(h.until); k++ {
		if conn == nil {
			var err error
			if conn, err = h.join(ctx, room, token); err != nil {
				h.t.add("join", err.Error())
				sleepCtx(ctx, 200*time.Millisecond)
				continue
			}
		}
		fr := frames[k%len(frames)]
		answer, open := sendHostileFrame(conn, fr, fmt.Sprintf("hostile:%d:%d", h.seq, k))
		h.t.add(fr.name, answer)
		if want := fr.expected(); answer != want && !(fr.resetOK && answer == "closed 1006") {
			h.found.add("frame "+fr.name+" "+answer, room, fmt.Sprintf("frame %q (%d bytes) from %s in room %s via %s: %s, want %s",
				fr.name, len(fr.data), attackerIP, room, h.front.name, answer, want))
		}
		if !open {
			conn.Close()
			conn = nil
		}
		sleepCtx(ctx, hostilePause)
	}
}

// join dials room as the web client does and waits for the join's "you".
func (h *hostile) join(ctx context.Context, room, token string) (*websocket.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, res, err := h.ws.DialContext(dctx, "ws://"+h.front.addr+"/api/room/"+room, nil)
	if err != nil {
		if res != nil {
			return nil, fmt.Errorf("upgrade HTTP %d", res.StatusCode)
		}
		return nil, errors.New("dial: " + errClass(err))
	}
	h.joins.Add(1)
	conn.SetWriteDeadline(time.Now().Add(hostileAnswerWait))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"action":"auth","token":"`+token+`"}`)); err != nil {
		conn.Close()
		return nil, errors.New("auth: " + errClass(err))
	}
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			conn.Close()
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return nil, fmt.Errorf("closed %d before the join", ce.Code)
			}
			return nil, errors.New("before the join: " + errClass(err))
		}
		var f frame
		if json.Unmarshal(data, &f) == nil && f.Action == "you" {
			return conn, nil
		}
	}
}

// sendHostileFrame sends fr and reads the answer: the close code, or for a
// frame that must be dropped whether the sender's own chat (text echo)
// still comes back. open: the connection may be used again.
func sendHostileFrame(conn *websocket.Conn, fr hostileFrame, echo string) (answer string, open bool) {
	conn.SetWriteDeadline(time.Now().Add(hostileAnswerWait))
	// A write may fail once the far end has closed; its close frame, read
	// below, is the answer.
	werr := conn.WriteMessage(fr.kind, fr.data)
	if fr.want == 0 && werr == nil {
		werr = conn.WriteMessage(websocket.TextMessage, []byte(`{"action":"req","request":{"type":11,"text":"`+echo+`"}}`))
	}
	conn.SetReadDeadline(time.Now().Add(hostileAnswerWait))
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			var ne net.Error
			switch {
			case errors.As(err, &ce):
				return "closed " + strconv.Itoa(ce.Code), false
			case errors.As(err, &ne) && ne.Timeout() && fr.want == 0:
				return "kept, but its own chat not back", false
			case errors.As(err, &ne) && ne.Timeout():
				return fmt.Sprintf("still open %v later", hostileAnswerWait), false
			case werr != nil:
				return "cut without a close frame (write: " + errClass(werr) + ", read: " + errClass(err) + ")", false
			}
			return "cut without a close frame (" + errClass(err) + ")", false
		}
		var f frame
		if fr.want == 0 && json.Unmarshal(data, &f) == nil && f.Action == "chat" && f.Text == echo {
			return answerKept, true
		}
	}
}

// paths sends each traversal path once over raw TCP: each must get 400.
func (h *hostile) paths(ctx context.Context) {
	for _, mp := range traversalPaths(h.rooms[0], h.victim) {
		code, body, err := rawRequest(ctx, h.dial, h.front.addr, mp[0], mp[1])
		answer := "HTTP " + strconv.Itoa(code)
		if err != nil {
			answer = "no answer: " + errClass(err)
		}
		h.t.add("paths", answer)
		if code != 400 {
			if body != "" {
				answer += " " + strconv.Quote(truncate(body, 120))
			}
			h.found.add("path "+mp[0]+" "+mp[1], h.victim, fmt.Sprintf("%s %s from %s via %s: %s, want 400", mp[0], mp[1], attackerIP, h.front.name, answer))
		}
	}
}

// flood sends n requests, hostileParallel at a time, and returns how long
// it took; do makes request i and returns its answer.
func flood(ctx context.Context, n int, do func(ctx context.Context, i int) string, record func(i int, answer string)) time.Duration {
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range hostileParallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				record(i, do(ctx, i))
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// request makes one request with the attackers' client; its answer is
// "HTTP <status>" or "no answer: <why>".
func (h *hostile) request(ctx context.Context, method, path string) (string, string) {
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+h.front.addr+path, nil)
	res, err := h.hc.Do(req)
	if err != nil {
		return "no answer: " + errClass(err), ""
	}
	b, _ := io.ReadAll(io.LimitReader(res.Body, 200))
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return "HTTP " + strconv.Itoa(res.StatusCode), strings.TrimSpace(string(b))
}

// missing asks for rooms that do not exist: each must get 404.
func (h *hostile) missing(ctx context.Context) {
	took := flood(ctx, hostileMissing, func(ctx context.Context, i int) string {
		path := fmt.Sprintf("/api/room/hostile-%d-missing-%d", h.seq, i)
		answer, body := h.request(ctx, "GET", path)
		if answer != "HTTP 404" {
			h.found.add("missing "+answer, "", fmt.Sprintf("GET %s (a room that does not exist) from %s via %s: %s %q, want 404",
				path, attackerIP, h.front.name, answer, truncate(body, 120)))
		}
		return answer
	}, func(_ int, answer string) { h.t.add("missing", answer) })
	h.missingTook = took
}

func (h *hostile) generateCount() int {
	if h.perMinute == 0 {
		return 60
	}
	return 2 * createBurst(h.perMinute)
}

// creations creates rooms in a burst: past the router's burst, each must
// get 429.
func (h *hostile) creations(ctx context.Context) {
	n := h.generateCount()
	var ok atomic.Int64
	took := flood(ctx, n, func(ctx context.Context, i int) string {
		answer, body := h.request(ctx, "POST", "/api/room/generate")
		switch answer {
		case "HTTP 200":
			ok.Add(1)
		case "HTTP 429":
		default:
			h.found.add("generate "+answer, "", fmt.Sprintf("POST /api/room/generate from %s via %s: %s %q, want 200 or 429",
				attackerIP, h.front.name, answer, truncate(body, 120)))
		}
		return answer
	}, func(_ int, answer string) { h.t.add("generate", answer) })
	h.generateTook = took
	if h.perMinute > 0 {
		if v := creationVerdict(n, int(ok.Load()), took, h.perMinute); v != "" {
			h.found.add("generate accepted", "", v)
		}
	}
}

// answerHeld: an idle connection the router kept open.
const answerHeld = "held open"

// idleAnswer reads what the router says to an idle connection before its
// read deadline: its status line, or answerHeld.
func idleAnswer(c net.Conn) string {
	buf := make([]byte, 128)
	k, err := io.ReadAtLeast(c, buf, 12)
	var ne net.Error
	switch {
	case k > 0:
		line, _, _ := strings.Cut(string(buf[:k]), "\r\n")
		if code, ok := strings.CutPrefix(line, "HTTP/1.1 "); ok {
			return "HTTP " + code[:min(3, len(code))]
		}
		return "answered " + strconv.Quote(truncate(line, 40))
	case errors.As(err, &ne) && ne.Timeout():
		return answerHeld
	}
	return "closed without an answer (" + errClass(err) + ")"
}

func (h *hostile) connCount() int {
	if h.perAddr == 0 {
		return 500 + hostileConnExtra
	}
	return h.perAddr + hostileConnExtra
}

// connFlood opens idle connections to the flooded router past its
// per-address bound, holds those it keeps until the hold ends, and closes
// them all.
func (h *hostile) connFlood(ctx context.Context) {
	n := h.connCount()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := h.dial.DialContext(ctx, "tcp", h.flooded.addr)
		if err != nil {
			h.t.add("connections", "dial: "+errClass(err))
			continue
		}
		conns = append(conns, c)
	}
	// A refused connection is answered at once; a kept one hears nothing.
	// Each is read at the same time (a read past the deadline would not
	// look at what arrived).
	answers := make([]string, len(conns))
	deadline := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(deadline)
			answers[i] = idleAnswer(c)
		}()
	}
	wg.Wait()
	held := 0
	for _, a := range answers {
		if a == answerHeld {
			held++
		}
		h.t.add("connections", a)
	}
	if h.perAddr > 0 {
		if v := connVerdict(len(conns), held, h.perAddr, h.flooded.name); v != "" {
			h.found.add("connections", "", v)
		}
	}
	sleepCtx(ctx, time.Until(h.until))
}
