package registry

import (
	"testing"

	"github.com/roomlb/roomlb/internal/redistest"
)

// TestOnRedisCluster runs every test of this package again, each on a local
// Redis Cluster of three masters (redistest.NewCluster) instead of one
// redis-server.
func TestOnRedisCluster(t *testing.T) { redistest.RerunOnCluster(t, ".") }
