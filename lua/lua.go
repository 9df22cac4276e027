// Package lua holds the Redis scripts that make every ownership change of
// roomlb atomic: one .lua file per operation, embedded, each prefixed with
// prelude.lua (the epoch allocator, the owner value and the event publisher
// they share).
//
// Scripts are go-redis Script objects: Run sends EVALSHA and falls back to
// EVAL when the server answers NOSCRIPT (after a restart or SCRIPT FLUSH).
// Every key a script touches is passed in KEYS; the keys of one room share a
// hash tag, and no script touches keys of two hash slots (Redis Cluster).
// The registry package is the only caller.
package lua

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed prelude.lua
	prelude string

	//go:embed admit.lua
	admit string
	//go:embed birth.lua
	birth string
	//go:embed claim.lua
	claim string
	//go:embed mark.lua
	mark string
	//go:embed release.lua
	release string
	//go:embed transfer.lua
	transfer string
	//go:embed fenced_write.lua
	fencedWrite string
	//go:embed heartbeat.lua
	heartbeat string
	//go:embed deregister.lua
	deregister string
	//go:embed prune.lua
	prune string
	//go:embed reclaim.lua
	reclaim string
	//go:embed drop.lua
	drop string
)

// The scripts. Their calling conventions (KEYS, ARGV, replies) are documented
// at the top of each .lua file.
var (
	Admit       = script(admit)
	Birth       = script(birth)
	Claim       = script(claim)
	Mark        = script(mark)
	Release     = script(release)
	Transfer    = script(transfer)
	FencedWrite = script(fencedWrite)
	Heartbeat   = script(heartbeat)
	Deregister  = script(deregister)
	Prune       = script(prune)
	Reclaim     = script(reclaim)
	Drop        = script(drop)
)

// All lists every script, for tests and for preloading.
var All = map[string]*redis.Script{
	"admit":        Admit,
	"birth":        Birth,
	"claim":        Claim,
	"mark":         Mark,
	"release":      Release,
	"transfer":     Transfer,
	"fenced_write": FencedWrite,
	"heartbeat":    Heartbeat,
	"deregister":   Deregister,
	"prune":        Prune,
	"reclaim":      Reclaim,
	"drop":         Drop,
}

func script(body string) *redis.Script {
	return redis.NewScript(prelude + "\n" + body)
}
