package otttest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/ott"
)

// client is a client joined through a balancer link. Guarded by m.mu.
type client struct {
	id       string
	roomName string // as in the join; canonical once joined
	token    string
	link     *link
	room     *room  // nil until joined
	seq      uint64 // join order

	name       string
	isLoggedIn bool
	status     json.RawMessage // echoed unvalidated; nil: absent

	// busy is set while the join or a notify is in flight; messages that
	// arrive meanwhile wait in backlog, so a client's messages are handled
	// in order.
	busy    bool
	backlog []json.RawMessage
}

// Roles of userInfo.
const (
	roleUnregistered = 0
	roleRegistered   = 1
)

// userInfo is a user as clients see it.
type userInfo struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	IsLoggedIn bool            `json:"isLoggedIn"`
	Status     json.RawMessage `json:"status,omitempty"`
	Role       int             `json:"role"`
}

func (c *client) info() userInfo {
	role := roleUnregistered
	if c.isLoggedIn {
		role = roleRegistered
	}
	return userInfo{ID: c.id, Name: c.name, IsLoggedIn: c.isLoggedIn, Status: c.status, Role: role}
}

// session is an auth:<token> value.
type session struct {
	IsLoggedIn bool            `json:"isLoggedIn"`
	Username   *string         `json:"username"`
	UserID     json.RawMessage `json:"user_id"`
}

// session reads the token's session; nil without one.
func (m *Monolith) session(token string) (*session, error) {
	raw, err := m.rdb.Get(m.ctx, authKeyPrefix+token).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s session
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

func (c *client) applySession(s *session) {
	c.isLoggedIn = s.IsLoggedIn
	switch {
	case s.Username != nil:
		c.name = *s.Username
	case c.isLoggedIn:
		// No user table: a stand-in name.
		c.name = "user" + string(bytes.Trim(s.UserID, `"`))
	default:
		c.name = ""
	}
}

func (m *Monolith) isCurrentLocked(c *client) bool { return m.clients[c.id] == c }

// joinLocked is B2M join (§4.3). The client record exists at once (a
// repeated id replaces it); the token check and the lookup run in a
// goroutine.
func (m *Monolith) joinLocked(l *link, j ott.Join) {
	m.clientSeq++
	c := &client{id: j.Client, roomName: j.Room, token: j.Token, link: l, seq: m.clientSeq, status: json.RawMessage(`"none"`), busy: true}
	m.clients[c.id] = c
	m.goLocked(func() { m.doJoin(c) })
}

func (m *Monolith) doJoin(c *client) {
	if c.token == "" {
		m.mu.Lock()
		m.kickLocked(c, ott.CloseMissingToken, true)
		m.mu.Unlock()
		return
	}
	if d := m.cfg.SessionDelay; d > 0 {
		time.Sleep(d)
	}
	s, err := m.session(c.token)
	m.mu.Lock()
	ok := false
	switch {
	case !m.isCurrentLocked(c) || m.closed:
	case err != nil:
		m.log.Error("join: session", logClient, c.id, logErr, err)
		m.kickLocked(c, ott.CloseUnknown, true)
	case s == nil:
		m.log.Info("join: no session for token", logClient, c.id)
		m.kickLocked(c, ott.CloseMissingToken, true)
	default:
		c.applySession(s)
		ok = true
	}
	m.mu.Unlock()
	if !ok {
		return
	}
	r, err := m.getRoom(c.roomName)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		code := ott.CloseUnknown
		if errors.Is(err, errRoomNotFound) {
			code = ott.CloseRoomNotFound
		}
		m.log.Info("join failed", logClient, c.id, logRoom, c.roomName, logErr, err)
		m.kickLocked(c, code, true)
		return
	}
	if !m.isCurrentLocked(c) || m.closed {
		return
	}
	c.roomName = r.st.Name
	c.room = r
	m.roomJoinLocked(r, c)
	c.busy = false
	m.drainLocked(c)
}

// roomJoinLocked adds the client and sends the join sequence of §4.3 step 4,
// in order.
func (m *Monolith) roomJoinLocked(r *room, c *client) {
	r.members = append(r.members, c)
	now := time.Now()
	info := c.info()
	m.unicastLocked(r, c, r.syncJSON(now, all))
	m.broadcastLocked(r, mustJSON(eventMsg{Action: "event", Request: joinRequest{Type: reqJoin, Info: info}, User: info, Additional: struct{}{}}))
	m.broadcastLocked(r, mustJSON(struct {
		Action           string  `json:"action"`
		PlaybackPosition float64 `json:"playbackPosition"`
	}{"sync", r.position(now)}))
	m.broadcastLocked(r, userUpdate("update", info))
	users := make([]userInfo, 0, len(r.members))
	for _, mc := range r.members {
		users = append(users, mc.info())
	}
	m.unicastLocked(r, c, userUpdate("init", users))
	m.unicastLocked(r, c, mustJSON(struct {
		Action string `json:"action"`
		Info   struct {
			ID string `json:"id"`
		} `json:"info"`
	}{Action: "you", Info: struct {
		ID string `json:"id"`
	}{c.id}}))
}

