package bench

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomlb/roomlb/contract"
)

// hotWorld is the setup of figures 1 and 2: a monolith with no proxy for the
// direct peer, and a second monolith of the same kind behind one sidecar,
// which the sidecar, haproxy and roomlb peers share.
type hotWorld struct {
	app, reg        *redisServer
	direct, behind  *monolith
	sidecar, router *roomlbProc
	haproxy         *roomlbProc // nil without haproxy
	haproxyErr      error       // why there is no haproxy
	token           string
}

// peer is one way of reaching the monolith.
type peer struct {
	name   string
	base   string      // ws://host:port of the client side; "" for direct
	header http.Header // what the client sends beyond the handshake
	pid    int         // the proxy process whose CPU is measured; 0: none
}

// hotWorld returns the run's hot-path setup, started on first use and
// stopped at the end of the run.
func (e *env) hotWorld(ctx context.Context, f *Figure) (*hotWorld, error) {
	if e.hot == nil {
		e.hot = &hotWorld{}
		e.hotErr = e.hot.start(e)
	}
	if e.hotErr != nil {
		return nil, e.hotErr
	}
	if e.hot.haproxyErr != nil {
		f.note("haproxy peer left out: %v", e.hot.haproxyErr)
	}
	return e.hot, nil
}

func (w *hotWorld) start(e *env) error {
	var err error
	if w.app, err = startRedis(e.dir, "hot-redis-app"); err != nil {
		return err
	}
	if w.reg, err = startRedis(e.dir, "hot-redis-registry"); err != nil {
		return err
	}
	if w.direct, err = startMonolith(e.opts.Monolith, w.app, nil); err != nil {
		return err
	}
	if w.behind, err = startMonolith(e.opts.Monolith, w.app, nil); err != nil {
		return err
	}
	if w.sidecar, err = startSidecar(e, "hot-sidecar", "bench-node", w.reg.url, w.behind); err != nil {
		return err
	}
	if w.router, err = startRouter(e, "hot-router", w.reg.url); err != nil {
		return err
	}
	w.haproxy, err = startHAProxy(e, "hot-haproxy", w.sidecar.addr)
	if err != nil {
		w.haproxy, w.haproxyErr = nil, err
	}
	if w.token, err = grant(w.direct.httpAddr); err != nil {
		return err
	}
	return nil
}

// peers are the ways to the monolith; the sidecar peer sends the secret
// that a router or HAProxy would add.
func (w *hotWorld) peers(secret string) []peer {
	ps := []peer{
		{name: "direct"},
		{name: "sidecar", base: "ws://" + w.sidecar.addr, header: http.Header{contract.HeaderSecret: {secret}}, pid: w.sidecar.pid()},
	}
	if w.haproxy != nil {
		ps = append(ps, peer{name: "haproxy", base: "ws://" + w.haproxy.addr, pid: w.haproxy.pid()})
	}
	return append(ps, peer{name: "roomlb", base: "ws://" + w.router.addr, pid: w.router.pid()})
}

func (w *hotWorld) close() {
	for _, p := range []*roomlbProc{w.haproxy, w.router, w.sidecar} {
		if p != nil {
			p.kill()
		}
	}
	for _, m := range []*monolith{w.direct, w.behind} {
		if m != nil {
			m.close()
		}
	}
	for _, r := range []*redisServer{w.app, w.reg} {
		if r != nil {
			r.close()
		}
	}
}

// latencyRounds is how many turns figure 1 takes of the peers.
const latencyRounds = 3

