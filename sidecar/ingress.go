package sidecar

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/registry"
)

// ingress is the sidecar's HTTP side: the requests routers forward (a
// room's HTTP requests and WebSocket upgrades, room creation, the admin
// endpoints) and the health and metrics endpoints. It admits each request
// to its room (claiming it when nobody owns it) and reaches the room table
// and the monolith link through the sidecar it belongs to.
type ingress struct{ *Sidecar }

func (s ingress) newServer() *fasthttp.Server {
	metrics := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	return &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			switch string(ctx.Path()) {
			case "/healthz":
				s.serveHealth(ctx, false)
			case "/readyz":
				s.serveHealth(ctx, true)
			case "/metrics":
				metrics(ctx)
			default:
				s.serveIngress(ctx)
			}
		},
		Name:                          "roomlb-sidecar",
		ReadTimeout:                   30 * time.Second,
		IdleTimeout:                   2 * time.Minute,
		ReadBufferSize:                8192,
		DisableHeaderNamesNormalizing: false,
		NoDefaultServerHeader:         true,
		StreamRequestBody:             false,
		MaxRequestBodySize:            8 << 20,
		CloseOnShutdown:               true,
		// Client WebSockets outlive their hijack handler (upgrade).
		KeepHijackedConns: true,
		Logger:            quietLogger{},
	}
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

// serveHealth answers /healthz (link and Redis) and /readyz (the same, and
// not draining).
func (s ingress) serveHealth(ctx *fasthttp.RequestCtx, ready bool) {
	lk := s.lock()
	linkUp, draining := s.link != nil, s.draining
	lk.unlock()
	var problems []string
	if !linkUp {
		problems = append(problems, "monolith link down")
	}
	if !s.presence.redisOK.Load() {
		problems = append(problems, "redis unreachable")
	}
	if ready && draining {
		problems = append(problems, "draining")
	}
	ctx.SetContentType("text/plain; charset=utf-8")
	if len(problems) > 0 {
		ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		ctx.SetBodyString(strings.Join(problems, "; ") + "\n")
		return
	}
	ctx.SetBodyString("ok\n")
}

// serveIngress serves a request a router forwarded.
func (s ingress) serveIngress(ctx *fasthttp.RequestCtx) {
	if s.cfg.Secret != "" && subtle.ConstantTimeCompare(ctx.Request.Header.Peek(contract.HeaderSecret), []byte(s.cfg.Secret)) != 1 {
		s.refuse(ctx, "secret", fasthttp.StatusForbidden, "roomlb: missing or wrong "+contract.HeaderSecret+"\n")
		return
	}
	ctx.Response.Header.Set(contract.HeaderNode, s.cfg.NodeID)
	if string(ctx.Path()) == "/admin/drain" && ctx.IsPost() {
		s.drainInBackground()
		ctx.SetStatusCode(fasthttp.StatusAccepted)
		ctx.SetBodyString("draining\n")
		return
	}
	if string(ctx.Path()) == "/admin/move" && ctx.IsPost() {
		s.serveMove(ctx)
		return
	}
	if contract.AmbiguousPath(ctx.Request.URI().PathOriginal()) {
		// Routers refuse these too. A request is passed to the monolith
		// with its path as it came, which Node may read as another path
		// (a backslash is a '/' to it): it must reach the handler, and
		// the room, it was routed for.
		s.refuse(ctx, "bad_path", fasthttp.StatusBadRequest, "roomlb: bad path\n")
		return
	}
	name, isRoom := roomFromPath(ctx.Path())
	switch {
	case isRoom && name == "generate" && ctx.IsPost():
		s.serveGenerate(ctx)
	case isRoom && name == "create" && ctx.IsPost():
		s.serveCreate(ctx)
	case isRoom && name != "list" && name != "generate" && name != "create":
		s.serveRoom(ctx, name)
	default:
		s.proxy(ctx)
	}
}

