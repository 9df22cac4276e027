package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/roomlb/roomlb/contract"
)

// perWorker bounds a worker's connections: far below the 20,000 files a
// process may hold, and below one source address's ephemeral ports.
const perWorker = 4500

// idleRoomSize is the clients per room of figure 4.
const idleRoomSize = 10

// figMemory is figure 4: the memory an idle joined connection costs the
// sidecar (clients straight to it) and the router (clients through it to a
// sidecar), each measured in a run of its own with fresh processes.
func (e *env) figMemory(ctx context.Context, f *Figure) error {
	f.Name = "memory per idle connection"
	f.Measures = fmt.Sprintf("idle joined clients (rooms of %d) held by worker processes (source addresses 127.0.0.2...); "+
		"RSS (/proc/<pid>/status) of the process in front at each level minus before the first client, divided by the connections; "+
		"sidecar: clients -> sidecar; router: clients -> router -> sidecar", idleRoomSize)
	worst := 0.0
	for _, through := range []string{"sidecar", "router"} {
		w, err := e.idlePhase(ctx, f, through)
		if err != nil {
			return fmt.Errorf("%s: %w", through, err)
		}
		worst = max(worst, w)
	}
	f.goal("RSS per idle connection, worst of router and sidecar", worst, 16, "KiB", true)
	f.note("RSS includes the Go runtime's headroom (garbage not yet collected, freed memory not yet returned, stacks). " +
		"heap in use (go_memstats_heap_inuse_bytes of the process's /metrics) counts allocated spans, touched or not; stacks (go_memstats_stack_inuse_bytes) the goroutine stacks. " +
		"The kernel's socket and pipe buffers are not in RSS.")
	return nil
}

