package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/lua"
)

// Meta is what the registry keeps about a loaded room, from the monolith's
// `loaded` and `gossip` messages: enough for /api/room/list and operators.
type Meta struct {
	// Name is the canonical casing of the room's name.
	Name       string
	Visibility string
	Users      int
	// Metadata is the monolith's RoomMetadata object, verbatim.
	Metadata json.RawMessage
	// Epoch is the epoch of the owner that wrote it (set by the registry).
	Epoch int64
}

// WriteMeta stores the room's metadata, fenced: it is refused with an
// *OwnerError (ErrStaleEpoch) unless the lease's epoch is the room's current
// one, and then nothing changes.
func (r *Registry) WriteMeta(ctx context.Context, l Lease, m Meta) error {
	if err := l.check(); err != nil {
		return err
	}
	if len(m.Metadata) > 0 && !json.Valid(m.Metadata) {
		return fmt.Errorf("write meta %s: metadata is not valid JSON", l.Room)
	}
	cmd := lua.FencedWrite.Run(ctx, r.rdb, r.metaKeys(l.Room), r.metaArgs(l, m)...)
	return r.fencedReply(l, cmd)
}

// LeaseMeta is one room's metadata written by WriteMetas.
type LeaseMeta struct {
	Lease Lease
	Meta  Meta
}

// WriteMetas writes the metadata of many rooms, each fenced as WriteMeta,
// in one round trip. It returns one error per entry (nil when written), or
// a single error when the round trip itself failed.
func (r *Registry) WriteMetas(ctx context.Context, ms []LeaseMeta) ([]error, error) {
	calls := make([]*scriptCall, len(ms))
	errs := make([]error, len(ms))
	for i, lm := range ms {
		if err := lm.Lease.check(); err != nil {
			return nil, err
		}
		if len(lm.Meta.Metadata) > 0 && !json.Valid(lm.Meta.Metadata) {
			return nil, fmt.Errorf("write meta %s: metadata is not valid JSON", lm.Lease.Room)
		}
		calls[i] = &scriptCall{
			keys: r.metaKeys(lm.Lease.Room),
			args: r.metaArgs(lm.Lease, lm.Meta),
		}
	}
	if err := r.pipeline(ctx, lua.FencedWrite, calls); err != nil && !isScriptReplyError(err) {
		return nil, fmt.Errorf("write metadata of %d rooms: %w", len(ms), err)
	}
	for i, c := range calls {
		errs[i] = r.fencedReply(ms[i].Lease, c.cmd)
	}
	return errs, nil
}

// isScriptReplyError tells a pipeline whose round trip worked (some calls
// refused) from one that failed.
func isScriptReplyError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !redis.HasErrorPrefix(err, "NOSCRIPT") && !errors.Is(err, ErrNotReplicated)
}

// metaKeys are the fenced_write keys of a metadata write.
func (r *Registry) metaKeys(room string) []string {
	return []string{r.ownerKey(room), r.metaKey(room), r.epochKey(room)}
}

// metaArgs are the fenced_write arguments of a metadata write: the room was
// loaded, so its epoch counter is kept for EpochTTL from now.
func (r *Registry) metaArgs(l Lease, m Meta) []any {
	return []any{l.epoch(), ms(r.metaTTL), ms(r.epochTTL),
		"name", m.Name,
		"visibility", m.Visibility,
		"users", strconv.Itoa(m.Users),
		"metadata", string(boundMetadata(m.Metadata)),
	}
}

// fencedReply reads a fenced_write's answer.
func (r *Registry) fencedReply(l Lease, cmd *redis.Cmd) error {
	a, err := toReply(cmd.Result())
	if err != nil {
		return fmt.Errorf("fenced write %s: %w", l.Room, err)
	}
	if a.int(0) == 1 {
		return nil
	}
	err = refused(l.Room, a.str(1), ErrStaleEpoch)
	var oe *OwnerError
	if errors.As(err, &oe) {
		oe.Err = ErrStaleEpoch
	}
	return err
}

// Meta reads a room's metadata; a room without any gives ok false.
func (r *Registry) Meta(ctx context.Context, room string) (m Meta, ok bool, err error) {
	room, err = RoomKey(room)
	if err != nil {
		return Meta{}, false, err
	}
	h, err := r.rdb.HGetAll(ctx, r.metaKey(room)).Result()
	if err != nil {
		return Meta{}, false, fmt.Errorf("meta %s: %w", room, err)
	}
	if len(h) == 0 {
		return Meta{}, false, nil
	}
	return parseMeta(h), true, nil
}