// figLatency is figure 1: the latency a chat takes to come back to its
// sender as the room's broadcast, at a paced rate well below saturation.
func (e *env) figLatency(ctx context.Context, f *Figure) error {
	sc := e.scale
	f.Name = "added latency per message (paced)"
	f.Measures = fmt.Sprintf("%d rooms of %d clients; one sender per room; %.0f chats/s in all for %v, in %d rounds that take the peers in turn; "+
		"time from a chat's send to its broadcast's arrival at the sender", sc.LatencyRooms, sc.LatencyRoomSize, sc.LatencyRate, sc.Window, latencyRounds)
	w, err := e.hotWorld(ctx, f)
	if err != nil {
		return err
	}
	peers := w.peers(e.secret)
	lats := map[string][]time.Duration{}
	for _, p := range peers {
		if err := addRooms(ctx, w.app.rdb, roomNames("f1-"+p.name, sc.LatencyRooms)); err != nil {
			return err
		}
	}
	// The machine's load drifts over a figure: each peer is measured in
	// every round, and its samples pooled.
	for range latencyRounds {
		for _, p := range peers {
			rooms := roomNames("f1-"+p.name, sc.LatencyRooms)
			window := sc.Window / latencyRounds
			var lat []time.Duration
			if p.name == "direct" {
				lat, err = e.latencyDirect(ctx, w.direct, w.token, rooms, window)
			} else {
				lat, err = e.latencyWS(ctx, p, w.token, rooms, window)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			lats[p.name] = append(lats[p.name], lat...)
		}
	}
	res := map[string][2]float64{}
	for _, p := range peers {
		lat := lats[p.name]
		if len(lat) == 0 {
			return fmt.Errorf("%s: no message came back", p.name)
		}
		res[p.name] = [2]float64{percentileMS(lat, 50), percentileMS(lat, 99)}
		e.logf("figure 1: %s p50 %.3f ms p99 %.3f ms (%d samples)", p.name, res[p.name][0], res[p.name][1], len(lat))
	}
	for _, q := range []struct {
		m string
		i int
	}{{"p50", 0}, {"p99", 1}} {
		f.add("direct", q.m, res["direct"][q.i], "ms")
		for _, name := range []string{"sidecar", "haproxy", "roomlb"} {
			if v, ok := res[name]; ok {
				f.addRatio(name, q.m, v[q.i], "ms", "direct/"+q.m)
			}
		}
	}
	// The added latency of each hop: a proxy over the sidecar alone.
	for _, q := range []struct {
		m string
		i int
	}{{"p50", 0}, {"p99", 1}} {
		f.add("sidecar", "added "+q.m, res["sidecar"][q.i]-res["direct"][q.i], "ms")
		if v, ok := res["haproxy"]; ok {
			f.add("haproxy hop", "added "+q.m, v[q.i]-res["sidecar"][q.i], "ms")
			f.addRatio("router hop", "added "+q.m, res["roomlb"][q.i]-res["sidecar"][q.i], "ms", "haproxy hop/added "+q.m)
		} else {
			f.add("router hop", "added "+q.m, res["roomlb"][q.i]-res["sidecar"][q.i], "ms")
		}
	}
	ratio := math.NaN()
	if v, ok := res["haproxy"]; ok {
		ratio = res["roomlb"][1] / v[1]
	}
	f.goal("roomlb p99 / haproxy p99 (both in front of the same sidecar)", ratio, 1.0, "x", true)
	f.note("direct: the load generator speaks the balancer protocol to the monolith itself, one link for all clients; " +
		"that is what a proxy of zero cost would cost (the monolith serves no browser WebSockets). " +
		"sidecar: clients straight to the sidecar; haproxy: clients -> haproxy -> the same sidecar; roomlb: clients -> router -> the same sidecar.")
	f.note("an 'added' row of a hop can be negative or noisy: it is a difference of two percentiles on a shared, noisy machine.")
	return nil
}

// joinRooms connects size clients to each room through p and waits until
// each has joined.
func (e *env) joinRooms(ctx context.Context, p peer, token string, rooms []string, size int) ([][]*wsClient, error) {
	d := dialer(nil)
	out := make([][]*wsClient, len(rooms))
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, room := range rooms {
		out[i] = make([]*wsClient, size)
		for k := range size {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := dialClient(ctx, d, p.base, room, token, p.header)
				if err == nil {
					if err = c.waitAction("you", 15*time.Second); err != nil {
						c.close()
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					firstErr = cmpErr(firstErr, err)
					return
				}
				out[i][k] = c
			}()
		}
	}
	wg.Wait()
	if firstErr != nil {
		closeAll(out)
		return nil, firstErr
	}
	return out, nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func closeAll(cs [][]*wsClient) {
	for _, row := range cs {
		for _, c := range row {
			if c != nil {
				c.close()
			}
		}
	}
}

// latencies collects samples taken after the warmup.
type latencies struct {
	mu      sync.Mutex
	d       []time.Duration
	from    time.Duration // since base: samples sent before are dropped
	deliver atomic.Int64  // broadcast frames delivered to clients
}

func (l *latencies) add(sent, now time.Duration) {
	if sent < l.from {
		return
	}
	l.mu.Lock()
	l.d = append(l.d, now-sent)
	l.mu.Unlock()
}

// pace calls send(i) for senders 0..n-1 in turn at rate per second, for
// warmup+window.
func (e *env) pace(ctx context.Context, n int, rate float64, window time.Duration, send func(i int, text []byte) error) error {
	sc := e.scale
	interval := time.Duration(float64(time.Second) / rate)
	t := time.NewTicker(interval)
	defer t.Stop()
	end := time.Now().Add(sc.Warmup + window)
	var buf []byte
	for k := 0; time.Now().Before(end); k++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		i := k % n
		buf = stamp(buf[:0], i, e.base)
		if err := send(i, buf); err != nil {
			return err
		}
	}
	time.Sleep(300 * time.Millisecond) // the last answers
	return nil
}

func (e *env) latencyWS(ctx context.Context, p peer, token string, rooms []string, window time.Duration) ([]time.Duration, error) {
	sc := e.scale
	clients, err := e.joinRooms(ctx, p, token, rooms, sc.LatencyRoomSize)
	if err != nil {
		return nil, err
	}
	lat := &latencies{from: time.Since(e.base) + sc.Warmup}
	var wg sync.WaitGroup
	for i, row := range clients {
		for k, c := range row {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					fr, err := c.read()
					if err != nil {
						return
					}
					if s, sent, ok := parseStamp(fr); ok {
						lat.deliver.Add(1)
						if k == 0 && s == i {
							lat.add(sent, time.Since(e.base))
						}
					}
				}
			}()
		}
	}
	err = e.pace(ctx, len(rooms), sc.LatencyRate, window, func(i int, text []byte) error { return clients[i][0].chat(text) })
	closeAll(clients)
	wg.Wait()
	return lat.d, err
}

