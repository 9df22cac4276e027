package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomlb/roomlb/contract"
)

// metric reads one sample of a Prometheus text endpoint: the line that
// starts with series ("name" or `name{label="v"}`).
func metric(url, series string) (float64, error) {
	res, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("bench: no %s at %s", series, url)
}

const sidecarFramesIn = `roomlb_sidecar_messages_total{direction="in"}`

// fanoutMonolith starts a monolith whose CPU is its own: the Node one, or
// the fake in a worker process.
func (e *env) fanoutMonolith(app *redisServer, name string) (*monolith, func(), error) {
	if e.opts.FanoutMonolith == MonolithNode {
		m, err := startMonolith(MonolithNode, app, nil)
		if err != nil {
			return nil, nil, err
		}
		return m, m.close, nil
	}
	w, err := e.startWorker(name)
	if err != nil {
		return nil, nil, err
	}
	resp, err := w.call(workerReq{Op: "monolith", Redis: app.url}, 15*time.Second)
	if err != nil {
		w.stop()
		return nil, nil, err
	}
	m := &monolith{kind: MonolithFake, balancerAddr: resp.Balancer, httpAddr: resp.HTTP, rdb: app.rdb}
	return m, w.stop, nil
}

// figFanout is figure 3: the monolith's CPU per broadcast delivery when
// the sidecar fans broadcasts out, against the monolith sending to every
// client itself.
func (e *env) figFanout(ctx context.Context, f *Figure) error {
	sc := e.scale
	f.Name = "monolith CPU per 1,000 broadcast deliveries, rooms of " + strconv.Itoa(sc.FanoutRoomSize)
	f.Measures = fmt.Sprintf("%d rooms of %d clients, %.0f chats/s in all (each broadcast to the room) for %v, after a warm-up of %d chats; "+
		"monolith process CPU (/proc/<pid>/task/*/schedstat) over the deliveries the clients received; %s monolith",
		sc.FanoutRooms, sc.FanoutRoomSize, sc.FanoutRate, sc.Window, fanoutWarmChats(sc), e.opts.FanoutMonolith)
	app, err := startRedis(e.dir, "f3-redis-app")
	if err != nil {
		return err
	}
	defer app.close()
	reg, err := startRedis(e.dir, "f3-redis-registry")
	if err != nil {
		return err
	}
	defer reg.close()
	direct, stopDirect, err := e.fanoutMonolith(app, "f3-monolith-direct")
	if err != nil {
		return err
	}
	defer stopDirect()
	behind, stopBehind, err := e.fanoutMonolith(app, "f3-monolith-sidecar")
	if err != nil {
		return err
	}
	defer stopBehind()
	sidecar, err := startSidecar(e, "f3-sidecar", "bench-node", reg.url, behind)
	if err != nil {
		return err
	}
	defer sidecar.kill()
	token, err := grant(direct.httpAddr)
	if err != nil {
		return err
	}
	for _, m := range []*monolith{direct, behind} {
		if m.pid() == 0 {
			return fmt.Errorf("bench: cannot find the monolith's process")
		}
	}
	res := map[string]fanoutResult{}
	busyMedian := fmt.Sprintf("monolith CPU per 1k deliveries, over idle, median of %d slices", fanoutSlices(sc))

	// Direct: every client has a balancer link of its own (its own
	// balancer id), so the monolith sends each delivery itself, as it does
	// for browsers connected to it.
	rooms := roomNames("f3-direct", sc.FanoutRooms)
	if err := addRooms(ctx, app.rdb, rooms); err != nil {
		return err
	}
	var links []*balancerLink
	defer func() {
		for _, l := range links {
			l.close()
		}
	}()
	d := dialer(nil)
	for i, room := range rooms {
		for k := range sc.FanoutRoomSize {
			l, err := dialBalancer(ctx, d, direct.balancerAddr)
			if err != nil {
				return err
			}
			links = append(links, l)
			if err := l.joinOne(room, directClient(i, k), token, 15*time.Second); err != nil {
				return err
			}
		}
	}
	var delivered atomic.Int64
	var wg sync.WaitGroup
	for _, l := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := l.read()
				if err != nil {
					return
				}
				if _, _, ok := parseStamp(m.RoomMsg.Payload); ok {
					delivered.Add(1)
				}
			}
		}()
	}
	senders := make([]*balancerLink, len(rooms))
	for i := range rooms {
		senders[i] = links[i*sc.FanoutRoomSize]
	}
	r, err := e.measureFanout(ctx, direct.pid(), &delivered, func() float64 { return float64(delivered.Load()) },
		func(i int, text []byte) error { return senders[i].chat(directClient(i, 0), text) }, len(rooms))
	for _, l := range links {
		l.close()
	}
	wg.Wait()
	if err != nil {
		return fmt.Errorf("direct: %w", err)
	}
	res["direct"] = r

	// Sidecar: the clients are the sidecar's; the monolith sends one
	// room_msg per broadcast.
	rooms = roomNames("f3-sidecar", sc.FanoutRooms)
	if err := addRooms(ctx, app.rdb, rooms); err != nil {
		return err
	}
	p := peer{name: "sidecar", base: "ws://" + sidecar.addr, header: http.Header{contract.HeaderSecret: {e.secret}}}
	clients, err := e.joinRooms(ctx, p, token, rooms, sc.FanoutRoomSize)
	if err != nil {
		return err
	}
	delivered.Store(0)
	for _, row := range clients {
		for _, c := range row {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					fr, err := c.read()
					if err != nil {
						return
					}
					if _, _, ok := parseStamp(fr); ok {
						delivered.Add(1)
					}
				}
			}()
		}
	}
	metrics := "http://" + sidecar.addr + "/metrics"
	r, err = e.measureFanout(ctx, behind.pid(), &delivered, func() float64 { v, _ := metric(metrics, sidecarFramesIn); return v },
		func(i int, text []byte) error { return clients[i][0].chat(text) }, len(rooms))
	closeAll(clients)
	wg.Wait()
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	res["sidecar"] = r

	for _, name := range []string{"direct", "sidecar"} {
		v := res[name]
		if v.deliveries == 0 {
			return fmt.Errorf("%s: no deliveries", name)
		}
		base := func(m string) string {
			if name == "direct" {
				return ""
			}
			return "direct/" + m
		}
		f.addRatio(name, "deliveries/s", v.deliveries/sc.Window.Seconds(), "1/s", base("deliveries/s"))
		f.addRatio(name, "monolith frames per 1k deliveries", v.frames/v.deliveries*1000, "frames", base("monolith frames per 1k deliveries"))
		f.addRatio(name, "monolith CPU per 1k deliveries", v.cpu/v.deliveries*1e6, "ms", base("monolith CPU per 1k deliveries"))
		f.add(name, "monolith CPU when idle", v.idle*1000, "ms/s")
		f.addRatio(name, "monolith CPU per 1k deliveries, over idle", v.busy/v.deliveries*1e6, "ms", base("monolith CPU per 1k deliveries, over idle"))
		f.addRatio(name, busyMedian, v.busyMedian*1e6, "ms", base(busyMedian))
	}
	ratio, _ := f.value("sidecar/" + busyMedian)
	dv, _ := f.value("direct/" + busyMedian)
	f.goal("monolith CPU per delivery over idle (median of slices), sidecar / direct", ratio/dv, 0.2, "x", true)
	f.note("direct: each client has its own balancer link (own balancer id), so the monolith serializes and sends every delivery itself, as for browsers connected to it; sidecar: the monolith sends one room_msg per broadcast and the sidecar fans it out.")
	f.note("before measuring, each case sends %d unmeasured chats (one per room in flight) and waits %v: a fresh Node process runs the broadcast path unoptimised (V8 interpreter/baseline) for its first few thousand runs, and the sidecar case runs it once per broadcast.", fanoutWarmChats(sc), sc.Settle)
	f.note("'over idle' subtracts the monolith's CPU rate with the same clients connected and nobody sending (timers, keepalive, pings, GC), measured after the warm-up and before the window (the median of %d slices); the rows without it count all of the process's CPU.", fanoutSlices(sc))
	f.note("the goal's row is the median over %d equal slices of the window (busy CPU over idle / deliveries, per slice), so that a one-off does not decide it (seen: V8's memory-reducing full GC, which fires once some seconds after a burst when the process allocates little, so in the sidecar case's window and not in the direct one's); the whole-window rows include it.", fanoutSlices(sc))
	f.note("at these rates the monolith is mostly idle and wakes up once per broadcast; that wake-up and the chat's handling are a fixed cost per broadcast, which the direct case spreads over the room's sends; it falls as the rate rises.")
	f.note("the monolith's CPU includes handling the chat request itself (the same in both cases); the frames row counts what the monolith sent (direct: at the links; sidecar: the sidecar's messages_total{direction=in}).")
	return nil
}

