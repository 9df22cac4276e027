package otttest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/ott"
)

// Redis keys (ott/PROTOCOL.md §7) and the stand-in for the SQL Rooms table.
const (
	RefDBKey        = "refdb:rooms" // hash: lowercased name -> settings JSON
	LoadEpochKey    = "roommanager:load_epoch"
	roomKeyPrefix   = "room:"
	roomSyncPrefix  = "room-sync:"
	authKeyPrefix   = "auth:"
	loadEpochWrap   = 2147483640 // the real one resets the counter here
	sessionLifetime = 14 * 24 * time.Hour
)

var (
	errRoomNotFound  = errors.New("otttest: room not found")
	errRoomNameTaken = errors.New("otttest: room name taken")
	errStopped       = errors.New("otttest: monolith stopped")
)

func lower(s string) string { return strings.ToLower(s) }

// findLoadedLocked is the first loaded instance whose name matches
// case-insensitively.
func (m *Monolith) findLoadedLocked(name string) *room {
	ln := lower(name)
	for _, r := range m.rooms {
		if lower(r.st.Name) == ln {
			return r
		}
	}
	return nil
}

// getRoom is the room lookup of §4.1, loading the room if needed. There is
// deliberately no lock and no in-flight map: two overlapping lookups of one
// unloaded room both load it. Not called with m.mu held.
func (m *Monolith) getRoom(name string) (*room, error) {
	m.mu.Lock()
	r := m.findLoadedLocked(name)
	m.mu.Unlock()
	if r != nil {
		return r, nil
	}
	st, err := m.lookupState(m.ctx, name)
	if err != nil {
		return nil, err
	}
	if d := m.cfg.LoadDelay; d > 0 {
		select {
		case <-time.After(d):
		case <-m.ctx.Done():
			return nil, errStopped
		}
	}
	return m.addRoom(m.ctx, st)
}

// lookupState finds a room that is not in memory: Redis room:<name> with
// the exact casing, then the database, case-insensitively.
func (m *Monolith) lookupState(ctx context.Context, name string) (roomState, error) {
	raw, err := m.rdb.Get(ctx, roomKeyPrefix+name).Bytes()
	if err == nil {
		return parseState(name, raw)
	}
	if !errors.Is(err, redis.Nil) {
		return roomState{}, err
	}
	settings, err := m.rdb.HGet(ctx, RefDBKey, lower(name)).Bytes()
	if errors.Is(err, redis.Nil) {
		return roomState{}, errRoomNotFound
	}
	if err != nil {
		return roomState{}, err
	}
	st, err := parseState(name, settings)
	st.IsTemporary = false
	return st, err
}

// addRoom gives a new instance its load epoch, adds it and tells every
// balancer.
func (m *Monolith) addRoom(ctx context.Context, st roomState) (*room, error) {
	epoch, err := m.rdb.Incr(ctx, LoadEpochKey).Result()
	if err != nil {
		return nil, fmt.Errorf("load epoch: %w", err)
	}
	if epoch >= loadEpochWrap {
		m.rdb.Set(ctx, LoadEpochKey, 0, 0)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errStopped
	}
	r := newRoom(st, epoch, time.Now())
	m.rooms = append(m.rooms, r)
	// Like the real room, a new instance has every field changed: a sync
	// broadcast 50 ms later, which starts its first state write.
	m.changedLocked(r, storedFields...)
	// Looked up by name again, as the real one does: with a duplicate, loaded
	// reports the first instance (§8 item 4).
	first := m.findLoadedLocked(r.st.Name)
	m.sendAllLocked(ott.TypeLoaded, ott.Loaded{Room: first.metadata(), LoadEpoch: first.loadEpoch}.Append(nil))
	m.log.Info("room loaded", logRoom, r.st.Name, "epoch", epoch)
	return r, nil
}