func (e *env) latencyDirect(ctx context.Context, m *monolith, token string, rooms []string, window time.Duration) ([]time.Duration, error) {
	sc := e.scale
	l, err := dialBalancer(ctx, dialer(nil), m.balancerAddr)
	if err != nil {
		return nil, err
	}
	defer l.close()
	joins := map[string]string{}
	for i, room := range rooms {
		for k := range sc.LatencyRoomSize {
			joins[directClient(i, k)] = room
		}
	}
	if err := l.joinAll(joins, token, 15*time.Second); err != nil {
		return nil, err
	}
	lat := &latencies{from: time.Since(e.base) + sc.Warmup}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := l.read()
			if err != nil {
				return
			}
			if _, sent, ok := parseStamp(msg.RoomMsg.Payload); ok && msg.RoomMsg.ClientID == "" {
				// One frame per broadcast: the zero-cost proxy hands it to
				// every client of the room.
				lat.deliver.Add(int64(sc.LatencyRoomSize))
				lat.add(sent, time.Since(e.base))
			}
		}
	}()
	err = e.pace(ctx, len(rooms), sc.LatencyRate, window, func(i int, text []byte) error { return l.chat(directClient(i, 0), text) })
	l.close()
	<-done
	return lat.d, err
}

func directClient(room, k int) string { return "d" + strconv.Itoa(room) + "-" + strconv.Itoa(k) }