// fanoutResult is one case of figure 3: CPU seconds of the monolith (all,
// and beyond its idle rate), the median over the window's slices of the
// busy CPU seconds per delivery, deliveries and monolith frames in the
// window, and the idle CPU (cores).
type fanoutResult struct{ cpu, busy, busyMedian, deliveries, frames, idle float64 }

// fanoutWarmChats is how many unmeasured chats each case of figure 3 sends
// before it measures: a freshly started Node monolith runs its broadcast
// path in V8's interpreter and baseline tiers until the path has run a few
// thousand times, and in the sidecar case that path runs once per
// broadcast (in the direct case its send half runs once per delivery, so
// it warms up room-size times sooner). A long-running monolith is warm;
// this measures one.
func fanoutWarmChats(sc Scale) int { return int(sc.FanoutRate * 50) }

// measureFanout warms the monolith up, lets it settle, measures its idle
// CPU, then paces chats and measures, over the window, the monolith's CPU,
// the deliveries and the monolith's frames (by frames()).
func (e *env) measureFanout(ctx context.Context, pid int, delivered *atomic.Int64, frames func() float64, send func(int, []byte) error, n int) (fanoutResult, error) {
	var out fanoutResult
	if err := e.warmFanout(ctx, delivered, send, n, fanoutWarmChats(e.scale)); err != nil {
		return out, err
	}
	// What the warm-up set off (V8's compiler threads, a GC) ends before
	// the idle rate is taken.
	sleep(ctx, e.scale.Settle)
	// The idle rate is the median of slices' too, for the same reason as
	// the busy one below: a one-off in it would be subtracted from every
	// second of the window.
	parts := fanoutSlices(e.scale)
	idle := make([]float64, 0, parts)
	for range parts {
		im := startCPU(pid)
		sleep(ctx, min(e.scale.Window, 2*time.Second)/time.Duration(parts))
		icpu, iwall := im.stop()
		idle = append(idle, icpu/iwall)
	}
	out.idle = median(idle)
	paced := make(chan error, 1)
	go func() { paced <- e.pace(ctx, n, e.scale.FanoutRate, e.scale.Window, send) }()
	sleep(ctx, e.scale.Warmup)
	m := startCPU(pid)
	d0, f0 := delivered.Load(), frames()
	// The window is measured in slices too: the busy CPU per delivery is
	// also taken as the median of the slices', so that a one-off in one
	// slice does not decide the figure. The one seen: V8's
	// memory-reducing full GC, which fires some seconds after a burst
	// once the process allocates little, i.e. in the sidecar case's
	// window (tens of broadcasts/s) and not in the direct case's.
	var per []float64
	for range parts {
		sm, sd := startCPU(pid), delivered.Load()
		sleep(ctx, e.scale.Window/time.Duration(parts))
		c, w := sm.stop()
		if d := float64(delivered.Load() - sd); d > 0 {
			per = append(per, max(0, c-out.idle*w)/d)
		}
	}
	var wall float64
	out.cpu, wall = m.stop()
	out.busy = max(0, out.cpu-out.idle*wall)
	out.busyMedian = median(per)
	out.deliveries, out.frames = float64(delivered.Load()-d0), frames()-f0
	return out, <-paced
}