// serveMove hands one room to a given node, as a drain does (roomlb ctl
// move): form values room and to.
func (s ingress) serveMove(ctx *fasthttp.RequestCtx) {
	key, err := registry.RoomKey(string(ctx.PostArgs().Peek("room")))
	if err != nil {
		s.refuse(ctx, "bad_room", fasthttp.StatusBadRequest, err.Error()+"\n")
		return
	}
	to := string(ctx.PostArgs().Peek("to"))
	if err := registry.ValidNode(to); err != nil || to == s.cfg.NodeID {
		s.refuse(ctx, "bad_node", fasthttp.StatusBadRequest, "roomlb: move: bad target node\n")
		return
	}
	lk := s.lock()
	rm := s.rooms[key]
	ok := rm != nil && rm.valid(s.now()) && !rm.moving
	if ok {
		// Before the answer: a join that follows it is held, not served
		// here and closed a moment later.
		lk.startMoving(rm)
	}
	lk.unlock()
	if !ok {
		s.refuse(ctx, "not_owned", fasthttp.StatusConflict, "roomlb: move: "+key+" is not served by this node\n")
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		dctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
		defer cancel()
		if err := s.drainRoom(dctx, rm, &handoffs{s: s.Sidecar, to: to}); err != nil {
			s.log.Warn("sidecar: move", "room", key, "to", to, "err", err)
		}
	}()
	ctx.SetStatusCode(fasthttp.StatusAccepted)
	ctx.SetBodyString("moving " + key + " to " + to + "\n")
}

// roomFromPath returns the room segment of a client path, as the router
// reads it (contract.RoomSegment).
func roomFromPath(path []byte) (string, bool) {
	seg, ok := contract.RoomSegment(path)
	return string(seg), ok
}

// serveRoom admits a request for one room and serves it: a WebSocket
// client, or HTTP passed to the monolith.
func (s ingress) serveRoom(ctx *fasthttp.RequestCtx, name string) {
	key, err := registry.RoomKey(name)
	if err != nil {
		s.refuse(ctx, "bad_room", fasthttp.StatusBadRequest, err.Error()+"\n")
		return
	}
	rm, ok := s.admit(ctx, key, name)
	if !ok {
		return
	}
	if websocket.FastHTTPIsWebSocketUpgrade(ctx) {
		s.upgrade(ctx, rm)
		return
	}
	s.serveRoomHTTP(ctx, rm)
}

// serveRoomHTTP passes a room's HTTP request to the monolith. The monolith
// loads a room for most room requests (ott/PROTOCOL.md §4.1), so the request
// counts as the room's load: joins wait for it as for a loading join, and
// it waits for a load under way, or the monolith would load the room twice.
// The room's name goes in the canonical casing the room's state is keyed by.
func (s ingress) serveRoomHTTP(ctx *fasthttp.RequestCtx, rm *room) {
	lk := s.lock()
	inFlight := !rm.loaded && (rm.loader != nil || rm.loadSent)
	loading := !rm.loaded && !inFlight
	if loading {
		rm.loadSent = true
	}
	name := rm.name
	lk.unlock()
	if inFlight {
		s.awaitLoaded(rm)
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		// It may change the room (the monolith writes it a debounce
		// later); reads load it at most.
		rm.lastChange.Store(s.now())
	}
	// The raw path, still percent-encoded: the request is passed on as it
	// came (no path normalizing), and a decoded path would turn %5C into a
	// backslash that Node reads as '/'.
	if seg, ok := contract.RoomSegment(ctx.Request.URI().PathOriginal()); ok && string(seg) != name {
		path := ctx.Request.URI().PathOriginal()
		fixed := make([]byte, 0, len(path)-len(seg)+len(name))
		fixed = append(fixed, path[:len(contract.RoomPrefix)]...)
		fixed = append(fixed, name...)
		fixed = append(fixed, path[len(contract.RoomPrefix)+len(seg):]...)
		ctx.Request.URI().SetPathBytes(fixed)
	}
	s.proxy(ctx)
	if !loading {
		return
	}
	if ctx.Response.StatusCode() < 300 {
		// It found the room: its loaded comes on the link, on another
		// connection than this answer, so perhaps a moment later.
		s.awaitLoadedFor(rm, 500*time.Millisecond)
	}
	// The monolith has answered: whatever it loaded is in its memory now,
	// and its loaded message marks the room. If it loaded nothing, the
	// next waiting client loads the room, or the claim goes back.
	lk = s.lock()
	rm.loadSent = false
	if !rm.loaded && rm.loader == nil && len(rm.waiting) > 0 {
		lk.startLoad(rm)
	}
	lk.unlock()
	s.releaseIfIdle(rm)
}