// idlePhase holds the idle levels through one process and measures it; it
// returns the worst RSS per connection.
func (e *env) idlePhase(ctx context.Context, f *Figure, through string) (float64, error) {
	sc := e.scale
	name := "f4-" + through
	app, err := startRedis(e.dir, name+"-redis-app")
	if err != nil {
		return 0, err
	}
	defer app.close()
	reg, err := startRedis(e.dir, name+"-redis-registry")
	if err != nil {
		return 0, err
	}
	defer reg.close()
	m, err := startMonolith(e.opts.Monolith, app, nil)
	if err != nil {
		return 0, err
	}
	defer m.close()
	sidecar, err := startSidecar(e, name+"-sidecar", "bench-node", reg.url, m)
	if err != nil {
		return 0, err
	}
	defer sidecar.kill()
	p := peer{name: "sidecar", base: "ws://" + sidecar.addr, header: http.Header{contract.HeaderSecret: {e.secret}}, pid: sidecar.pid()}
	metrics := "http://" + sidecar.addr + "/metrics"
	if through == "router" {
		router, err := startRouter(e, name+"-router", reg.url)
		if err != nil {
			return 0, err
		}
		defer router.kill()
		p = peer{name: "router", base: "ws://" + router.addr, pid: router.pid()}
		metrics = "http://" + router.admin + "/metrics"
	}
	token, err := grant(m.httpAddr)
	if err != nil {
		return 0, err
	}
	top := slices.Max(sc.IdleLevels)
	rooms := roomNames(name, (top+idleRoomSize-1)/idleRoomSize)
	if err := addRooms(ctx, app.rdb, append(slices.Clone(rooms), name+"-warm-0")); err != nil {
		return 0, err
	}
	// One client first, closed: the first join's one-time work (pools,
	// caches, lazily built code paths) is not a connection's cost.
	warm, err := e.joinRooms(ctx, p, token, roomNames(name+"-warm", 1), 1)
	if err != nil {
		return 0, err
	}
	closeAll(warm)
	time.Sleep(sc.Settle)
	rss0, err := rssBytes(p.pid)
	if err != nil {
		return 0, err
	}
	fds0 := countFDs(p.pid)
	heap0, stack0 := 0.0, 0.0
	if metrics != "" {
		heap0, _ = metric(metrics, "go_memstats_heap_inuse_bytes")
		stack0, _ = metric(metrics, "go_memstats_stack_inuse_bytes")
	}
	var workers []*workerProc
	defer func() {
		var wg sync.WaitGroup
		for _, w := range workers {
			wg.Add(1)
			go func() { defer wg.Done(); w.stop() }()
		}
		wg.Wait()
	}()
	var held []int // connections per worker
	open := 0
	worst := 0.0
	for _, level := range sc.IdleLevels {
		// The level's new clients, a room at a time, on workers with
		// room to spare; the workers connect in parallel.
		jobs := map[int][]string{}
		for want := open; want < level; want += idleRoomSize {
			wi := slices.IndexFunc(held, func(n int) bool { return n+idleRoomSize <= perWorker })
			if wi < 0 {
				w, err := e.startWorker(fmt.Sprintf("%s-worker-%d", name, len(workers)+1))
				if err != nil {
					return 0, err
				}
				workers = append(workers, w)
				held = append(held, 0)
				wi = len(workers) - 1
			}
			jobs[wi] = append(jobs[wi], rooms[want/idleRoomSize])
			held[wi] += idleRoomSize
		}
		var mu sync.Mutex
		var openErr error
		var wg sync.WaitGroup
		for wi, rs := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := workers[wi].call(workerReq{Op: "open", Base: p.base, Header: p.header, Rooms: rs, PerRoom: idleRoomSize,
					Token: token, Local: fmt.Sprintf("127.0.0.%d", 2+wi)}, 5*time.Minute)
				mu.Lock()
				defer mu.Unlock()
				open += resp.Open
				openErr = cmpErr(openErr, err)
			}()
		}
		wg.Wait()
		label := fmt.Sprintf("%dk", level/1000)
		if level < 1000 {
			label = fmt.Sprint(level)
		}
		if openErr != nil {
			f.add(through, "conns held of "+label, float64(open), "conns")
			f.note("%s: only %d of %d connections could be held (%d files open, the limit is %d): %v",
				through, open, level, countFDs(p.pid), fdLimit(p.pid), openErr)
			break
		}
		time.Sleep(sc.Settle) // the join broadcasts settle
		rss, err := rssBytes(p.pid)
		if err != nil {
			return 0, err
		}
		per := float64(rss-rss0) / float64(open) / 1024
		worst = max(worst, per)
		f.add(through, "RSS per conn, "+label, per, "KiB")
		f.add(through, "files per conn, "+label, float64(countFDs(p.pid)-fds0)/float64(open), "fds")
		if metrics != "" {
			if h, err := metric(metrics, "go_memstats_heap_inuse_bytes"); err == nil {
				f.add(through, "heap in use per conn, "+label, (h-heap0)/float64(open)/1024, "KiB")
			}
			if st, err := metric(metrics, "go_memstats_stack_inuse_bytes"); err == nil {
				f.add(through, "stacks per conn, "+label, (st-stack0)/float64(open)/1024, "KiB")
			}
		}
		e.logf("figure 4: %s holds %d connections", through, open)
	}
	return worst, nil
}

// countFDs counts a process's open files.
func countFDs(pid int) int {
	fds, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	return len(fds)
}

// fdLimit is a process's soft limit of open files.
func fdLimit(pid int) int {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return 0
}

// loadRooms has the sidecar claim and the monolith load every room, by an
// HTTP request for each through the sidecar, 32 at a time.
func loadRooms(ctx context.Context, sidecarAddr, secret string, rooms []string) error {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	sem := make(chan struct{}, 32)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for _, room := range rooms {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+sidecarAddr+"/api/room/"+room, nil)
			req.Header.Set(contract.HeaderSecret, secret)
			res, err := c.Do(req)
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					err = fmt.Errorf("GET /api/room/%s: %d %s", room, res.StatusCode, strings.TrimSpace(string(b)))
				}
			}
			if err != nil {
				mu.Lock()
				firstErr = cmpErr(firstErr, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return firstErr
}
