package nodemonolith

import (
	"io"
	"net/http"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/roomlb/roomlb/internal/redistest"
)

// TestNodeSuite runs the reference monolith's own tests (node --test), so
// that the README's one test command covers them too.
func TestNodeSuite(t *testing.T) {
	if err := Install(Dir(), io.Discard); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("npm", "test", "--silent")
	cmd.Dir = Dir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm test in %s: %v\n%s", Dir(), err, out)
	}
	t.Logf("%s", out)
}

func TestStart(t *testing.T) {
	srv := redistest.New(t)
	p := Start(t, srv.URL())
	if p.HTTPAddr == "" || p.BalancerAddr == "" || p.ID == "" {
		t.Fatalf("started monolith %+v, want both addresses and an id", p)
	}
	res, err := http.Get("http://" + p.HTTPAddr + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET /api/status = %d", res.StatusCode)
	}
	// Its own process group: a terminal's Ctrl-C reaches only its launcher,
	// which stops it when it is done with it.
	pid := p.cmd.Process.Pid
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
		t.Errorf("monolith %d is in process group %d (%v), want its own", pid, pgid, err)
	}
	p.Signal(syscall.SIGTERM)
	exited, err := p.Wait(10 * time.Second)
	if !exited || err != nil {
		t.Fatalf("after SIGTERM: exited %v, err %v; want exit 0", exited, err)
	}
}
