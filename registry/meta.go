package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

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
	return r.fencedWrite(ctx, l, r.metaKey(l.Room), []string{
		"name", m.Name,
		"visibility", m.Visibility,
		"users", strconv.Itoa(m.Users),
		"metadata", string(m.Metadata),
	})
}

// fencedWrite replaces the hash key (a key of the lease's room) with fields,
// only if the lease's epoch is the room's current one.
func (r *Registry) fencedWrite(ctx context.Context, l Lease, key string, fields []string) error {
	args := make([]any, 0, 2+len(fields))
	args = append(args, l.epoch(), ms(r.metaTTL))
	for _, f := range fields {
		args = append(args, f)
	}
	a, err := toReply(lua.FencedWrite.Run(ctx, r.rdb, []string{r.ownerKey(l.Room), key}, args...).Result())
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

// Rooms lists every owned room with its owner and metadata. It scans the
// keyspace (SCAN, in pages of 1,000), so it is for operators and for caches
// refreshed at most every second or so, not for a request path.
func (r *Registry) Rooms(ctx context.Context) ([]Room, error) {
	match := r.prefix + "room:{*}"
	var keys []string
	iter := r.rdb.Scan(ctx, 0, match, 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("rooms: %w", err)
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
	return out, nil
}
