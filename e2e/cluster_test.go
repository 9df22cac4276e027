package e2e

import (
	"strings"
	"testing"

	"github.com/roomlb/roomlb/internal/redistest"
)

// clusterTests run again with the registry on a local Redis Cluster of
// three masters (the monoliths keep one server, as OpenTogetherTube's own
// Redis): a room loaded from its state, a thundering herd on a new room, a
// failover (a router's steal), a drain (transfers, handoffs) and moves
// carried over by the router, through routers and sidecars whose registry
// is sharded. (All of the flows and drain tests pass there, in twice the
// time.)
var clusterTests = []string{
	"TestJoinUnloadedRoom", "TestThunderingJoins", "TestOwnerKilledFailover",
	"TestChatOnlyDrainIsQuick", "TestMovesAreInvisible",
}

// TestOnRedisCluster runs clusterTests again in a new process, where
// start puts the registry on a Redis Cluster.
func TestOnRedisCluster(t *testing.T) {
	redistest.RerunOnCluster(t, "^("+strings.Join(clusterTests, "|")+")$")
}
