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

// Redis keys (ott-protocol.md §6) and the stand-in for the SQL Rooms table.
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

// getRoom is the room lookup of §3.1, loading the room if needed. There is
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
	// broadcast 50 ms later and its first state write StateDebounce later.
	m.changedLocked(r, storedFields...)
	// Looked up by name again, as the real one does: with a duplicate, loaded
	// reports the first instance (§7 item 4).
	first := m.findLoadedLocked(r.st.Name)
	m.sendAllLocked(ott.TypeLoaded, ott.Loaded{Room: first.metadata(), LoadEpoch: first.loadEpoch}.Append(nil))
	m.log.Info("room loaded", logRoom, r.st.Name, "epoch", epoch)
	return r, nil
}

// createRoom creates a room over HTTP (§3.1): taken if loaded here, in the
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

// unloadCommandedLocked is the B2M unload (§3.6): kick 1001, unloaded to
// all at once; room:<name> kept, the pending write dropped.
func (m *Monolith) unloadCommandedLocked(r *room) {
	if m.detachLocked(r, ott.UnloadCommanded) {
		m.log.Info("pending state write dropped (Commanded unload)", logRoom, r.st.Name)
	}
	m.log.Info("room unloaded", logRoom, r.st.Name, logReason, ott.UnloadCommanded)
	m.sendAllLocked(ott.TypeUnloaded, ott.Unloaded{Name: r.st.Name, Reason: ott.UnloadCommanded}.Append(nil))
}

// unload unloads one instance for the other reasons: Shutdown writes the
// state; Keepalive and Admin flush a pending write and delete the keys. A
// Keepalive unload is refused while the room has users. Not called with
// m.mu held.
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
	pending := m.detachLocked(r, reason)
	name, state := r.st.Name, r.stateJSON()
	m.mu.Unlock()

	if reason == ott.UnloadShutdown || pending {
		m.writeState(ctx, name, state)
	}
	if reason != ott.UnloadShutdown {
		if err := m.rdb.Del(ctx, roomKeyPrefix+name, roomSyncPrefix+name).Err(); err != nil {
			m.log.Error("delete room state", logRoom, name, logErr, err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log.Info("room unloaded", logRoom, name, logReason, reason)
	if !m.closed {
		m.sendAllLocked(ott.TypeUnloaded, ott.Unloaded{Name: name, Reason: reason}.Append(nil))
	}
	return true
}

// detachLocked kicks the room's members (1001 for Commanded and Shutdown,
// 4003 otherwise), removes the instance and stops its timers. It reports
// whether a state write was pending.
func (m *Monolith) detachLocked(r *room, reason ott.UnloadReason) (pending bool) {
	code := ott.CloseRoomUnloaded
	if reason == ott.UnloadCommanded || reason == ott.UnloadShutdown {
		code = ott.CloseAway
	}
	for _, c := range slices.Clone(r.members) {
		m.kickLocked(c, code, false)
	}
	if i := slices.Index(m.rooms, r); i >= 0 {
		m.rooms = slices.Delete(m.rooms, i, i+1)
	}
	return r.stopTimers()
}

func (m *Monolith) writeState(ctx context.Context, name string, state []byte) {
	if err := m.rdb.Set(ctx, roomKeyPrefix+name, state, m.cfg.RoomExpire).Err(); err != nil {
		m.log.Error("write room state", logRoom, name, logErr, err)
	}
}

// changedLocked marks fields of a room changed: a sync of them goes out
// syncDebounce after the last change, and the state is written StateDebounce
// after the last change (a trailing debounce).
func (m *Monolith) changedLocked(r *room, fields ...string) {
	if r.stopped {
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
	})
	r.storeGen++
	sgen := r.storeGen
	if r.storeTimer != nil {
		r.storeTimer.Stop()
	}
	r.storeTimer = m.afterFunc(m.cfg.StateDebounce, func() {
		m.mu.Lock()
		if r.stopped || r.storeGen != sgen || m.closed {
			m.mu.Unlock()
			return
		}
		r.storeTimer = nil
		name, state := r.st.Name, r.stateJSON()
		m.mu.Unlock()
		m.writeState(m.ctx, name, state)
	})
}

// syncDirtyLocked broadcasts the changed fields.
func (m *Monolith) syncDirtyLocked(r *room) {
	if len(r.dirty) == 0 {
		return
	}
	payload := r.syncJSON(time.Now(), func(f string) bool { return r.dirty[f] })
	clear(r.dirty)
	m.broadcastLocked(r, payload)
}

// gossipFrameLocked lists every loaded instance (§3.7).
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

// keepalive is the periodic reaper (§3.7): the stamp is refreshed at most
// every UnloadAfter/2 while the room has users; a room whose stamp is older
// than UnloadAfter is unloaded Keepalive.
func (m *Monolith) keepalive() {
	now := time.Now()
	var stale []*room
	m.mu.Lock()
	if m.shuttingDown {
		m.mu.Unlock()
		return
	}
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
