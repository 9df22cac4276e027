package sidecar

import "sync"

// table is the node's room table: its rooms and clients, and what is in
// flight for them between the node, Redis and the monolith. mu guards every
// field, and the rules that keep rooms safe are kept by code that holds
// it: a lease fenced or released is retired and never adopted again
// (retire, retiredAt), a room leaves the table before its release is sent
// (releaseRoom), no unload goes to the monolith for a room it does not
// hold (sendUnload, unloading).
type table struct {
	mu      sync.Mutex
	rooms   map[string]*room   // by key (lower-case name)
	clients map[string]*client // by client id
	// unloading holds the rooms an unload was sent for and no unloaded or
	// gossip has confirmed yet: a second unload would kill the monolith,
	// and a stale gossip listing them must not make the node claim them.
	unloading map[string]bool
	// retired holds, room by room, the last epoch this node fenced or
	// released until Redis has surely forgotten it: never adopted again.
	retired map[string]*retiredLease
	// orphanLoads maps the client id of a loading join whose client left
	// to its room: the kick that may still come for it fails the load.
	orphanLoads map[string]*room
	link        *link // nil while the monolith link is down
	draining    bool
	// genSeq counts the losses of the registry this node has seen: a
	// claim or reclaim sent before one must not extend a lease after it.
	// staleUntil is the lease clock time the rooms of the lost generation
	// may be served until unless re-claimed.
	genSeq     uint64
	staleUntil int64
	// grants counts the leases this node was granted (room.grant), so that
	// the heartbeat checks them oldest first (registry.BeatVerified).
	grants uint64
}

// locked is the sidecar while its table's lock is held. What must run under
// the lock is a method of locked, and only lock makes one: code without the
// lock cannot call it.
type locked struct {
	*Sidecar
	// lock hides Sidecar.lock: a method of locked that took the lock again
	// would deadlock, so it does not compile. (What runs later without the
	// lock, a goroutine or a timer, names s.Sidecar.)
	lock struct{}
}

// lock takes the table's lock; unlock gives it back.
func (s *Sidecar) lock() locked { s.mu.Lock(); return locked{Sidecar: s} }

func (s locked) unlock() { s.mu.Unlock() }
