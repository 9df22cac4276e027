package otttest

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/roomlb/roomlb/ott"
)

// roomState is what the monolith stores in room:<name> (§7), field for
// field, in that order. Values a balancer never looks into stay raw JSON.
type roomState struct {
	Name                      string            `json:"name"`
	Title                     string            `json:"title"`
	Description               string            `json:"description"`
	IsTemporary               bool              `json:"isTemporary"`
	Visibility                string            `json:"visibility"`
	QueueMode                 string            `json:"queueMode"`
	CurrentSource             json.RawMessage   `json:"currentSource"` // nil: null
	Queue                     []json.RawMessage `json:"queue"`
	IsPlaying                 bool              `json:"isPlaying"`
	PlaybackPosition          float64           `json:"playbackPosition"`
	PlaybackSpeed             float64           `json:"playbackSpeed"`
	Grants                    json.RawMessage   `json:"grants"`
	UserRoles                 json.RawMessage   `json:"userRoles"`
	Owner                     json.RawMessage   `json:"owner"`
	PlaybackStart             *int64            `json:"_playbackStart"` // Unix ms; counts only while playing
	VideoSegments             json.RawMessage   `json:"videoSegments"`
	AutoSkipSegmentCategories json.RawMessage   `json:"autoSkipSegmentCategories"`
	PrevQueue                 json.RawMessage   `json:"prevQueue"`
	RestoreQueueBehavior      string            `json:"restoreQueueBehavior"`
	EnableVoteSkip            bool              `json:"enableVoteSkip"`
}

// storedFields are the JSON names of roomState: a change of any of them
// schedules the state write.
var storedFields = []string{
	"name", "title", "description", "isTemporary", "visibility", "queueMode", "currentSource",
	"queue", "isPlaying", "playbackPosition", "playbackSpeed", "grants", "userRoles", "owner",
	"_playbackStart", "videoSegments", "autoSkipSegmentCategories", "prevQueue",
	"restoreQueueBehavior", "enableVoteSkip",
}

// syncFields are the fields of a full sync, in the monolith's order (§4.3).
var syncFields = []string{
	"name", "title", "description", "isTemporary", "visibility", "queueMode", "currentSource",
	"queue", "isPlaying", "playbackPosition", "playbackSpeed", "grants", "hasOwner", "voteCounts",
	"videoSegments", "autoSkipSegmentCategories", "prevQueue", "restoreQueueBehavior",
	"enableVoteSkip", "votesToSkip",
}

// Permission bits are opaque to a balancer; the fake checks none.
const (
	defaultGrants    = `[[-1,4194303],[0,4063231],[1,4063231],[2,4194303],[3,4194303],[4,4194303]]`
	defaultUserRoles = `[[2,[]],[3,[]],[4,[]]]`
)

// parseState builds a room from stored state, database settings or
// creation options; absent and null fields take the real room's defaults.
func parseState(name string, raw []byte) (roomState, error) {
	st := roomState{Name: name}
	if err := json.Unmarshal(raw, &st); err != nil {
		return roomState{}, fmt.Errorf("room %s: bad state: %w", name, err)
	}
	st.fillDefaults()
	return st, nil
}

func (st *roomState) fillDefaults() {
	def := func(v *json.RawMessage, d string) {
		if len(*v) == 0 || string(*v) == "null" {
			*v = json.RawMessage(d)
		}
	}
	if st.Visibility == "" {
		st.Visibility = ott.VisibilityPublic
	}
	if st.QueueMode == "" {
		st.QueueMode = "manual"
	}
	if string(st.CurrentSource) == "null" {
		st.CurrentSource = nil
	}
	if st.Queue == nil {
		st.Queue = []json.RawMessage{}
	}
	if st.PlaybackSpeed == 0 {
		st.PlaybackSpeed = 1
	}
	def(&st.Grants, defaultGrants)
	def(&st.UserRoles, defaultUserRoles)
	def(&st.Owner, "null")
	def(&st.VideoSegments, "[]")
	def(&st.AutoSkipSegmentCategories, "[]")
	def(&st.PrevQueue, "null")
	if st.RestoreQueueBehavior == "" {
		st.RestoreQueueBehavior = "prompt"
	}
}

// room is one loaded instance. Guarded by the monolith's mutex.
type room struct {
	st        roomState
	loadEpoch int64
	members   []*client // in join order
	keepAlive time.Time

	dirty      map[string]bool
	syncTimer  *time.Timer
	storeTimer *time.Timer // non-nil: a state write is pending
	syncGen    uint64
	storeGen   uint64
	stopped    bool // for good: its timers are stopped or done
	detached   bool // unloaded by the balancer, its timers still running
}

