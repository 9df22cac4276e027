package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chromium finds Debian's Chromium, or skips: .ci/run installs it.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on PATH (apt-get install -y chromium); .ci/run installs it")
	return ""
}

// headless renders url in headless Chromium, letting its scripts run for
// budget, and returns the DOM; it also saves a screenshot in dir.
func headless(t *testing.T, bin, url, dir string, budget time.Duration) string {
	t.Helper()
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + filepath.Join(dir, "profile"),
		"--virtual-time-budget=" + itoa(int(budget.Milliseconds())),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	shot := exec.CommandContext(ctx, bin, append(args, "--window-size=1200,800", "--screenshot="+filepath.Join(dir, "dashboard.png"), url)...)
	if out, err := shot.CombinedOutput(); err != nil {
		t.Logf("screenshot: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin, append(args, "--dump-dom", url)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	return string(out)
}

func itoa(n int) string {
	s := ""
	for n > 0 || s == "" {
		s = string(rune('0'+n%10)) + s
		n /= 10
	}
	return s
}

// TestDashboard: the routers' dashboard, rendered by headless Chromium,
// shows the nodes and the rooms clients joined, each under the node that
// serves it.
func TestDashboard(t *testing.T) {
	bin := chromium(t)
	c, _ := start(t, 2, 1, nil)
	r := c.Routers[0].Addr
	token := grant(t, r)
	where := map[string]string{}
	for _, room := range []string{"Matinee", "Marathon", "Premiere"} {
		do(t, r, "POST", "/api/room/create", `{"name":"`+room+`","isTemporary":true}`)
		cl, err := join(t, r, strings.ToLower(room), token)
		if err != nil {
			t.Fatal(err)
		}
		cl.mustNext("you")
		where[room] = cl.node
	}
	dir := t.TempDir()
	url := "http://" + c.Routers[0].AdminAddr + "/dashboard"
	dom := headless(t, bin, url, dir, 3*time.Second)
	for _, n := range c.Nodes {
		if !strings.Contains(dom, `data-node="`+n.ID+`"`) {
			t.Errorf("the dashboard does not show node %s", n.ID)
		}
	}
	// Each node's clients and rooms over the last minutes, as a chart.
	if got := strings.Count(dom, `<svg class="history"`); got != len(c.Nodes) {
		t.Errorf("the dashboard has %d history charts, want one per node (%d)", got, len(c.Nodes))
	}
	if !strings.Contains(dom, `<polyline class="clients" points="`) {
		t.Errorf("the history charts draw no clients line")
	}
	for room, node := range where {
		i := strings.Index(dom, `data-node="`+node+`"`)
		j := strings.Index(dom, `data-room="`+strings.ToLower(room)+`"`)
		if i < 0 || j < i {
			t.Errorf("the dashboard does not show %s under %s", room, node)
		}
		if !strings.Contains(dom, ">"+room+"<") {
			t.Errorf("the dashboard does not name room %s", room)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
	if os.Getenv("ROOMLB_KEEP_SCREENSHOT") != "" {
		data, _ := os.ReadFile(filepath.Join(dir, "dashboard.png"))
		os.WriteFile(os.Getenv("ROOMLB_KEEP_SCREENSHOT"), data, 0o644)
	}
}