// admit makes sure this node owns the room, claiming it if nobody does,
// and answers the router when it cannot serve it.
func (s ingress) admit(ctx *fasthttp.RequestCtx, key, name string) (*room, bool) {
	lk := s.lock()
	linkUp, draining := s.link != nil, s.draining
	existing := s.rooms[key]
	full := s.cfg.Capacity > 0 && len(s.clients) >= s.cfg.Capacity
	lk.unlock()
	if existing != nil {
		lk := s.lock()
		moving := existing.moving
		lk.unlock()
		if moving {
			s.refuseMoving(ctx)
			return nil, false
		}
	}
	if !linkUp || (existing == nil && (draining || full)) {
		reason := "draining"
		if !linkUp {
			reason = "link_down"
		} else if full {
			reason = "full"
		}
		ctx.Response.Header.Set(contract.HeaderDraining, "1")
		ctx.Response.Header.Set("Retry-After", "1")
		s.refuse(ctx, reason, fasthttp.StatusServiceUnavailable, "roomlb: node takes no rooms now ("+reason+")\n")
		return nil, false
	}
	cctx, cancel := context.WithTimeout(context.Background(), s.cfg.claimTimeout())
	rm, err := s.claimRoom(cctx, key, name)
	cancel()
	var oe *registry.OwnerError
	switch {
	case errors.As(err, &oe):
		if oe.Owner.Node != "" {
			ctx.Response.Header.Set(contract.HeaderOwner, oe.Owner.Node+":"+strconv.FormatInt(oe.Owner.Epoch, 10))
		}
		s.refuse(ctx, "owned", fasthttp.StatusMisdirectedRequest, "roomlb: "+oe.Error()+"\n")
		return nil, false
	case errors.Is(err, registry.ErrRecovering):
		// Redis lost the registry a moment ago and the room's last owner
		// may still take it back: the router holds the request and tries
		// again, as for a room that is moving.
		s.refuseMoving(ctx)
		return nil, false
	case err != nil:
		ctx.Response.Header.Set("Retry-After", "1")
		s.refuse(ctx, "redis", fasthttp.StatusServiceUnavailable, "roomlb: cannot claim the room: "+err.Error()+"\n")
		return nil, false
	}
	lk = s.lock()
	held := rm.lease.Epoch
	lk.unlock()
	if e, err := strconv.ParseInt(string(ctx.Request.Header.Peek(contract.HeaderEpoch)), 10, 64); err == nil && e > held {
		// The router has seen a newer claim than ours: our lease is stale.
		s.refuse(ctx, "stale", fasthttp.StatusMisdirectedRequest, "roomlb: this node's claim is older than the router's\n")
		return nil, false
	}
	lk = s.lock()
	moving := rm.moving
	lk.unlock()
	if moving {
		s.refuseMoving(ctx)
		return nil, false
	}
	return rm, true
}

func (s ingress) refuseMoving(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set(contract.HeaderMoving, "1")
	ctx.Response.Header.Set("Retry-After", "1")
	s.refuse(ctx, "moving", fasthttp.StatusServiceUnavailable, "roomlb: room is moving to another node\n")
}

func (s ingress) refuse(ctx *fasthttp.RequestCtx, reason string, status int, body string) {
	s.metrics.refusals.WithLabelValues(reason).Inc()
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(body)
}