// leaveLocked is B2M leave (§4.4): any link may name any balancer client.
func (m *Monolith) leaveLocked(id string) {
	c := m.clients[id]
	if c == nil {
		m.log.Error("leave: unknown client", logClient, id)
		return
	}
	m.dropLocked(c, true)
}

// dropLocked forgets the client and, if it had joined, removes it from its
// room: first from the members, then the broadcasts (so a balancer whose
// only member was the leaver hears nothing).
func (m *Monolith) dropLocked(c *client, announce bool) {
	if m.isCurrentLocked(c) {
		delete(m.clients, c.id)
	}
	r := c.room
	if r == nil {
		return
	}
	c.room = nil
	i := slices.Index(r.members, c)
	if i < 0 {
		return
	}
	info := c.info()
	r.members = slices.Delete(r.members, i, i+1)
	if announce {
		m.broadcastLocked(r, mustJSON(eventMsg{Action: "event", Request: struct {
			Type int `json:"type"`
		}{reqLeave}, User: info, Additional: struct {
			User userInfo `json:"user"`
		}{info}}))
		m.broadcastLocked(r, userUpdate("remove", c.id))
	}
}

// linkClosedLocked: every client of a closed link leaves (§2.4).
func (m *Monolith) linkClosedLocked(l *link) {
	var gone []*client
	for _, c := range m.clients {
		if c.link == l {
			gone = append(gone, c)
		}
	}
	slices.SortFunc(gone, func(a, b *client) int { return cmp.Compare(a.seq, b.seq) })
	for _, c := range gone {
		m.dropLocked(c, true)
	}
}

// kickLocked sends kick and forgets the client, processing its leave (a
// later leave only logs).
func (m *Monolith) kickLocked(c *client, code int, announce bool) {
	m.kickFrameLocked(c, ott.Kick{ClientID: c.id, Reason: code}.Append(nil), announce)
}

func (m *Monolith) kickFrameLocked(c *client, frame []byte, announce bool) {
	if !m.isCurrentLocked(c) {
		return
	}
	m.sendLocked(c.link, ott.TypeKick, frame)
	m.dropLocked(c, announce)
}

// broadcastLocked sends one room_msg per balancer id with a member in the
// room, on the first link with that id (§4.7, §8 item 6).
func (m *Monolith) broadcastLocked(r *room, payload []byte) {
	var frame []byte
	var ids []string
	for _, c := range r.members {
		id := c.link.balancerID
		if slices.Contains(ids, id) {
			continue
		}
		ids = append(ids, id)
		if l := m.firstByIDLocked(id); l != nil {
			if frame == nil {
				frame = ott.RoomMsg{Room: r.st.Name, Payload: payload}.Append(nil)
			}
			m.sendLocked(l, ott.TypeRoomMsg, frame)
		}
	}
}

// unicastLocked sends a room_msg for one client on its own link.
func (m *Monolith) unicastLocked(r *room, c *client, payload []byte) {
	m.sendLocked(c.link, ott.TypeRoomMsg, ott.RoomMsg{Room: r.st.Name, ClientID: c.id, Payload: payload}.Append(nil))
}

// clientMsgLocked is B2M client_msg (§4.5).
func (m *Monolith) clientMsgLocked(cm ott.ClientMsg) {
	c := m.clients[cm.ClientID]
	if c == nil {
		m.log.Error("client_msg: unknown client", logClient, cm.ClientID)
		return
	}
	if c.busy {
		c.backlog = append(c.backlog, cm.Payload)
		return
	}
	m.clientFrameLocked(c, cm.Payload)
}

// drainLocked handles the messages that waited for the join or a notify.
func (m *Monolith) drainLocked(c *client) {
	for !c.busy && len(c.backlog) > 0 && m.isCurrentLocked(c) {
		p := c.backlog[0]
		c.backlog = c.backlog[1:]
		m.clientFrameLocked(c, p)
	}
}