// createRoom creates a room over HTTP (§4.1): taken if loaded here, in the
// database or in Redis.
func (m *Monolith) createRoom(ctx context.Context, st roomState) (*room, error) {
	m.mu.Lock()
	taken := m.findLoadedLocked(st.Name) != nil
	m.mu.Unlock()
	if !taken {
		inDB, err := m.rdb.HExists(ctx, RefDBKey, lower(st.Name)).Result()
		if err != nil {
			return nil, err
		}
		n, err := m.rdb.Exists(ctx, roomKeyPrefix+st.Name).Result()
		if err != nil {
			return nil, err
		}
		taken = inDB || n > 0
	}
	if taken {
		return nil, errRoomNameTaken
	}
	if !st.IsTemporary {
		settings, _ := json.Marshal(dbSettings{Name: st.Name, Title: st.Title, Description: st.Description, Visibility: st.Visibility, QueueMode: st.QueueMode})
		if err := m.rdb.HSet(ctx, RefDBKey, lower(st.Name), settings).Err(); err != nil {
			return nil, err
		}
	}
	return m.addRoom(ctx, st)
}

// dbSettings is a permanent room in refdb:rooms.
type dbSettings struct {
	Name        string `json:"name"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Visibility  string `json:"visibility"`
	QueueMode   string `json:"queueMode"`
}

// unloadCommandedLocked is the B2M unload (§4.6): kick 1001, unloaded to
// all at once; room:<name> kept. The instance leaves the monolith but its
// timers do not stop, as in the real one: a sync still due (a change in the
// last 50 ms) fires and starts the state write, and a pending state write
// still lands StateDebounce later with the state as of the unload. It may
// then overwrite what a newer instance of the room, loaded in between, has
// written (a real flaw).
func (m *Monolith) unloadCommandedLocked(r *room) {
	m.detachLocked(r, ott.UnloadCommanded)
	if r.syncTimer != nil || r.storeTimer != nil {
		r.detached = true
		m.unloaded = append(m.unloaded, r)
		m.log.Info("pending sync or state write kept (Commanded unload)", logRoom, r.st.Name)
	} else {
		r.stopTimers()
	}
	m.log.Info("room unloaded", logRoom, r.st.Name, logReason, ott.UnloadCommanded)
	m.sendAllLocked(ott.TypeUnloaded, ott.Unloaded{Name: r.st.Name, Reason: ott.UnloadCommanded}.Append(nil))
}

// settleLocked forgets an instance unloaded by the balancer once it has no
// timer left.
func (m *Monolith) settleLocked(r *room) {
	if r.detached && r.syncTimer == nil && r.storeTimer == nil {
		r.stopped = true
		m.unloaded = slices.DeleteFunc(m.unloaded, func(x *room) bool { return x == r })
	}
}

// unload unloads one instance for the other reasons, Keepalive and Admin:
// a pending write is flushed, then the keys are deleted. A Keepalive unload
// is refused while the room has users. Not called with m.mu held.
func (m *Monolith) unload(ctx context.Context, r *room, reason ott.UnloadReason) bool {
	m.mu.Lock()
	if m.closed || !slices.Contains(m.rooms, r) {
		m.mu.Unlock()
		return false
	}
	if reason == ott.UnloadKeepalive && len(r.members) > 0 {
		m.log.Warn("keepalive unload refused: users present", logRoom, r.st.Name, "users", len(r.members))
		m.mu.Unlock()
		return false
	}
	m.detachLocked(r, reason)
	pending := r.stopTimers()
	name, state := r.st.Name, r.stateJSON()
	m.mu.Unlock()

	if pending {
		m.writeState(ctx, name, state)
	}
	if err := m.rdb.Del(ctx, roomKeyPrefix+name, roomSyncPrefix+name).Err(); err != nil {
		m.log.Error("delete room state", logRoom, name, logErr, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log.Info("room unloaded", logRoom, name, logReason, reason)
	if !m.closed {
		m.sendAllLocked(ott.TypeUnloaded, ott.Unloaded{Name: name, Reason: reason}.Append(nil))
	}
	return true
}

// detachLocked kicks the room's members (1001 for Commanded, 4003
// otherwise) and removes the instance; its timers run on.
func (m *Monolith) detachLocked(r *room, reason ott.UnloadReason) {
	code := ott.CloseRoomUnloaded
	if reason == ott.UnloadCommanded {
		code = ott.CloseAway
	}
	for _, c := range slices.Clone(r.members) {
		m.kickLocked(c, code, false)
	}
	if i := slices.Index(m.rooms, r); i >= 0 {
		m.rooms = slices.Delete(m.rooms, i, i+1)
	}
}

func (m *Monolith) writeState(ctx context.Context, name string, state []byte) {
	if err := m.rdb.Set(ctx, roomKeyPrefix+name, state, m.cfg.RoomExpire).Err(); err != nil {
		m.log.Error("write room state", logRoom, name, logErr, err)
	}
}

// changedLocked marks fields of a room changed: a sync of them goes out
// syncDebounce after the last change (a trailing debounce), unless the room
// tick syncs them first.
func (m *Monolith) changedLocked(r *room, fields ...string) {
	if r.stopped || r.detached {
		return
	}
	for _, f := range fields {
		r.dirty[f] = true
	}
	r.syncGen++
	gen := r.syncGen
	if r.syncTimer != nil {
		r.syncTimer.Stop()
	}
	r.syncTimer = m.afterFunc(syncDebounce, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if r.stopped || r.syncGen != gen || m.closed {
			return
		}
		r.syncTimer = nil
		m.syncDirtyLocked(r)
		m.settleLocked(r)
	})
}

// syncDirtyLocked broadcasts the changed fields and, if one of them is
// stored, (re)starts the state write: room:<name> is written StateDebounce
// after the last sync of a stored field (a trailing debounce), so about
// StateDebounce+50ms after the last change.
func (m *Monolith) syncDirtyLocked(r *room) {
	if len(r.dirty) == 0 {
		return
	}
	payload := r.syncJSON(time.Now(), func(f string) bool { return r.dirty[f] })
	store := slices.ContainsFunc(storedFields, func(f string) bool { return r.dirty[f] })
	clear(r.dirty)
	m.broadcastLocked(r, payload)
	if store {
		m.storeLaterLocked(r)
	}
}

// storeLaterLocked (re)starts the debounced state write.
func (m *Monolith) storeLaterLocked(r *room) {
	r.storeGen++
	gen := r.storeGen
	if r.storeTimer != nil {
		r.storeTimer.Stop()
	}
	r.storeTimer = m.afterFunc(m.cfg.StateDebounce+m.cfg.WriteLate, func() {
		m.mu.Lock()
		if r.stopped || r.storeGen != gen || m.closed {
			m.mu.Unlock()
			return
		}
		r.storeTimer = nil
		m.settleLocked(r)
		name, state := r.st.Name, r.stateJSON()
		m.mu.Unlock()
		m.writeState(m.ctx, name, state)
	})
}

// tick is the real room manager's loop, every TickInterval: each loaded
// room is updated (see updateLocked), then synced at once.
func (m *Monolith) tick() {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	for _, r := range m.rooms {
		m.updateLocked(r, now)
		m.syncDirtyLocked(r)
	}
}

// gossipFrameLocked lists every loaded instance (§4.7).
func (m *Monolith) gossipFrameLocked() []byte {
	g := ott.Gossip{Rooms: make([]ott.GossipRoom, 0, len(m.rooms))}
	for _, r := range m.rooms {
		g.Rooms = append(g.Rooms, ott.GossipRoom{Room: r.metadata(), LoadEpoch: r.loadEpoch})
	}
	return g.Append(nil)
}

func (m *Monolith) gossipAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.shuttingDown {
		return
	}
	m.sendAllLocked(ott.TypeGossip, m.gossipFrameLocked())
}

// keepalive is the periodic reaper (§4.7): the stamp is refreshed at most
// every UnloadAfter/2 while the room has users; a room whose stamp is older
// than UnloadAfter is unloaded Keepalive.
func (m *Monolith) keepalive() {
	now := time.Now()
	var stale []*room
	m.mu.Lock()
	for _, r := range m.rooms {
		if len(r.members) > 0 && now.Sub(r.keepAlive) >= m.cfg.UnloadAfter/2 {
			r.keepAlive = now
			name := r.st.Name
			m.goLocked(func() {
				if err := m.rdb.Expire(m.ctx, roomKeyPrefix+name, m.cfg.RoomExpire).Err(); err != nil {
					m.log.Error("expire room state", logRoom, name, logErr, err)
				}
			})
		}
		if now.Sub(r.keepAlive) > m.cfg.UnloadAfter {
			stale = append(stale, r)
		}
	}
	m.mu.Unlock()
	for _, r := range stale {
		m.unload(m.ctx, r, ott.UnloadKeepalive)
	}
}