func newRoom(st roomState, epoch int64, now time.Time) *room {
	return &room{st: st, loadEpoch: epoch, keepAlive: now, dirty: make(map[string]bool)}
}

// stopTimers stops the room for good and reports whether a state write was
// pending (it is dropped).
func (r *room) stopTimers() (pending bool) {
	r.stopped = true
	if r.syncTimer != nil {
		r.syncTimer.Stop()
	}
	pending = r.storeTimer != nil
	if pending {
		r.storeTimer.Stop()
		r.storeTimer = nil
	}
	return pending
}

// metadata is the room's RoomMetadata for loaded and gossip.
func (r *room) metadata() ott.RoomMetadata {
	return ott.RoomMetadata{
		Name:          r.st.Name,
		Title:         r.st.Title,
		Description:   r.st.Description,
		IsTemporary:   r.st.IsTemporary,
		Visibility:    r.st.Visibility,
		QueueMode:     r.st.QueueMode,
		CurrentSource: r.st.CurrentSource,
		Users:         len(r.members),
	}
}

// stateJSON is the room:<name> value.
func (r *room) stateJSON() []byte {
	b, err := json.Marshal(&r.st)
	if err != nil {
		panic("otttest: room state does not marshal: " + err.Error())
	}
	return b
}

func (r *room) hasOwner() bool { return len(r.st.Owner) > 0 && string(r.st.Owner) != "null" }

// position is the playback position now.
func (r *room) position(now time.Time) float64 {
	if r.st.IsPlaying && r.st.PlaybackStart != nil {
		return r.st.PlaybackPosition + float64(now.UnixMilli()-*r.st.PlaybackStart)/1000*r.st.PlaybackSpeed
	}
	return r.st.PlaybackPosition
}

func (r *room) syncValue(field string, now time.Time) any {
	switch field {
	case "name":
		return r.st.Name
	case "title":
		return r.st.Title
	case "description":
		return r.st.Description
	case "isTemporary":
		return r.st.IsTemporary
	case "visibility":
		return r.st.Visibility
	case "queueMode":
		return r.st.QueueMode
	case "currentSource":
		return r.st.CurrentSource
	case "queue":
		return r.st.Queue
	case "isPlaying":
		return r.st.IsPlaying
	case "playbackPosition":
		return r.position(now)
	case "playbackSpeed":
		return r.st.PlaybackSpeed
	case "grants":
		return r.st.Grants
	case "hasOwner":
		return r.hasOwner()
	case "voteCounts":
		return json.RawMessage("[]")
	case "videoSegments":
		return r.st.VideoSegments
	case "autoSkipSegmentCategories":
		return r.st.AutoSkipSegmentCategories
	case "prevQueue":
		return r.st.PrevQueue
	case "restoreQueueBehavior":
		return r.st.RestoreQueueBehavior
	case "enableVoteSkip":
		return r.st.EnableVoteSkip
	case "votesToSkip":
		return 0
	}
	return nil
}

// appendFields appends "field":value members, comma separated, for the
// sync fields include accepts, to an object being written.
func (r *room) appendFields(b []byte, now time.Time, include func(string) bool) []byte {
	for _, f := range syncFields {
		if !include(f) {
			continue
		}
		v, err := json.Marshal(r.syncValue(f, now))
		if err != nil {
			panic("otttest: sync field " + f + ": " + err.Error())
		}
		if b[len(b)-1] != '{' {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, f...)
		b = append(b, '"', ':')
		b = append(b, v...)
	}
	return b
}

// syncJSON is a client "sync" message of the fields include accepts.
func (r *room) syncJSON(now time.Time, include func(string) bool) []byte {
	b := r.appendFields([]byte(`{"action":"sync"`), now, include)
	return append(b, '}')
}

func all(string) bool { return true }

// infoJSON answers GET /api/room/<name>: the full state and the users.
func (r *room) infoJSON(now time.Time) []byte {
	b := r.appendFields([]byte(`{`), now, all)
	users := make([]userInfo, 0, len(r.members))
	for _, c := range r.members {
		users = append(users, c.info())
	}
	u, _ := json.Marshal(users)
	b = append(b, `,"users":`...)
	b = append(b, u...)
	return append(b, '}')
}