// clientFrameLocked handles one client frame like a directly connected
// browser's (§5.3).
func (m *Monolith) clientFrameLocked(c *client, payload json.RawMessage) {
	if !m.isCurrentLocked(c) || c.room == nil {
		return
	}
	if string(payload) == "null" {
		// msg.action on null throws inside the monolith.
		m.log.Error("client message is null", logClient, c.id)
		m.kickLocked(c, ott.CloseUnknown, true)
		return
	}
	var msg map[string]json.RawMessage
	if payload[0] != '{' || json.Unmarshal(payload, &msg) != nil {
		m.log.Warn("unknown client action", logClient, c.id)
		return
	}
	switch jsonString(msg["action"]) {
	case "req":
		m.requestLocked(c, msg["request"])
	case "status":
		c.status = compact(msg["status"])
		m.broadcastLocked(c.room, userUpdate("update", c.info()))
	case "kickme":
		// Echoed unvalidated (§3.4): any value, 4000 when absent.
		reason := msg["reason"]
		if reason == nil {
			m.kickLocked(c, ott.CloseUnknown, true)
			return
		}
		m.kickFrameLocked(c, kickFrame(c.id, reason), true)
	case "notify":
		if jsonString(msg["message"]) == "usernameChanged" {
			c.busy = true
			m.goLocked(func() { m.renotify(c) })
		}
	case "auth":
		// The balancer must consume the auth frame itself.
	default:
		m.log.Warn("unknown client action", logClient, c.id)
	}
}

// renotify re-reads the session after a username change.
func (m *Monolith) renotify(c *client) {
	s, err := m.session(c.token)
	m.mu.Lock()
	defer m.mu.Unlock()
	c.busy = false
	switch {
	case !m.isCurrentLocked(c):
		return
	case err != nil:
		m.kickLocked(c, ott.CloseUnknown, true)
		return
	case s == nil:
		m.kickLocked(c, ott.CloseMissingToken, true)
		return
	}
	c.applySession(s)
	if c.room != nil {
		m.broadcastLocked(c.room, userUpdate("update", c.info()))
	}
	m.drainLocked(c)
}

// kickFrame is a kick whose reason is whatever the client sent, normalized
// like JSON.stringify would.
func kickFrame(id string, reason json.RawMessage) []byte {
	var f float64
	if json.Unmarshal(reason, &f) == nil && f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
		return ott.Kick{ClientID: id, Reason: int(f)}.Append(nil)
	}
	b := []byte(`{"type":"kick","payload":{"client_id":`)
	b = append(b, mustJSON(id)...)
	b = append(b, `,"reason":`...)
	b = append(b, compact(reason)...)
	return append(b, "}}"...)
}

// Request types (§5.3).
const (
	reqJoin     = 0
	reqLeave    = 1
	reqPlayback = 2
	reqSkip     = 3
	reqSeek     = 4
	reqAdd      = 5
	reqRemove   = 6
	reqChat     = 11
)

