package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/internal/roomlbtest"
)

// TestDev runs `roomlb dev` as a newcomer would, from a terminal: it comes
// up and prints what to open and how to reach it with roomlb ctl; a
// WebSocket client joins a room through a router and gets the sync; the
// printed ctl line works (nodes, and drain with the printed secret); the
// printed dashboard answers, and so does the admin address alone. Then
// Ctrl-C, which a terminal sends to the whole foreground process group:
// roomlb drains and stops everything itself, in order, so nothing logs a
// connection error, no process is left and no port still accepts.
func TestDev(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two whole clusters of processes (about 20 s)")
	}
	bin := roomlbtest.Binary(t)
	t.Run("redis-server", func(t *testing.T) { testDev(t, bin, "") })
	// What a machine without redis-server gets; a secret of one's own,
	// which the printed ctl line quotes for the shell.
	t.Run("embedded redis", func(t *testing.T) { testDev(t, bin, "dev's-secret", "--embedded-redis") })
}

// What the operator of issue 14 saw on Ctrl-C, once the monoliths and Redis
// had died with the sidecars.
var devShutdownNoise = []string{"connection refused", "ECONNREFUSED", "pool.go", "no nodes to hand rooms to", "level=ERROR"}

func testDev(t *testing.T, bin, secret string, args ...string) {
	args = append([]string{"dev", "--nodes", "3", "--routers", "2"}, args...)
	if secret != "" {
		args = append(args, "--secret", secret)
	}
	cmd := exec.Command(bin, args...)
	// A terminal runs a command as the foreground process group of its own.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = append(os.Environ(), "ROOMLB_SECRET=") // only --secret
	var output roomlbtest.Buffer                     // stdout and stderr, for the noise check
	cmd.Stderr = io.MultiWriter(&output, &testWriter{t})
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) }) // its children die with it (parent-death signal)
	done := make(chan error, 1)
	var mu sync.Mutex
	var lines []string
	up := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := sc.Text()
			output.Write([]byte(l + "\n"))
			t.Log(l)
			mu.Lock()
			lines = append(lines, l)
			mu.Unlock()
			if strings.HasPrefix(l, "roomlb dev: up") {
				close(up)
			}
		}
		done <- cmd.Wait()
	}()
	select {
	case <-up:
	case err := <-done:
		t.Fatalf("roomlb dev exited before it was up: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("roomlb dev not up within 60s")
	}
	mu.Lock()
	printed := append([]string(nil), lines...)
	mu.Unlock()

	// One line per component, the routers first; then what to open and the
	// ctl line.
	if len(printed) < 2 || !strings.HasPrefix(printed[0], "router: http://127.0.0.1:") || !strings.HasPrefix(printed[1], "router: ") {
		t.Fatalf("output starts %q, want the two routers first", printed)
	}
	field := func(prefix string) string {
		for _, l := range printed {
			if s, ok := strings.CutPrefix(l, prefix); ok {
				return strings.TrimSpace(s)
			}
		}
		t.Fatalf("no line %q... in the output", prefix)
		return ""
	}
	router := strings.TrimPrefix(strings.Fields(printed[0])[1], "http://")
	admin := strings.TrimSuffix(strings.Fields(printed[0])[3], ")")
	admin = strings.TrimPrefix(admin, "http://")
	addrs := listenAddrs(printed)

	// The page link joins a room at once (the page reads ?room=).
	page := strings.Fields(field("open:"))[0]
	if want := "http://" + router + "/?room=lobby"; page != want {
		t.Errorf("page link %q, want %q", page, want)
	}
	res, err := http.Get(page)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("page through the router: %v %v", err, res)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), "roomlb dev room") || !strings.Contains(string(body), `get("room")`) {
		t.Fatal("the router does not serve the dev page, or the page no longer reads ?room=")
	}

	// The dashboard, and the admin address alone leads there.
	dash := field("dashboard:")
	if want := "http://" + admin + "/dashboard"; dash != want {
		t.Errorf("dashboard %q, want %q", dash, want)
	}
	res, err = http.Get(dash)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("dashboard: %v %v", err, res)
	}
	res.Body.Close()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err = noFollow.Get("http://" + admin + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/dashboard" {
		t.Errorf("admin / = %d to %q, want a redirect to /dashboard", res.StatusCode, res.Header.Get("Location"))
	}

	// A client in a room, through a router.
	res, err = http.Post("http://"+router+"/api/room/create", "application/json", strings.NewReader(`{"name":"Welcome","isTemporary":true}`))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("create through the router: %v %v", err, res)
	}
	res.Body.Close()
	res, err = http.Get("http://" + router + "/api/auth/grant")
	if err != nil {
		t.Fatal(err)
	}
	var g struct{ Token string }
	json.NewDecoder(res.Body).Decode(&g)
	res.Body.Close()
	conn, hres, err := websocket.DefaultDialer.Dial("ws://"+router+"/api/room/welcome", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	owner := hres.Header.Get("X-Roomlb-Node")
	if owner == "" {
		t.Error("the handshake does not name the serving node")
	}
	conn.WriteJSON(map[string]any{"action": "auth", "token": g.Token})
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var m map[string]any
	if err := conn.ReadJSON(&m); err != nil || m["action"] != "sync" {
		t.Fatalf("first message %v, %v; want the sync", m, err)
	}
	conn.WriteJSON(map[string]any{"action": "req", "request": map[string]any{"type": 11, "text": "hello"}})
	// The client reads on until it is closed, as a browser tab would.
	closed := make(chan error, 1)
	go func() {
		conn.SetReadDeadline(time.Time{})
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				closed <- err
				return
			}
		}
	}()

	// The printed ctl line, pasted into a shell, works: nodes lists the
	// nodes; drain, which needs the secret, drains one.
	ctlLine := field("ctl:")
	if secret != "" && !strings.Contains(ctlLine, `--secret 'dev'\''s-secret'`) {
		t.Errorf("ctl line %q does not carry --secret %q quoted for the shell", ctlLine, secret)
	}
	nodesOut := shell(t, bin, ctlLine)
	for _, n := range []string{"node-1", "node-2", "node-3"} {
		if !regexp.MustCompile(`(?m)^` + n + `\s.*\sactive\s`).MatchString(nodesOut) {
			t.Errorf("ctl nodes does not list %s as active:\n%s", n, nodesOut)
		}
	}
	victim := "node-1"
	if owner == victim {
		victim = "node-2"
	}
	before, after, ok := strings.Cut(ctlLine, " nodes")
	if !ok {
		t.Fatalf("ctl line %q has no nodes command", ctlLine)
	}
	if o := shell(t, bin, before+" --timeout 20s drain "+victim+after); !strings.Contains(o, "draining "+victim) {
		t.Errorf("ctl drain %s: %s", victim, o)
	}
	if o := shell(t, bin, ctlLine); strings.Contains(o, victim+" ") {
		t.Errorf("%s still listed after ctl drain:\n%s", victim, o)
	}

	// Ctrl-C from the terminal: SIGINT to the whole process group.
	kids := children(cmd.Process.Pid)
	if len(kids) == 0 && !strings.Contains(output.String(), "embedded") {
		t.Error("no child processes seen (redis-server, monoliths)")
	}
	start := time.Now()
	if err := syscall.Kill(-pgid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("roomlb dev exited with %v after Ctrl-C, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("roomlb dev did not stop within 30s of Ctrl-C")
	}
	t.Logf("stopped %v after Ctrl-C", time.Since(start).Round(time.Millisecond))
	select {
	case err := <-closed:
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseServiceRestart {
			t.Errorf("the client was let go with %v, want a close with code 1012 (reconnect)", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the client's connection is still open")
	}
	for _, k := range kids {
		if k.alive() {
			t.Errorf("process left behind: %s", k)
		}
	}
	for _, a := range addrs {
		if c, err := net.DialTimeout("tcp", a, 200*time.Millisecond); err == nil {
			c.Close()
			// Tests of other packages run meanwhile and may have been
			// given the port since: only a listener of this run counts.
			if pid, ok := listenerPID(a); !ok || inGroup(pid, pgid) {
				t.Errorf("%s still accepts connections after Ctrl-C (pid %d)", a, pid)
			}
		}
	}
	for _, s := range devShutdownNoise {
		if strings.Contains(output.String(), s) {
			t.Errorf("the output has %q: something stopped before what uses it", s)
		}
	}
}

// listenAddrs is every address in the component lines (router: ...,
// sidecar: ..., monolith: ..., redis: ...).
func listenAddrs(lines []string) []string {
	re := regexp.MustCompile(`^(router|sidecar|monolith|redis): `)
	addr := regexp.MustCompile(`(?:http|ws|redis)://(127\.0\.0\.1:\d+)`)
	var addrs []string
	for _, l := range lines {
		if !re.MatchString(l) {
			continue
		}
		for _, m := range addr.FindAllStringSubmatch(l, -1) {
			addrs = append(addrs, m[1])
		}
	}
	return addrs
}

// shell runs a printed command line in sh, with bin as the roomlb on PATH,
// and returns its output.
func shell(t *testing.T, bin, line string) string {
	t.Helper()
	c := exec.Command("sh", "-c", line)
	c.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("sh -c %q: %v\n%s", line, err, out)
	}
	return string(out)
}

// proc is a process as /proc/PID/stat shows it.
type proc struct {
	pid                      int
	comm, state, ppid, start string
}

func (p proc) String() string { return strconv.Itoa(p.pid) + " (" + p.comm + ")" }

// alive tells whether the process still runs: neither gone nor a zombie,
// and not another process given its pid since.
func (p proc) alive() bool {
	q, ok := readProc(p.pid)
	return ok && q.start == p.start && q.state != "Z"
}

// readProc reads /proc/PID/stat: pid (comm) state ppid ... starttime (the
// 22nd field).
func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return proc{}, false
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return proc{}, false
	}
	f := strings.Fields(s[j+1:])
	if len(f) < 20 {
		return proc{}, false
	}
	return proc{pid: pid, comm: s[i+1 : j], state: f[0], ppid: f[1], start: f[19]}, true
}

// children lists the live processes whose parent is pid.
func children(pid int) []proc {
	var kids []proc
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(n); ok && p.ppid == strconv.Itoa(pid) && p.state != "Z" {
			kids = append(kids, p)
		}
	}
	return kids
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(b []byte) (int, error) {
	w.t.Logf("stderr: %s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// listenerPID finds the process listening on the TCP address addr
// (host:port) through /proc/net/tcp and the processes' fds; ok is false
// when it cannot tell.
func listenerPID(addr string) (pid int, ok bool) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, false
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return 0, false
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0, false
	}
	inode := ""
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && f[3] == "0A" && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", p)) {
			inode = f[9]
		}
	}
	if inode == "" {
		return 0, false
	}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		n, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", d.Name(), "fd"))
		for _, fd := range fds {
			if l, _ := os.Readlink(filepath.Join("/proc", d.Name(), "fd", fd.Name())); l == "socket:["+inode+"]" {
				return n, true
			}
		}
	}
	return 0, false
}

// inGroup tells whether process pid is in process group pgid.
func inGroup(pid, pgid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 2 && f[2] == strconv.Itoa(pgid)
}