func parseMeta(h map[string]string) Meta {
	m := Meta{Name: h["name"], Visibility: h["visibility"]}
	m.Users, _ = strconv.Atoi(h["users"])
	m.Epoch, _ = strconv.ParseInt(h["epoch"], 10, 64)
	if s := h["metadata"]; s != "" {
		m.Metadata = json.RawMessage(s)
	}
	return m
}

// Room is one owned room, as listed by Rooms.
type Room struct {
	Room  string // key form
	Owner Owner
	Meta  Meta // zero when the owner has written none
}

// Rooms lists every owned room with its owner and metadata: rooms whose
// owner's session has ended are left out (housekeeping drops their keys in
// time, see DropStale). It scans the
// keyspace (SCAN, in pages of 1,000), so it is for operators and for caches
// refreshed at most every second or so, not for a request path.
func (r *Registry) Rooms(ctx context.Context) ([]Room, error) {
	match := r.prefix + "room:{*}"
	masters, err := r.masters(ctx)
	if err != nil {
		return nil, fmt.Errorf("rooms: %w", err)
	}
	var keys []string
	for _, m := range masters {
		iter := m.Scan(ctx, 0, match, 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return nil, fmt.Errorf("rooms: %w", err)
		}
	}
	var out []Room
	const page = 1000
	for start := 0; start < len(keys); start += page {
		part := keys[start:min(start+page, len(keys))]
		gets := make([]*redis.StringCmd, len(part))
		metas := make([]*redis.MapStringStringCmd, len(part))
		_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range part {
				gets[i] = p.Get(ctx, k)
				metas[i] = p.HGetAll(ctx, k+":meta")
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("rooms: %w", err)
		}
		for i, k := range part {
			v, err := gets[i].Result()
			if err != nil {
				continue // released between SCAN and GET
			}
			o, err := parseOwner(v)
			if err != nil {
				continue
			}
			room := k[len(r.prefix)+len("room:{") : len(k)-1]
			rm := Room{Room: room, Owner: o}
			if h := metas[i].Val(); len(h) > 0 {
				rm.Meta = parseMeta(h)
			}
			out = append(out, rm)
		}
	}
	return r.liveOnly(ctx, out)
}

// liveOnly keeps the rooms whose owner's session lives.
func (r *Registry) liveOnly(ctx context.Context, rooms []Room) ([]Room, error) {
	owners := make([]Owner, len(rooms))
	for i, rm := range rooms {
		owners[i] = rm.Owner
	}
	sessions, err := r.sessions(ctx, owners)
	if err != nil {
		return nil, fmt.Errorf("rooms: %w", err)
	}
	return slices.DeleteFunc(rooms, func(rm Room) bool {
		return sessions[rm.Owner.Node] != rm.Owner.Session
	}), nil
}

// MaxMetadata bounds the RoomMetadata the registry keeps per room, in
// bytes: /api/room/list returns every public room's, so one room with a
// huge title or description must not make the list huge for every client.
const MaxMetadata = 4 << 10

// maxMetaString bounds each string of a RoomMetadata that is over
// MaxMetadata (a title, a description, a video's description).
const maxMetaString = 256

// boundMetadata returns metadata as it is when it is within MaxMetadata;
// else with every string cut to maxMetaString bytes (at a character
// boundary, marked with an ellipsis); else with only its top-level numbers,
// booleans and short strings.
func boundMetadata(metadata json.RawMessage) json.RawMessage {
	if len(metadata) <= MaxMetadata {
		return metadata
	}
	var v map[string]any
	if json.Unmarshal(metadata, &v) != nil {
		return nil
	}
	if b, err := json.Marshal(cutStrings(v)); err == nil && len(b) <= MaxMetadata {
		return b
	}
	flat := map[string]any{}
	for k, x := range v {
		switch x := x.(type) {
		case string, float64, bool, nil:
			flat[k] = x
		}
	}
	if b, err := json.Marshal(flat); err == nil && len(b) <= MaxMetadata {
		return b
	}
	return nil
}

// cutStrings cuts every string in v to maxMetaString bytes.
func cutStrings(v any) any {
	switch x := v.(type) {
	case string:
		if len(x) <= maxMetaString {
			return x
		}
		cut := maxMetaString
		for cut > 0 && !utf8.RuneStart(x[cut]) {
			cut--
		}
		return x[:cut] + "…"
	case map[string]any:
		for k, e := range x {
			x[k] = cutStrings(e)
		}
	case []any:
		for i, e := range x {
			x[i] = cutStrings(e)
		}
	}
	return v
}