// requestLocked handles a room request. Malformed requests are logged and
// ignored, like the real one's validation and permission failures; a
// missing or null request throws inside the real one and gets kick 4000.
func (m *Monolith) requestLocked(c *client, raw json.RawMessage) {
	r := c.room
	if raw == nil || string(raw) == "null" {
		m.log.Error("request is null", logClient, c.id)
		m.kickLocked(c, ott.CloseUnknown, true)
		return
	}
	var req map[string]json.RawMessage
	if raw[0] != '{' || json.Unmarshal(raw, &req) != nil {
		m.log.Warn("request ignored: not an object", logClient, c.id)
		return
	}
	var typ float64
	if json.Unmarshal(req["type"], &typ) != nil {
		m.log.Warn("request ignored: no type", logClient, c.id)
		return
	}
	ignore := func(why string) { m.log.Warn("request ignored: "+why, logClient, c.id, "type", typ) }
	request := compact(raw)
	now := time.Now()
	switch typ {
	case reqChat:
		var text string
		if t := req["text"]; len(t) == 0 || t[0] != '"' || json.Unmarshal(t, &text) != nil {
			ignore("chat text must be a string")
			return
		}
		m.broadcastLocked(r, mustJSON(struct {
			Action string   `json:"action"`
			From   userInfo `json:"from"`
			Text   string   `json:"text"`
		}{"chat", c.info(), text}))
	case reqPlayback:
		var state bool
		if json.Unmarshal(req["state"], &state) != nil || jsonNull(req["state"]) {
			ignore("playback state must be a boolean")
			return
		}
		if state == r.st.IsPlaying {
			return
		}
		if state {
			ms := now.UnixMilli()
			r.st.PlaybackStart = &ms
		} else {
			r.st.PlaybackPosition = r.position(now)
			r.st.PlaybackStart = nil
		}
		r.st.IsPlaying = state
		m.publishEventLocked(r, c, request, struct{}{})
		m.changedLocked(r, "isPlaying", "playbackPosition", "_playbackStart")
	case reqSeek:
		var value float64
		if json.Unmarshal(req["value"], &value) != nil || jsonNull(req["value"]) {
			ignore("seek value must be a number")
			return
		}
		prev := r.position(now)
		r.st.PlaybackPosition = value
		r.st.PlaybackStart = nil
		if r.st.IsPlaying {
			ms := now.UnixMilli()
			r.st.PlaybackStart = &ms
		}
		m.publishEventLocked(r, c, request, struct {
			PrevPosition float64 `json:"prevPosition"`
		}{prev})
		m.changedLocked(r, "playbackPosition", "_playbackStart")
	case reqSkip:
		// Nothing playing: nothing happens, not even an event.
		if r.st.CurrentSource == nil {
			m.log.Debug("skip: nothing playing", logClient, c.id)
			return
		}
		video, prev := r.st.CurrentSource, r.position(now)
		m.dequeueNextLocked(r, now)
		m.publishEventLocked(r, c, request, struct {
			Video        json.RawMessage `json:"video"`
			PrevPosition float64         `json:"prevPosition"`
		}{video, prev})
		r.st.VideoSegments = json.RawMessage("[]")
		m.changedLocked(r, "videoSegments")
	case reqAdd:
		videos, ok := videosOf(req)
		if !ok {
			ignore("add needs video, videos or url with string service and id")
			return
		}
		for _, v := range videos {
			if sameVideo(r.st.CurrentSource, v) || slices.ContainsFunc(r.st.Queue, func(q json.RawMessage) bool { return sameVideo(q, v) }) {
				ignore("video already queued")
				return
			}
		}
		r.st.Queue = append(r.st.Queue, videos...)
		m.publishEventLocked(r, c, request, struct {
			Videos []json.RawMessage `json:"videos"`
		}{videos})
		// Only queued: the next tick moves it into an empty player.
		m.changedLocked(r, "queue")
	case reqRemove:
		i := slices.IndexFunc(r.st.Queue, func(q json.RawMessage) bool { return sameVideo(q, req["video"]) })
		if i < 0 {
			ignore("video not found in queue")
			return
		}
		video := r.st.Queue[i]
		r.st.Queue = slices.Delete(r.st.Queue, i, i+1)
		m.publishEventLocked(r, c, request, struct {
			Video json.RawMessage `json:"video"`
		}{video})
		m.changedLocked(r, "queue")
	default:
		ignore("unsupported request type")
	}
}

// updateLocked is the real Room.update, as far as the fake models it: an
// empty player takes the next queued video, and a playing video ends (the
// next one plays, or the player empties and stops) once its position has
// passed its endAt, else its length, else 0. Videos carry no length unless
// a client sent one (there are no video lookups), so a video without one
// ends at the first tick after it began to play, as in the real one.
func (m *Monolith) updateLocked(r *room, now time.Time) {
	switch {
	case r.st.CurrentSource == nil && len(r.st.Queue) > 0:
	case r.st.CurrentSource != nil && r.st.IsPlaying && r.position(now) > videoEnd(r.st.CurrentSource):
	default:
		return
	}
	m.dequeueNextLocked(r, now)
}

// dequeueNextLocked is the real room's dequeueNext: in dj mode the current
// video restarts; in loop mode it goes back to the end of the queue first.
// Then the next queued video plays from its startAt (else 0), or, with an
// empty queue, the player empties and stops. _playbackStart is now either
// way (it counts only while playing), and the speed goes back to 1.
func (m *Monolith) dequeueNextLocked(r *room, now time.Time) {
	ms := now.UnixMilli()
	var changed []string
	if r.st.CurrentSource != nil {
		switch r.st.QueueMode {
		case "dj":
			r.st.PlaybackPosition = videoStart(r.st.CurrentSource)
			r.st.PlaybackStart = &ms
			m.changedLocked(r, "playbackPosition", "_playbackStart")
			return
		case "loop":
			r.st.Queue = append(r.st.Queue, r.st.CurrentSource)
			changed = append(changed, "queue")
		}
	}
	switch {
	case len(r.st.Queue) > 0:
		r.st.CurrentSource = r.st.Queue[0]
		r.st.Queue = slices.Delete(r.st.Queue, 0, 1)
		r.st.PlaybackPosition = videoStart(r.st.CurrentSource)
		r.st.PlaybackStart = &ms
		changed = append(changed, "currentSource", "queue", "playbackPosition", "_playbackStart")
		if hasSegments(r.st.VideoSegments) {
			r.st.VideoSegments = json.RawMessage("[]")
			changed = append(changed, "videoSegments")
		}
	case r.st.CurrentSource != nil:
		if r.st.IsPlaying {
			r.st.IsPlaying = false
			changed = append(changed, "isPlaying")
		}
		r.st.PlaybackPosition = 0
		r.st.PlaybackStart = &ms
		r.st.CurrentSource = nil
		changed = append(changed, "playbackPosition", "_playbackStart", "currentSource")
	}
	if r.st.CurrentSource == nil && hasSegments(r.st.VideoSegments) {
		r.st.VideoSegments = json.RawMessage("[]")
		changed = append(changed, "videoSegments")
	}
	r.st.PlaybackSpeed = 1
	changed = append(changed, "playbackSpeed")
	m.changedLocked(r, changed...)
}

