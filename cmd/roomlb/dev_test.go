package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// TestDev runs `roomlb dev` as a newcomer would: it comes up, a WebSocket
// client joins a room through a router and gets the sync, and Ctrl-C leaves
// no process and no port behind.
func TestDev(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "roomlb")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Run("redis-server", func(t *testing.T) { testDev(t, bin) })
	// What a machine without redis-server gets.
	t.Run("embedded redis", func(t *testing.T) { testDev(t, bin, "--embedded-redis") })
}

func testDev(t *testing.T, bin string, args ...string) {
	cmd := exec.Command(bin, append([]string{"dev"}, args...)...)
	cmd.Stderr = &testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var lines []string
	up := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			t.Log(sc.Text())
			if strings.HasPrefix(sc.Text(), "roomlb dev: up") {
				close(up)
			}
		}
		done <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	select {
	case <-up:
	case err := <-done:
		t.Fatalf("roomlb dev exited before it was up: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("roomlb dev not up within 60s")
	}

	// The routers come first, as "router: http://127.0.0.1:PORT".
	var addrs []string
	for _, l := range lines {
		if f := strings.Fields(l); len(f) >= 2 && strings.HasSuffix(f[0], ":") {
			addrs = append(addrs, strings.TrimPrefix(strings.TrimPrefix(f[1], "http://"), "redis://"))
		}
	}
	if !strings.HasPrefix(lines[0], "router: http://127.0.0.1:") || !strings.HasPrefix(lines[1], "router: ") {
		t.Fatalf("output starts %q, want the two routers first", lines[:2])
	}
	router := strings.TrimPrefix(strings.Fields(lines[0])[1], "http://")

	res, err := http.Get("http://" + router + "/")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("page through the router: %v %v", err, res)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(page), "roomlb dev room") {
		t.Fatal("the router does not serve the dev page")
	}
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
	if hres.Header.Get("X-Roomlb-Node") == "" {
		t.Error("the handshake does not name the serving node")
	}
	conn.WriteJSON(map[string]any{"action": "auth", "token": g.Token})
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var m map[string]any
	if err := conn.ReadJSON(&m); err != nil || m["action"] != "sync" {
		t.Fatalf("first message %v, %v; want the sync", m, err)
	}
	conn.Close()

	// Ctrl-C: everything drains and stops.
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("roomlb dev exited with %v after Ctrl-C, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("roomlb dev did not stop within 30s of Ctrl-C")
	}
	for _, a := range addrs {
		if c, err := net.DialTimeout("tcp", a, 200*time.Millisecond); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Ctrl-C", a)
		}
	}
	if kids := children(cmd.Process.Pid); len(kids) > 0 {
		t.Errorf("processes left behind: %v", kids)
	}
}

// children lists live processes whose parent is pid (zombies excluded).
func children(pid int) []string {
	var kids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 2 && f[0] != "Z" && f[1] == strconv.Itoa(pid) {
			kids = append(kids, e.Name()+" "+s[:i+1])
		}
	}
	return kids
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(b []byte) (int, error) {
	w.t.Logf("stderr: %s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
