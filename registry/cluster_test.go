package registry

import (
	"os"
	"os/exec"
	"testing"
)

// TestOnRedisCluster runs every test of this package again, each on a local
// Redis Cluster of three masters (redistest.NewCluster) instead of one
// redis-server: this test binary started again with ROOMLB_TEST_CLUSTER=1.
func TestOnRedisCluster(t *testing.T) {
	if onCluster() {
		t.Skip("already on a cluster")
	}
	if testing.Short() {
		t.Skip("runs the whole package again")
	}
	if os.Getenv("REDIS_URL") != "" {
		t.Skip("REDIS_URL names one server")
	}
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s on PATH", bin)
		}
	}
	args := []string{"-test.count=1"}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "ROOMLB_TEST_CLUSTER=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the tests on a Redis Cluster: %v\n%s", err, out)
	}
	t.Logf("the tests on a Redis Cluster:\n%s", out)
}
