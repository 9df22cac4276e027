// Package chaos is roomlb's fault run (`roomlb chaos`): it starts a whole
// cluster on loopback as separate processes (redis-server, Node reference
// monoliths each with a `roomlb sidecar`, `roomlb router`s), drives it with
// OpenTogetherTube-like clients that chat, leave and rejoin as the browser
// does, injects faults one after another with steady phases in between
// (SIGKILL and SIGSTOP of every kind of process, Redis pauses, restarts and
// FLUSHALL, a slow or stalled link between a sidecar and Redis, a drain
// storm), and checks the project's safety and liveness promises from what
// it recorded: the sidecars' serve logs and the clients' own records.
//
// A run is a sequence of phases, one per heartbeat TTL (Config.HeartbeatTTLs),
// each on a fresh cluster. Within a phase, each fault is injected, held,
// healed; the run then waits until every client is served again (bounded),
// keeps a steady phase in which no chat may be lost, and goes on with the
// next fault. The invariants are checked after the phase, from the records:
// see check.go and servelog.go for what each one means exactly.
package chaos