// figThroughput is figure 2: chats per second at saturation, per core of
// the proxy process.
func (e *env) figThroughput(ctx context.Context, f *Figure) error {
	sc := e.scale
	f.Name = "messages per second at saturation, per proxy core"
	f.Measures = fmt.Sprintf("%d clients, each alone in its room, each keeping %d chats in flight, for %v; "+
		"a message is one chat and its broadcast back (two frames through the proxy); per core = msgs/s / proxy CPU s per s (its threads' run time, /proc/<pid>/task/*/schedstat)",
		sc.SatClients, sc.SatInFlight, sc.Window)
	w, err := e.hotWorld(ctx, f)
	if err != nil {
		return err
	}
	perCore := map[string]float64{}
	for _, p := range w.peers(e.secret) {
		rooms := roomNames("f2-"+p.name, sc.SatClients)
		if err := addRooms(ctx, w.app.rdb, rooms); err != nil {
			return err
		}
		var rate, cpu float64
		if p.name == "direct" {
			rate, err = e.saturateDirect(ctx, w.direct, w.token, rooms)
		} else {
			rate, cpu, err = e.saturateWS(ctx, p, w.token, rooms)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		if rate == 0 {
			return fmt.Errorf("%s: no message came back", p.name)
		}
		if p.name == "direct" {
			f.add("direct", "msgs/s", rate, "msg/s")
		} else {
			f.addRatio(p.name, "msgs/s", rate, "msg/s", "direct/msgs/s")
			perCore[p.name] = rate / math.Max(cpu, 1e-3)
			e.logf("figure 2: %s %.0f msg/s, proxy %.2f cores", p.name, rate, cpu)
			f.add(p.name, "proxy cores busy", cpu, "cores")
		}
	}
	f.add("sidecar", "msgs/s per sidecar core", perCore["sidecar"], "msg/s/core")
	ratio := math.NaN()
	if v, ok := perCore["haproxy"]; ok {
		f.add("haproxy", "msgs/s per haproxy core", v, "msg/s/core")
		f.addRatio("roomlb", "msgs/s per router core", perCore["roomlb"], "msg/s/core", "haproxy/msgs/s per haproxy core")
		ratio = perCore["roomlb"] / v
	} else {
		f.add("roomlb", "msgs/s per router core", perCore["roomlb"], "msg/s/core")
	}
	f.goal("router msgs/s per core / haproxy's", ratio, 1.0, "x", false)
	f.note("the saturated resource is the 2-core machine itself (load generator, monolith, sidecar and proxy share it): " +
		"msgs/s compares end-to-end throughput, per core compares the proxy's efficiency, which is what the goal is about.")
	return nil
}

// saturateWS runs the closed loop through p; it returns msgs/s and the
// proxy's CPU (cores busy) over the window.
func (e *env) saturateWS(ctx context.Context, p peer, token string, rooms []string) (rate, cores float64, err error) {
	sc := e.scale
	clients, err := e.joinRooms(ctx, p, token, rooms, 1)
	if err != nil {
		return 0, 0, err
	}
	var count atomic.Int64
	var counting atomic.Bool
	var wg sync.WaitGroup
	for i, row := range clients {
		c := row[0]
		var buf []byte
		for range sc.SatInFlight {
			buf = stamp(buf[:0], i, e.base)
			if err := c.chat(buf); err != nil {
				closeAll(clients)
				return 0, 0, err
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for {
				fr, err := c.read()
				if err != nil {
					return
				}
				if _, _, ok := parseStamp(fr); !ok {
					continue
				}
				if counting.Load() {
					count.Add(1)
				}
				buf = stamp(buf[:0], i, e.base)
				if c.chat(buf) != nil {
					return
				}
			}
		}()
	}
	sleep(ctx, sc.Warmup)
	m := startCPU(p.pid)
	counting.Store(true)
	start := time.Now()
	sleep(ctx, sc.Window)
	counting.Store(false)
	n, el := count.Load(), time.Since(start).Seconds()
	cpu, wall := m.stop()
	closeAll(clients)
	wg.Wait()
	return float64(n) / el, cpu / wall, ctx.Err()
}

func (e *env) saturateDirect(ctx context.Context, m *monolith, token string, rooms []string) (float64, error) {
	sc := e.scale
	l, err := dialBalancer(ctx, dialer(nil), m.balancerAddr)
	if err != nil {
		return 0, err
	}
	defer l.close()
	joins := map[string]string{}
	for i, room := range rooms {
		joins[directClient(i, 0)] = room
	}
	if err := l.joinAll(joins, token, 15*time.Second); err != nil {
		return 0, err
	}
	var count atomic.Int64
	var counting atomic.Bool
	var buf []byte
	for i := range rooms {
		for range sc.SatInFlight {
			buf = stamp(buf[:0], i, e.base)
			if err := l.chat(directClient(i, 0), buf); err != nil {
				return 0, err
			}
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var buf []byte
		for {
			msg, err := l.read()
			if err != nil {
				return
			}
			s, _, ok := parseStamp(msg.RoomMsg.Payload)
			if !ok || msg.RoomMsg.ClientID != "" {
				continue
			}
			if counting.Load() {
				count.Add(1)
			}
			buf = stamp(buf[:0], s, e.base)
			if l.chat(directClient(s, 0), buf) != nil {
				return
			}
		}
	}()
	sleep(ctx, sc.Warmup)
	counting.Store(true)
	start := time.Now()
	sleep(ctx, sc.Window)
	counting.Store(false)
	n, el := count.Load(), time.Since(start).Seconds()
	l.close()
	<-done
	return float64(n) / el, ctx.Err()
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
