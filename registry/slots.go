package registry

import (
	"strconv"
	"sync"
	"sync/atomic"
)

// Redis Cluster shards keys by hash slot: CRC16 (XMODEM) of the key's hash
// tag (the part between the first "{" and the next "}", when not empty; the
// whole key otherwise), modulo 16384. A script may touch keys of one slot
// only, so every key the registry changes together shares a tag: a room's
// keys have the room's, the node keys and everything fleet-wide have
// "fleet", and each slot has a mark key (slotMarkKey) whose tag is chosen
// to fall in that slot. The registry uses the same keys on a single Redis.

// Slots is the number of hash slots of Redis Cluster.
const Slots = 16384

var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

func crc16(s string) uint16 {
	var c uint16
	for i := 0; i < len(s); i++ {
		c = c<<8 ^ crcTable[byte(c>>8)^s[i]]
	}
	return c
}

// keySlot is the hash slot of key, as Redis Cluster computes it.
func keySlot(key string) int {
	for i := 0; i < len(key); i++ {
		if key[i] != '{' {
			continue
		}
		for j := i + 1; j < len(key); j++ {
			if key[j] == '}' {
				if j > i+1 {
					key = key[i+1 : j]
				}
				return int(crc16(key) % Slots)
			}
		}
		break
	}
	return int(crc16(key) % Slots)
}

// RoomSlot is the hash slot of room's keys (room in key form).
func RoomSlot(room string) int { return int(crc16(room) % Slots) }

// slotTags holds, for each slot, the smallest decimal number whose CRC16
// falls in it: the hash tag of that slot's mark keys. Finding all 16384
// takes about 170,000 CRCs, once.
var slotTags = sync.OnceValue(func() []string {
	tags := make([]string, Slots)
	left := Slots
	for n := 0; left > 0; n++ {
		s := strconv.Itoa(n)
		if slot := crc16(s) % Slots; tags[slot] == "" {
			tags[slot] = s
			left--
		}
	}
	return tags
})

// bornSlots remembers the slots this process has seen in use (their bit
// set in the fleet's slot bitmap, see admit.lua), so that a claim of a room
// of such a slot skips admit and takes one round trip. A stale entry makes
// a claim skip only what a slot in use needs no more: its mark was set
// before its bit, so a mark missing then is a loss (claim.lua's recovery
// window) either way. A bit is lost only with the fleet's generation: a
// heartbeat (Beat) that reports a new generation forgets every slot, so
// that the owner's next claims set the bits again (its rooms of before are
// re-claimed, which sets theirs).
type bornSlots struct {
	mu   sync.Mutex
	gen  string
	bits [Slots / 64]atomic.Uint64
}

func (b *bornSlots) has(slot int) bool { return b.bits[slot/64].Load()&(1<<(slot%64)) != 0 }

func (b *bornSlots) add(slot int) { b.bits[slot/64].Or(1 << (slot % 64)) }

// sawGeneration forgets every slot when gen is not the generation seen
// before.
func (b *bornSlots) sawGeneration(gen string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if gen == b.gen {
		return
	}
	b.gen = gen
	for i := range b.bits {
		b.bits[i].Store(0)
	}
}