// fanoutSlices is how many slices figure 3's window, and its idle
// measurement, are cut into: up to 5, none shorter than half a second (the
// tiny scale's window is one slice).
func fanoutSlices(sc Scale) int { return max(1, min(5, int(sc.Window/(500*time.Millisecond)))) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// warmFanout sends count chats round-robin over the n rooms, unmeasured,
// with about one chat per room in flight (a chat is done when the room's
// FanoutRoomSize deliveries arrived: delivered counts them), and returns
// once the last one has been delivered.
func (e *env) warmFanout(ctx context.Context, delivered *atomic.Int64, send func(int, []byte) error, n, count int) error {
	size := int64(e.scale.FanoutRoomSize)
	start := delivered.Load()
	deadline := time.Now().Add(time.Minute)
	wait := func(chats int64) error {
		for delivered.Load()-start < chats*size {
			if err := ctx.Err(); err != nil {
				return err
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("warm-up: %d of %d deliveries after a minute", delivered.Load()-start, chats*size)
			}
			time.Sleep(200 * time.Microsecond)
		}
		return nil
	}
	var buf []byte
	for k := range count {
		if err := wait(int64(k - n)); err != nil {
			return err
		}
		i := k % n
		buf = stamp(buf[:0], i, e.base)
		if err := send(i, buf); err != nil {
			return err
		}
	}
	return wait(int64(count))
}
