package bench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/internal/cluster"
	"github.com/roomlb/roomlb/internal/nodemonolith"
	"github.com/roomlb/roomlb/ott"
	"github.com/roomlb/roomlb/ott/otttest"
	"github.com/roomlb/roomlb/registry"
	"github.com/roomlb/roomlb/router"
	"github.com/roomlb/roomlb/sidecar"
)

// Figures 6 and 7 run on the in-process cluster of internal/cluster (the
// one `roomlb dev` and the end-to-end tests use): their subject is the
// protocol's round trips (claims, loads, handoffs), not a process's CPU,
// and they kill and drain nodes. Figure 5 runs router, sidecars and
// monoliths as processes of their own: its subject is latency, which one
// shared heap's GC cycles would add to (production's processes have small
// heaps of their own).

// processMonolith starts a monolith of the run's kind as a process of its
// own: the Node one, or the fake in a worker process; debounce is its state
// write's.
func (e *env) processMonolith(app *redisServer, name string, debounce time.Duration) (*monolith, func(), error) {
	if e.opts.Monolith == MonolithNode {
		p, err := nodemonolith.Launch(nodemonolith.Options{RedisURL: app.url,
			Env: []string{fmt.Sprintf("STATE_DEBOUNCE_MS=%d", debounce.Milliseconds())}})
		if err != nil {
			return nil, nil, err
		}
		m := &monolith{kind: MonolithNode, node: p, balancerAddr: p.BalancerAddr, httpAddr: p.HTTPAddr, rdb: app.rdb}
		return m, m.close, nil
	}
	w, err := e.startWorker(name)
	if err != nil {
		return nil, nil, err
	}
	resp, err := w.call(workerReq{Op: "monolith", Redis: app.url, StateDebounce: debounce}, 15*time.Second)
	if err != nil {
		w.stop()
		return nil, nil, err
	}
	m := &monolith{kind: MonolithFake, balancerAddr: resp.Balancer, httpAddr: resp.HTTP, rdb: app.rdb}
	return m, w.stop, nil
}