// proxy passes the request to the monolith's HTTP API.
func (s ingress) proxy(ctx *fasthttp.RequestCtx) {
	lk := s.lock()
	l := s.link
	lk.unlock()
	if l == nil {
		ctx.Response.Header.Set(contract.HeaderDraining, "1")
		ctx.Response.Header.Set("Retry-After", "1")
		s.refuse(ctx, "link_down", fasthttp.StatusServiceUnavailable, "roomlb: monolith unavailable\n")
		return
	}
	req := &ctx.Request
	for _, h := range []string{contract.HeaderSecret, contract.HeaderEpoch, contract.HeaderPlace, "Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Upgrade"} {
		req.Header.Del(h)
	}
	node := ctx.Response.Header.Peek(contract.HeaderNode)
	node = append([]byte(nil), node...)
	if err := l.http.DoTimeout(req, &ctx.Response, 30*time.Second); err != nil {
		ctx.Response.Reset()
		ctx.SetStatusCode(fasthttp.StatusBadGateway)
		ctx.SetBodyString("roomlb: monolith: " + err.Error() + "\n")
	}
	ctx.Response.Header.SetBytesV(contract.HeaderNode, node)
}

// serveCreate claims the named room before the monolith creates it, so the
// creator's first join lands here and no other node creates it too.
func (s ingress) serveCreate(ctx *fasthttp.RequestCtx) {
	var body struct {
		Name string `json:"name"`
	}
	key := ""
	if json.Unmarshal(ctx.PostBody(), &body) == nil {
		key, _ = registry.RoomKey(body.Name)
	}
	if key == "" {
		s.proxy(ctx) // the monolith explains what is wrong with it
		return
	}
	rm, ok := s.admit(ctx, key, body.Name)
	if !ok {
		if ctx.Response.StatusCode() == fasthttp.StatusMisdirectedRequest {
			// Owned elsewhere: the name is taken, as the monolith would say.
			ctx.Response.Header.Del(contract.HeaderOwner)
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"success":false,"error":{"name":"RoomNameTakenException","message":"Room name is already taken"}}`)
		}
		return
	}
	s.proxy(ctx)
	if ctx.Response.StatusCode() >= 300 {
		lk := s.lock()
		if !rm.loaded && len(rm.clients) == 0 && rm.loader == nil {
			lk.releaseRoom(rm)
		}
		lk.unlock()
		return
	}
	s.awaitLoaded(rm)
}

// serveGenerate passes a generate to the monolith and answers only when the
// new room is claimed in the registry.
func (s ingress) serveGenerate(ctx *fasthttp.RequestCtx) {
	lk := s.lock()
	ok := s.link != nil && !s.draining
	lk.unlock()
	if !ok {
		ctx.Response.Header.Set(contract.HeaderDraining, "1")
		ctx.Response.Header.Set("Retry-After", "1")
		s.refuse(ctx, "draining", fasthttp.StatusServiceUnavailable, "roomlb: node takes no rooms now\n")
		return
	}
	s.proxy(ctx)
	if ctx.Response.StatusCode() >= 300 {
		return
	}
	var body struct {
		Room string `json:"room"`
	}
	json.Unmarshal(ctx.Response.Body(), &body)
	key, err := registry.RoomKey(body.Room)
	if err != nil {
		return
	}
	deadline := time.Now().Add(s.cfg.LoadTimeout)
	for time.Now().Before(deadline) {
		lk := s.lock()
		rm := s.rooms[key]
		lk.unlock()
		if rm != nil {
			<-rm.claimed
			if rm.claimErr != nil {
				break
			}
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	ctx.Response.Reset()
	ctx.Response.Header.Set("Retry-After", "1")
	s.refuse(ctx, "generate", fasthttp.StatusServiceUnavailable, "roomlb: the generated room could not be claimed\n")
}

// awaitLoaded waits, bounded, until the monolith reports rm loaded.
func (s ingress) awaitLoaded(rm *room) { s.awaitLoadedFor(rm, s.cfg.LoadTimeout) }

func (s ingress) awaitLoadedFor(rm *room, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		lk := s.lock()
		loaded := rm.loaded || rm.gone
		lk.unlock()
		if loaded {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}