// videoField is a number field of a video, ok false when it is absent or
// null (JavaScript's ??) and NaN when it is not a number (every comparison
// with it fails).
func videoField(v json.RawMessage, name string) (f float64, ok bool) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(v, &fields) != nil {
		return 0, false
	}
	raw, ok := fields[name]
	if !ok || jsonNull(raw) {
		return 0, false
	}
	if json.Unmarshal(raw, &f) != nil {
		return math.NaN(), true
	}
	return f, true
}

// videoEnd is where a video ends: endAt ?? length ?? 0.
func videoEnd(v json.RawMessage) float64 {
	for _, name := range []string{"endAt", "length"} {
		if f, ok := videoField(v, name); ok {
			return f
		}
	}
	return 0
}

// videoStart is where a video starts: startAt ?? 0 (numbers only).
func videoStart(v json.RawMessage) float64 {
	if f, ok := videoField(v, "startAt"); ok && !math.IsNaN(f) {
		return f
	}
	return 0
}

func hasSegments(raw json.RawMessage) bool {
	var segments []json.RawMessage
	return json.Unmarshal(raw, &segments) == nil && len(segments) > 0
}

func (m *Monolith) publishEventLocked(r *room, c *client, request json.RawMessage, additional any) {
	m.broadcastLocked(r, mustJSON(eventMsg{Action: "event", Request: request, User: c.info(), Additional: additional}))
}

type eventMsg struct {
	Action     string   `json:"action"`
	Request    any      `json:"request"`
	User       userInfo `json:"user"`
	Additional any      `json:"additional"`
}

type joinRequest struct {
	Type int      `json:"type"`
	Info userInfo `json:"info"`
}

func userUpdate(kind string, value any) []byte {
	type update struct {
		Kind  string `json:"kind"`
		Value any    `json:"value"`
	}
	return mustJSON(struct {
		Action string `json:"action"`
		Update update `json:"update"`
	}{"user", update{kind, value}})
}

// videosOf reads the videos of an add request: videos, video or url.
func videosOf(req map[string]json.RawMessage) ([]json.RawMessage, bool) {
	var videos []json.RawMessage
	switch {
	case len(req["videos"]) > 0 && req["videos"][0] == '[':
		if json.Unmarshal(req["videos"], &videos) != nil {
			return nil, false
		}
	case len(req["video"]) > 0 && !jsonNull(req["video"]):
		videos = []json.RawMessage{req["video"]}
	case jsonString(req["url"]) != "":
		// No info extraction: a URL becomes an opaque direct video.
		videos = []json.RawMessage{mustJSON(struct {
			Service string `json:"service"`
			ID      string `json:"id"`
		}{"direct", jsonString(req["url"])})}
	default:
		return nil, false
	}
	for i, v := range videos {
		if _, _, ok := videoID(v); !ok {
			return nil, false
		}
		videos[i] = compact(v)
	}
	return videos, true
}

func videoID(v json.RawMessage) (service, id string, ok bool) {
	var x struct {
		Service *string `json:"service"`
		ID      *string `json:"id"`
	}
	if len(v) == 0 || v[0] != '{' || json.Unmarshal(v, &x) != nil || x.Service == nil || x.ID == nil {
		return "", "", false
	}
	return *x.Service, *x.ID, true
}

func sameVideo(a, b json.RawMessage) bool {
	as, ai, ok1 := videoID(a)
	bs, bi, ok2 := videoID(b)
	return ok1 && ok2 && as == bs && ai == bi
}

// jsonString is the value of a JSON string, "" for anything else.
func jsonString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

func jsonNull(raw json.RawMessage) bool { return string(raw) == "null" }

// compact re-serializes a raw value like JSON.stringify (no whitespace).
func compact(raw json.RawMessage) json.RawMessage {
	if raw == nil {
		return nil
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("otttest: " + err.Error())
	}
	return b
}