// waitAlive waits until every node is registered and alive.
func waitAlive(ctx context.Context, reg *registry.Registry, ids []string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, id := range ids {
		for {
			ok, err := reg.Alive(ctx, id)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("bench: node %s not registered within %v (%v)", id, limit, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// clusterDebounce is the monolith's state debounce in the cluster figures
// (5 s in OpenTogetherTube): short, so that drains (figure 7, and stopping
// a cluster) do not wait for it.
const clusterDebounce = 300 * time.Millisecond

// startCluster starts Redis and a cluster of the run's monolith kind.
func (e *env) startCluster(ctx context.Context, name string, nodes int, debounce time.Duration, change func(*cluster.Options)) (*redisServer, *cluster.Cluster, error) {
	rs, err := startRedis(e.dir, name+"-redis")
	if err != nil {
		return nil, nil, err
	}
	o := cluster.Options{RedisURL: rs.url, Nodes: nodes, Routers: 1, Monolith: cluster.FakeMonolith,
		// Every client of the load generator comes from one address, as
		// for the router processes (startRouter).
		Router: func(_ int, c *router.Config) { c.MaxConnsPerAddr, c.CreatesPerMinute = -1, -1 }}
	if e.opts.Monolith == MonolithNode {
		o.Monolith = cluster.NodeMonolith
	}
	if debounce > 0 { // the state write's debounce, both sides
		o.FakeConfig = func(c *otttest.Config) { c.StateDebounce = debounce }
		o.MonolithEnv = []string{fmt.Sprintf("STATE_DEBOUNCE_MS=%d", debounce.Milliseconds())}
		o.Sidecar = func(_ int, c *sidecar.Config) { c.StateDebounce = debounce }
	}
	if change != nil {
		change(&o)
	}
	c, err := cluster.Start(ctx, o)
	if err != nil {
		rs.close()
		return nil, nil, err
	}
	return rs, c, nil
}

// joinOne joins one client on the link and waits for its "you".
func (l *balancerLink) joinOne(room, client, token string, limit time.Duration) error {
	if err := l.join(room, client, token); err != nil {
		return err
	}
	l.conn.SetReadDeadline(time.Now().Add(limit))
	defer l.conn.SetReadDeadline(time.Time{})
	you := []byte(`"action":"you"`)
	for {
		m, err := l.read()
		if err != nil {
			return err
		}
		switch {
		case m.Type == ott.TypeRoomMsg && m.RoomMsg.ClientID == client && bytes.Contains(m.RoomMsg.Payload, you):
			return nil
		case m.Type == ott.TypeKick && m.Kick.ClientID == client:
			return fmt.Errorf("bench: monolith kicked %s (%d)", client, m.Kick.Reason)
		}
	}
}

// figJoin is figure 5: cold joins (placement, claim, load) and warm joins
// (the room is loaded: the router's owner lookup from its cache).
func (e *env) figJoin(ctx context.Context, f *Figure) error {
	n := e.scale.Joins
	f.Name = "join latency: cold (place, claim, load) and warm (room loaded)"
	f.Measures = fmt.Sprintf("%d rooms joined one after the other by a new client: WebSocket dial, auth, until the monolith's \"you\" "+
		"(the last message of a join); cold = room loaded nowhere, warm = a second client of the loaded room; "+
		"3 nodes (each a sidecar process in front of its own monolith process), 1 router process", n)
	// One Redis, as in the in-process cluster: the registry and the
	// monoliths' state. Direct's monolith is started first, as the run's
	// kind: an unknown kind fails here.
	rs, err := startRedis(e.dir, "f5-redis")
	if err != nil {
		return err
	}
	defer rs.close()
	direct, err := startMonolith(e.opts.Monolith, rs, nil)
	if err != nil {
		return err
	}
	defer direct.close()
	// roomlb: 3 nodes, each a sidecar process in front of a monolith process
	// of its own, and a router process, as in production.
	reg, err := registry.New(rs.rdb, registry.Config{})
	if err != nil {
		return err
	}
	sidecars := map[string]string{} // node id -> ws:// of its sidecar
	var ids []string
	for i := range 3 {
		id := fmt.Sprintf("node-%d", i+1)
		m, stop, err := e.processMonolith(rs, "f5-monolith-"+id, clusterDebounce)
		if err != nil {
			return err
		}
		defer stop()
		s, err := startSidecar(e, "f5-sidecar-"+id, id, rs.url, m, "--state-debounce", clusterDebounce.String())
		if err != nil {
			return err
		}
		defer s.kill()
		sidecars[id] = "ws://" + s.addr
		ids = append(ids, id)
	}
	rp, err := startRouter(e, "f5-router", rs.url)
	if err != nil {
		return err
	}
	defer rp.kill()
	if err := waitAlive(ctx, reg, ids, 10*time.Second); err != nil {
		return err
	}
	token, err := grant(direct.httpAddr)
	if err != nil {
		return err
	}
	rooms, drooms := roomNames("f5-r", n), roomNames("f5-d", n)
	warmRooms := roomNames("f5-warm", 3*len(ids))
	if err := addRooms(ctx, rs.rdb, slices.Concat(rooms, drooms, warmRooms)); err != nil {
		return err
	}
	// Direct: the monolith's own join, over an open balancer link.
	l, err := dialBalancer(ctx, dialer(nil), direct.balancerAddr)
	if err != nil {
		return err
	}
	defer l.close()
	var dCold, dWarm []time.Duration
	if err := l.joinOne(warmRooms[0], "warm", token, 10*time.Second); err != nil {
		return fmt.Errorf("direct join: %w", err)
	}
	for i, room := range drooms {
		for k, out := range []*[]time.Duration{&dCold, &dWarm} {
			t := time.Now()
			if err := l.joinOne(room, directClient(i, k), token, 10*time.Second); err != nil {
				return fmt.Errorf("direct join: %w", err)
			}
			*out = append(*out, time.Since(t))
		}
	}
	// roomlb: through the router; then the same warm join straight to the
	// owner's sidecar, to tell the router's part.
	d := dialer(nil)
	router := "ws://" + rp.addr
	secret := http.Header{contract.HeaderSecret: {e.secret}}
	var rCold, rWarm, sWarm []time.Duration
	var open []*wsClient
	defer func() {
		for _, cl := range open {
			cl.close()
		}
	}()
	join := func(base, room string, hdr http.Header, out *[]time.Duration) (*wsClient, error) {
		t := time.Now()
		cl, err := dialClient(ctx, d, base, room, token, hdr)
		if err != nil {
			return nil, err
		}
		open = append(open, cl)
		if err := cl.waitAction("you", 10*time.Second); err != nil {
			return nil, err
		}
		*out = append(*out, time.Since(t))
		return cl, nil
	}
	// A few cold joins first, not measured, so that the first ones measured
	// do not pay for what a process does once (Redis connections, script
	// loads): cold is about the room.
	var unused []time.Duration
	for _, room := range warmRooms {
		if _, err := join(router, room, nil, &unused); err != nil {
			return fmt.Errorf("warm-up join: %w", err)
		}
	}
	for _, room := range rooms {
		first, err := join(router, room, nil, &rCold)
		if err != nil {
			return fmt.Errorf("cold join: %w", err)
		}
		if _, err := join(router, room, nil, &rWarm); err != nil {
			return fmt.Errorf("warm join: %w", err)
		}
		if _, err := join(sidecars[first.node], room, secret, &sWarm); err != nil {
			return fmt.Errorf("warm join at the sidecar: %w", err)
		}
	}
	for _, m := range []struct {
		name string
		p    float64
	}{{"p50", 50}, {"p99", 99}} {
		f.add("direct", "cold "+m.name, percentileMS(dCold, m.p), "ms")
		f.addRatio("roomlb", "cold "+m.name, percentileMS(rCold, m.p), "ms", "direct/cold "+m.name)
		f.add("direct", "warm "+m.name, percentileMS(dWarm, m.p), "ms")
		f.addRatio("sidecar", "warm "+m.name, percentileMS(sWarm, m.p), "ms", "direct/warm "+m.name)
		f.addRatio("roomlb", "warm "+m.name, percentileMS(rWarm, m.p), "ms", "sidecar/warm "+m.name)
		f.add("router lookup", "added "+m.name, percentileMS(rWarm, m.p)-percentileMS(sWarm, m.p), "ms")
	}
	v, _ := f.value("roomlb/cold p99")
	f.goal("roomlb cold join p99", v, 5, "ms", true)
	f.note("direct joins go over an open balancer link (no TCP or WebSocket handshake); the others include a new connection's handshake, as a browser's join does.")
	f.note("router lookup = roomlb warm - sidecar warm: the router's owner lookup (cache) and its handshake with the sidecar.")
	return nil
}

// figFailover is figure 6: from SIGKILL of a node to the first message
// served in each of its rooms on another node.
func (e *env) figFailover(ctx context.Context, f *Figure) error {
	f.Name = "failover of a killed node"
	f.Measures = fmt.Sprintf("%d rooms on the killed node (sidecar and monolith killed at once, nothing released); "+
		"each room's client reconnects through the router at once and in a loop (20 ms apart), sends a chat; "+
		"time from the kill to that chat's broadcast, per room", e.scale.FailoverRooms)
	for _, hb := range e.scale.FailoverHeartbeats {
		d, err := e.failover(ctx, hb)
		if err != nil {
			return fmt.Errorf("heartbeat %v: %w", hb, err)
		}
		peer := fmt.Sprintf("heartbeat %v", hb)
		if hb == sidecar.DefaultHeartbeatTTL {
			peer += " (default)"
		}
		f.add(peer, "ttl", hb.Seconds()*1000, "ms")
		f.addRatio(peer, "p50", percentileMS(d, 50), "ms", peer+"/ttl")
		f.addRatio(peer, "max", percentileMS(d, 100), "ms", peer+"/ttl")
		f.goal("failover, last room, "+peer, percentileMS(d, 100), 1000, "ms", true)
	}
	f.note("a router steals a dead owner's room only once the owner's heartbeat key has expired in Redis, so failover is bounded below by what is left of the heartbeat TTL (--heartbeat-ttl, refreshed every third of it); the ratio column is failover / TTL. " +
		"A shorter TTL fails over sooner but makes every node stop serving on a Redis outage longer than 0.9 x the TTL (a sidecar serves only while its heartbeat surely lives).")
	return nil
}

func (e *env) failover(ctx context.Context, hb time.Duration) ([]time.Duration, error) {
	per := e.scale.FailoverRooms
	rs, c, err := e.startCluster(ctx, fmt.Sprintf("f6-%v", hb), 3, clusterDebounce, func(o *cluster.Options) {
		o.Sidecar = func(_ int, c *sidecar.Config) { c.HeartbeatTTL = hb }
	})
	if err != nil {
		return nil, err
	}
	defer rs.close()
	defer c.Stop()
	token, err := grant(c.Nodes[0].HTTPAddr)
	if err != nil {
		return nil, err
	}
	rooms := roomNames("f6", 3*per)
	if err := addRooms(ctx, rs.rdb, rooms); err != nil {
		return nil, err
	}
	p := peer{name: "roomlb", base: "ws://" + c.Routers[0].Addr}
	clients, err := e.joinRooms(ctx, p, token, rooms, 1)
	if err != nil {
		return nil, err
	}
	defer closeAll(clients)
	victim := clients[0][0].node
	var mine []string
	for i, row := range clients {
		if row[0].node == victim {
			mine = append(mine, rooms[i])
		}
	}
	var node *cluster.Node
	for _, nd := range c.Nodes {
		if nd.ID == victim {
			node = nd
		}
	}
	if node == nil {
		return nil, fmt.Errorf("no node %q", victim)
	}
	// Let the heartbeat be refreshed as it would be at any moment: the
	// kill lands at a random point of its period.
	time.Sleep(time.Duration(float64(hb) / 3 * rand.Float64()))
	start := time.Now()
	// The kill is at once, as SIGKILL is; the in-process node only takes
	// a while to tidy up after it, so the clients do not wait for that.
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		node.Kill()
	}()
	defer func() { <-killed }()
	out := make([]time.Duration, len(mine))
	errs := make([]error, len(mine))
	var wg sync.WaitGroup
	for i, room := range mine {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = e.serveAgain(ctx, p.base, room, token, i, victim, start, 30*time.Second)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// serveAgain reconnects to room until a chat comes back; it returns the
// time since start.
func (e *env) serveAgain(ctx context.Context, base, room, token string, id int, victim string, start time.Time, limit time.Duration) (time.Duration, error) {
	d := dialer(nil)
	var last error
	for time.Since(start) < limit && ctx.Err() == nil {
		if err := e.tryChat(ctx, d, base, room, token, id, victim); err != nil {
			last = err
			time.Sleep(20 * time.Millisecond)
			continue
		}
		return time.Since(start), nil
	}
	return 0, fmt.Errorf("room %s not served again within %v: %v", room, limit, last)
}

// tryChat joins room, sends a chat and waits for its broadcast.
func (e *env) tryChat(ctx context.Context, d *websocket.Dialer, base, room, token string, id int, victim string) error {
	c, err := dialClient(ctx, d, base, room, token, nil)
	if err != nil {
		return err
	}
	defer c.close()
	if c.node == victim {
		return fmt.Errorf("room %s still served by the killed node %s", room, victim)
	}
	if err := c.waitAction("you", 3*time.Second); err != nil {
		return err
	}
	if err := c.chat(stamp(nil, id, e.base)); err != nil {
		return err
	}
	c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		fr, err := c.read()
		if err != nil {
			return err
		}
		if s, _, ok := parseStamp(fr); ok && s == id {
			return nil
		}
	}
}

// figDrain is figure 7: a drain's handover of its rooms, until every client
// is served on another node (the router carries it over); idle rooms, then
// rooms under chat with the monolith's real state debounce.
func (e *env) figDrain(ctx context.Context, f *Figure) error {
	f.Name = "drain: rooms handed over, their clients carried over by the router, idle and under chat"
	f.Measures = "one node holds the rooms, two empty nodes join; the node drains (as on SIGTERM); " +
		"the router carries each client over to its room's new owner (a client it closes instead reconnects at once). " +
		"Idle (N rooms): one client each; time from the drain's start until the last client is served again (its new \"you\"). " +
		fmt.Sprintf("Chat (state debounce 5 s): %d rooms of %d clients, each client chatting every %d x %v-%v (a chat per room every %v on average) "+
			"from %v before the drain to 1 s after the last client is back; ",
			e.scale.ChatDrainRooms, e.scale.ChatDrainClients, e.scale.ChatDrainClients, chatEvery[0], chatEvery[1],
			(chatEvery[0]+chatEvery[1])/2, chatDebounce+chatPast) +
		"per client: closes it saw; pause = the longest a chat sent from the drain's start on took to reach it (its room stood still that long at least: short of the pause by the room's gap between chats at most); " +
		"last chat to new you = from the last chat it received before its new \"you\" to that \"you\" (long of the pause by that gap at most); drain start to new you; " +
		"chats lost = (chat sent from the drain's start on, client of its room) pairs never received"
	for _, n := range e.scale.DrainRooms {
		total, drained, closed, err := e.drain(ctx, n)
		if err != nil {
			return fmt.Errorf("%d rooms: %w", n, err)
		}
		peer := fmt.Sprintf("%d rooms", n)
		f.add(peer, "all served again", total.Seconds()*1000, "ms")
		f.add(peer, "drain returned", drained.Seconds()*1000, "ms")
		f.add(peer, "per room", total.Seconds()*1000/float64(n), "ms")
		f.add(peer, "closes seen", float64(closed), "clients")
		if n == 1000 {
			f.goal("1,000 rooms drained, clients served again", total.Seconds(), 3, "s", true)
		}
	}
	if !slices.Contains(e.scale.DrainRooms, 1000) {
		f.goal("1,000 rooms drained (not run at this scale)", math.NaN(), 3, "s", true)
	}
	if r, k := e.scale.ChatDrainRooms, e.scale.ChatDrainClients; r > 0 && k > 0 {
		res, err := e.chatDrain(ctx, r, k)
		if err != nil {
			return fmt.Errorf("chat load: %w", err)
		}
		peer := fmt.Sprintf("chat, %d rooms of %d", r, k)
		e.logf("figure 7: chat load: pause (longest chat delay) p50 %.0f ms p99 %.0f ms max %.0f ms; last chat to new you p99 %.0f ms; drain start to new you p99 %.0f ms; %d clients carried, %d closed, %d of %d chats lost",
			percentileMS(res.pauses, 50), percentileMS(res.pauses, 99), percentileMS(res.pauses, 100), percentileMS(res.gaps, 99), percentileMS(res.back, 99),
			len(res.pauses), res.closed, res.lost, res.checked)
		f.add(peer, "pause p50", percentileMS(res.pauses, 50), "ms")
		f.add(peer, "pause p99", percentileMS(res.pauses, 99), "ms")
		f.add(peer, "pause max", percentileMS(res.pauses, 100), "ms")
		f.add(peer, "last chat to new you p50", percentileMS(res.gaps, 50), "ms")
		f.add(peer, "last chat to new you p99", percentileMS(res.gaps, 99), "ms")
		f.add(peer, "drain start to new you p50", percentileMS(res.back, 50), "ms")
		f.add(peer, "drain start to new you p99", percentileMS(res.back, 99), "ms")
		f.add(peer, "drain returned", res.drained.Seconds()*1000, "ms")
		f.add(peer, "closes seen", float64(res.closed), "clients")
		f.add(peer, "not served again", float64(res.failed), "clients")
		f.add(peer, "chats checked", float64(res.checked), "deliveries")
		f.add(peer, "chats lost", float64(res.lost), "deliveries")
		f.add(peer, "router carry-overs", res.carries, "clients")
		for _, w := range res.carryWithin {
			f.add(peer, fmt.Sprintf("close to new owner <= %v", time.Duration(w[0]*float64(time.Second))), 100*w[1], "%")
		}
		f.goal(fmt.Sprintf("chat-load drain of %d clients: closes seen", r*k), float64(res.closed+res.failed), 0, "clients", true)
		f.goal("chat-load drain pause p99 (nothing pending)", percentileMS(res.pauses, 99), 250, "ms", true)
		f.goal("chat-load drain: chats lost", float64(res.lost), 0, "deliveries", true)
		if res.firstErr != nil {
			f.note("chat load: a client that saw a close or was not served again: %v", res.firstErr)
		}
		if res.firstLoss != "" {
			f.note("chat load: %s", res.firstLoss)
		}
	}
	f.note("the idle rows run with the monolith's state debounce set to 300 ms (5 s in OpenTogetherTube), the rooms idle past it: a drain waits for the state write of a room changed less than a debounce ago, which they leave out. " +
		"The chat rows run with the real 5 s (monolith and sidecar) and chat past the rooms' first write (5 s after their load): chat is not stored, so nothing is pending and each room moves at once; a pause near 5 s would mean the drain waited for the debounce.")
	return nil
}

// drain runs one drain of n rooms; it returns the time until every client
// was served again, the time until the drain itself returned, and how many
// clients saw a close (and rejoined).
func (e *env) drain(ctx context.Context, n int) (total, drained time.Duration, closed int, err error) {
	rs, c, err := e.startCluster(ctx, fmt.Sprintf("f7-%d", n), 1, clusterDebounce, nil)
	if err != nil {
		return 0, 0, 0, err
	}
	defer rs.close()
	defer c.Stop()
	token, err := grant(c.Nodes[0].HTTPAddr)
	if err != nil {
		return 0, 0, 0, err
	}
	rooms := roomNames(fmt.Sprintf("f7-%d", n), n)
	if err := addRooms(ctx, rs.rdb, rooms); err != nil {
		return 0, 0, 0, err
	}
	p := peer{name: "roomlb", base: "ws://" + c.Routers[0].Addr}
	clients, err := e.joinRooms(ctx, p, token, rooms, 1)
	if err != nil {
		return 0, 0, 0, err
	}
	defer closeAll(clients)
	old := c.Nodes[0]
	for _, id := range []string{"node-2", "node-3"} {
		if _, err := c.AddNode(ctx, id); err != nil {
			return 0, 0, 0, err
		}
	}
	// The router learns of the new nodes (events, and a re-read every
	// second); the rooms go quiet past the state debounce.
	time.Sleep(clusterDebounce)
	for t := time.Now(); ; {
		n, _ := metric("http://"+c.Routers[0].AdminAddr+"/metrics", "roomlb_router_nodes")
		if n == 3 {
			break
		}
		if time.Since(t) > 10*time.Second {
			return 0, 0, 0, fmt.Errorf("the router knows %.0f nodes of 3", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	times := make([]time.Duration, n)
	errs := make([]error, n)
	var closes atomic.Int64
	var wg sync.WaitGroup
	for i, row := range clients {
		cl := row[0]
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Carried over: the next owner's "you" on the same connection.
			if err := cl.waitAction("you", 30*time.Second); err == nil {
				times[i] = time.Since(start)
				return
			}
			closes.Add(1)
			d := dialer(nil)
			for time.Since(start) < 40*time.Second && ctx.Err() == nil {
				nc, err := dialClient(ctx, d, p.base, rooms[i], token, nil)
				if err == nil {
					err = nc.waitAction("you", 10*time.Second)
					nc.close()
				}
				if err == nil {
					times[i] = time.Since(start)
					return
				}
				errs[i] = err
				time.Sleep(20 * time.Millisecond)
			}
			if errs[i] == nil {
				errs[i] = ctx.Err()
			}
		}()
	}
	drainErr := make(chan error, 1)
	go func() {
		drainErr <- old.Drain()
	}()
	var dErr error
	select {
	case dErr = <-drainErr:
		drained = time.Since(start)
	case <-time.After(45 * time.Second):
		return 0, 0, 0, fmt.Errorf("drain did not return within 45s")
	}
	wg.Wait()
	for i, t := range times {
		if t == 0 {
			return 0, 0, 0, fmt.Errorf("client of %s was not served again: %v", rooms[i], errs[i])
		}
	}
	if dErr != nil {
		return 0, 0, 0, fmt.Errorf("drain: %w", dErr)
	}
	return slices.Max(times), drained, int(closes.Load()), nil
}

// The chat-load drain of figure 7: the monolith's real state debounce, and
// how long the clients chat past it before the drain (the rooms' first
// state write lands 5 s after their load, and a drain waits for what a
// room's clients may have changed unseen before they came); each room gets
// a chat every chatEvery[0] to chatEvery[1], from all of its clients.
const (
	chatDebounce = 5 * time.Second
	chatPast     = time.Second
)

var chatEvery = [2]time.Duration{200 * time.Millisecond, 500 * time.Millisecond}

// chatDrained is the outcome of a chat-load drain.
type chatDrained struct {
	// Per client carried over: the longest a chat reached it late (from
	// its sending to its receipt: the pause as a user sees it, short of
	// the room's gap between two chats at most); from the last chat it
	// received before its new "you" to that "you" (long of it by that
	// gap at most); and from the drain's start to its new "you".
	pauses, gaps, back []time.Duration
	drained            time.Duration // the drain's start until it returned
	// Clients that saw their connection end, and that were not served
	// again (neither carried nor rejoined... it does not rejoin: a close
	// is the failure this counts).
	closed, failed int
	firstErr       error
	// (chat, receiver) pairs due from the drain's start on, and those
	// never received.
	checked, lost int
	firstLoss     string
	// The router's carry-overs, and the share of them whose old owner's
	// close was followed by the new owner's connection within each bound
	// (seconds).
	carries     float64
	carryWithin [][2]float64
}

// chatter is one client of a chat-load drain: it chats on its connection
// and reads it; the router carries it over when its room moves.
type chatter struct {
	id   int // its stamps' sender
	room string
	cl   *wsClient
	mu   sync.Mutex // guards cl's writes and what follows
	// sent are the stamps it sent from the mark on; got every stamp it
	// received; yous counts its "you"s, carried is when the second came.
	// late is the longest a chat sent from the mark on took to reach it;
	// last is when it received the last chat before carried.
	marked  bool
	mark    time.Duration // since the bench's base
	sent    []string
	got     map[string]bool
	yous    int
	carried time.Time
	late    time.Duration
	last    time.Time
	err     error // how its connection ended
}

// chatDrain drains a node of rooms rooms of size clients each, every client
// chatting throughout, with the real 5 s state debounce on both sides.
func (e *env) chatDrain(ctx context.Context, rooms, size int) (*chatDrained, error) {
	rs, c, err := e.startCluster(ctx, "f7-chat", 1, chatDebounce, nil)
	if err != nil {
		return nil, err
	}
	defer rs.close()
	defer c.Stop()
	token, err := grant(c.Nodes[0].HTTPAddr)
	if err != nil {
		return nil, err
	}
	names := roomNames("f7-chat", rooms)
	if err := addRooms(ctx, rs.rdb, names); err != nil {
		return nil, err
	}
	p := peer{name: "roomlb", base: "ws://" + c.Routers[0].Addr}
	clients, err := e.joinRooms(ctx, p, token, names, size)
	if err != nil {
		return nil, err
	}
	joined := time.Now()
	old := c.Nodes[0]
	var added []*cluster.Node
	defer func() {
		// The new owners are killed, not drained: a drain would wait out
		// the debounce of the rooms they have just loaded.
		for _, nd := range added {
			nd.Kill()
		}
	}()
	var chatters []*chatter
	byRoom := map[string][]*chatter{}
	for i, row := range clients {
		for _, cl := range row {
			ch := &chatter{id: len(chatters), room: names[i], cl: cl, got: map[string]bool{}, yous: 1}
			chatters = append(chatters, ch)
			byRoom[ch.room] = append(byRoom[ch.room], ch)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		for _, ch := range chatters {
			ch.cl.close()
		}
		wg.Wait()
	}()
	chatting := sync.WaitGroup{}
	for _, ch := range chatters {
		wg.Add(1)
		chatting.Add(1)
		go func() {
			defer wg.Done()
			defer chatting.Done()
			ch.chat(stop, size, e.base)
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch.read(e.base)
		}()
	}
	for _, id := range []string{"node-2", "node-3"} {
		nd, err := c.AddNode(ctx, id)
		if err != nil {
			return nil, err
		}
		added = append(added, nd)
	}
	for t := time.Now(); ; {
		n, _ := metric("http://"+c.Routers[0].AdminAddr+"/metrics", "roomlb_router_nodes")
		if n == 3 {
			break
		}
		if time.Since(t) > 10*time.Second {
			return nil, fmt.Errorf("the router knows %.0f nodes of 3", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.logf("figure 7: %d clients chatting in %d rooms; draining in %v", len(chatters), rooms, time.Until(joined.Add(chatDebounce+chatPast)).Round(100*time.Millisecond))
	select {
	case <-time.After(time.Until(joined.Add(chatDebounce + chatPast))):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	start := time.Now()
	for _, ch := range chatters {
		ch.mu.Lock()
		ch.marked = true
		ch.mark = time.Since(e.base)
		ch.mu.Unlock()
	}
	drainErr := make(chan error, 1)
	go func() {
		drainErr <- old.Drain()
	}()
	out := &chatDrained{}
	select {
	case err := <-drainErr:
		if err != nil {
			return nil, fmt.Errorf("drain: %w", err)
		}
		out.drained = time.Since(start)
	case <-time.After(45 * time.Second):
		return nil, fmt.Errorf("drain did not return within 45s")
	}
	// Every client carried over (or ended), then a second of chat on the
	// new owners; then every chat sent gets 2 s to arrive.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		back := 0
		for _, ch := range chatters {
			ch.mu.Lock()
			if !ch.carried.IsZero() || ch.err != nil {
				back++
			}
			ch.mu.Unlock()
		}
		if back == len(chatters) {
			break
		}
	}
	time.Sleep(time.Second)
	close(stop)
	chatting.Wait()
	time.Sleep(2 * time.Second)
	for _, ch := range chatters {
		ch.mu.Lock()
		switch {
		case ch.err != nil:
			out.closed++
			if out.firstErr == nil {
				out.firstErr = fmt.Errorf("client %d of %s: %w", ch.id, ch.room, ch.err)
			}
		case ch.carried.IsZero():
			out.failed++
			if out.firstErr == nil {
				out.firstErr = fmt.Errorf("client %d of %s: not carried over within 30 s", ch.id, ch.room)
			}
		default:
			out.pauses = append(out.pauses, ch.late)
			out.gaps = append(out.gaps, ch.carried.Sub(ch.last))
			out.back = append(out.back, ch.carried.Sub(start))
		}
		ch.mu.Unlock()
	}
	for room, members := range byRoom {
		for _, from := range members {
			from.mu.Lock()
			sent := slices.Clone(from.sent)
			from.mu.Unlock()
			for _, to := range members {
				to.mu.Lock()
				if to.err == nil {
					for _, st := range sent {
						out.checked++
						if !to.got[st] {
							out.lost++
							if out.firstLoss == "" {
								out.firstLoss = fmt.Sprintf("chat %s of client %d never reached client %d of %s", st, from.id, to.id, room)
							}
						}
					}
				}
				to.mu.Unlock()
			}
		}
	}
	if len(out.pauses) == 0 {
		return nil, fmt.Errorf("no client was carried over: %w", out.firstErr)
	}
	// The router's own measure of each carry-over: from the old owner's
	// close to the new owner's connection, read off its histogram.
	url := "http://" + c.Routers[0].AdminAddr + "/metrics"
	if n, err := metric(url, "roomlb_router_carry_seconds_count"); err == nil && n > 0 {
		out.carries = n
		for _, le := range []string{"0.1", "0.25", "0.5", "1"} {
			if k, err := metric(url, `roomlb_router_carry_seconds_bucket{le="`+le+`"}`); err == nil {
				out.carryWithin = append(out.carryWithin, [2]float64{mustFloat(le), k / n})
			}
		}
	}
	return out, nil
}

func mustFloat(s string) float64 {
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

// read reads the chatter's connection until it ends, recording the stamps
// and "you"s it receives; base is the stamps' time base.
func (ch *chatter) read(base time.Time) {
	you := []byte(`"action":"you"`)
	for {
		f, err := ch.cl.read()
		if err != nil {
			ch.mu.Lock()
			if ch.err == nil {
				ch.err = err
			}
			ch.mu.Unlock()
			return
		}
		now := time.Now()
		ch.mu.Lock()
		if _, sent, ok := parseStamp(f); ok {
			st, _ := stampOf(f)
			ch.got[st] = true
			if ch.marked && sent >= ch.mark {
				ch.late = max(ch.late, now.Sub(base)-sent)
			}
			if ch.yous < 2 {
				ch.last = now
			}
		} else if bytes.Contains(f, you) {
			if ch.yous++; ch.yous == 2 {
				ch.carried = now
			}
		}
		ch.mu.Unlock()
	}
}

// chat sends a stamped chat every size x chatEvery (at random in its range:
// the room's clients together chat every chatEvery) until stop, recording
// those sent once marked.
func (ch *chatter) chat(stop <-chan struct{}, size int, base time.Time) {
	every := func() time.Duration {
		lo, hi := chatEvery[0], chatEvery[1]
		return time.Duration(size) * (lo + rand.N(hi-lo))
	}
	t := time.NewTimer(rand.N(every())) // spread the first chats
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		st := stamp(nil, ch.id, base)
		ch.mu.Lock()
		if ch.cl.chat(st) == nil && ch.marked {
			ch.sent = append(ch.sent, string(st))
		}
		ch.mu.Unlock()
		t.Reset(every())
	}
}

// stampOf is the stamp of a chat broadcast, as stamp made it.
func stampOf(f []byte) (string, bool) {
	sender, sent, ok := parseStamp(f)
	if !ok {
		return "", false
	}
	return "b" + strconv.Itoa(sender) + "." + strconv.FormatInt(int64(sent), 10), true
}
