package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/internal/cluster"
	"github.com/roomlb/roomlb/internal/redistest"
	"github.com/roomlb/roomlb/ott/otttest"
	"github.com/roomlb/roomlb/sidecar"
)

func ctlRun(t *testing.T, c *cluster.Cluster, url string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := Run(context.Background(), append([]string{"ctl", "--redis-url", url, "--secret", c.Secret, "--timeout", "20s"}, args...), &out, &out)
	return out.String(), err
}

// TestCtl: nodes, rooms, where, move, and a drain that moves every room of
// a node to the others while its clients stay served (the router carries
// them over to their room's next owner).
func TestCtl(t *testing.T) {
	srv := redistest.New(t)
	c, err := cluster.Start(context.Background(), cluster.Options{
		RedisURL: srv.URL(), Nodes: 3, Routers: 1, Monolith: cluster.FakeMonolith,
		FakeConfig: func(fc *otttest.Config) { fc.StateDebounce = 200 * time.Millisecond },
		Sidecar:    func(i int, sc *sidecar.Config) { sc.StateDebounce = 200 * time.Millisecond },
		Log:        slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	r := c.Routers[0].Addr
	n1 := c.Nodes[0]

	// Ten rooms on node-1, created through its sidecar, a client in each
	// through the router.
	res, err := http.Get("http://" + r + "/api/auth/grant")
	if err != nil {
		t.Fatal(err)
	}
	var g struct{ Token string }
	json.NewDecoder(res.Body).Decode(&g)
	res.Body.Close()
	type member struct {
		room string
		conn *websocket.Conn
	}
	var members []member
	for i := range 10 {
		name := fmt.Sprintf("Ctl-%d", i)
		req, _ := http.NewRequest("POST", "http://"+n1.SidecarAddr+"/api/room/create", strings.NewReader(fmt.Sprintf(`{"name":%q,"isTemporary":true}`, name)))
		req.Header.Set(contract.HeaderSecret, c.Secret)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("create %s: %v %v", name, err, res)
		}
		res.Body.Close()
		conn := dialRoom(t, r, name, g.Token)
		members = append(members, member{name, conn})
	}

	out, err := ctlRun(t, c, srv.URL(), "nodes")
	if err != nil || !strings.Contains(out, "node-1") || !strings.Contains(out, "active") || !strings.HasPrefix(out, "ID") {
		t.Fatalf("ctl nodes: %v\n%s", err, out)
	}
	out, err = ctlRun(t, c, srv.URL(), "--json", "rooms")
	var rooms []roomJSON
	if err != nil || json.Unmarshal([]byte(out), &rooms) != nil || len(rooms) != 10 || rooms[0].Owner != "node-1" || rooms[0].Name != "Ctl-0" {
		t.Fatalf("ctl --json rooms: %v\n%s", err, out)
	}
	out, err = ctlRun(t, c, srv.URL(), "where", "CTL-3")
	if err != nil || !strings.Contains(out, "Ctl-3") || !strings.Contains(out, "node-1") {
		t.Fatalf("ctl where: %v\n%s", err, out)
	}
	if _, err := ctlRun(t, c, srv.URL(), "where", "bad.name"); err == nil {
		t.Fatal("ctl where bad.name succeeded")
	}

	// move one room to node-3.
	if out, err := ctlRun(t, c, srv.URL(), "move", "ctl-0", "node-3"); err != nil {
		t.Fatalf("ctl move: %v\n%s", err, out)
	}
	if o, _ := c.Registry.Owner(context.Background(), "ctl-0"); o.Node != "node-3" {
		t.Fatalf("after move, ctl-0 on %s", o.Node)
	}

	// drain node-1: its rooms go to the others; every client comes back.
	if out, err := ctlRun(t, c, srv.URL(), "drain", "node-1"); err != nil {
		t.Fatalf("ctl drain: %v\n%s", err, out)
	}
	for _, m := range members {
		// The router carries each client over: no close, and the next
		// owner's join sequence, which ends with the client's new id.
		m.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			_, msg, err := m.conn.ReadMessage()
			if err != nil {
				t.Fatalf("%s: the client's connection ended with %v during the drain, want it carried over", m.room, err)
			}
			if strings.Contains(string(msg), `"action":"you"`) {
				break
			}
		}
	}
	out, _ = ctlRun(t, c, srv.URL(), "--json", "rooms")
	json.Unmarshal([]byte(out), &rooms)
	for _, rm := range rooms {
		if rm.Owner == "node-1" {
			t.Fatalf("after the drain %s is still on node-1", rm.Name)
		}
	}
	if len(rooms) != 10 {
		t.Fatalf("%d rooms after the drain, want 10", len(rooms))
	}
}

// dialRoom joins room through the router and waits for the join's sync.
func dialRoom(t *testing.T, router, room, token string) *websocket.Conn {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+router+"/api/room/"+room, nil)
	if err != nil {
		t.Fatalf("join %s: %v", room, err)
	}
	conn.WriteJSON(map[string]any{"action": "auth", "token": token})
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var m map[string]any
	if err := conn.ReadJSON(&m); err != nil || m["action"] != "sync" {
		t.Fatalf("join %s: first message %v, %v", room, m, err)
	}
	conn.SetReadDeadline(time.Time{})
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestCtlNoRedis: ctl against a Redis that is not there prints one line,
// naming the URL and its flag, and no line of go-redis's.
func TestCtlNoRedis(t *testing.T) {
	bin := roomlbBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "redis://:hunter2@" + ln.Addr().String() // nobody listens once closed
	ln.Close()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "ctl", "--redis-url", url, "nodes")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("roomlb ctl nodes without Redis: %v, want exit status 1", err)
	}
	lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
	want := "roomlb ctl: cannot reach Redis at redis://:xxxxx@" + ln.Addr().String() + " (--redis-url): dial tcp " + ln.Addr().String() + ": connect: connection refused"
	if len(lines) != 1 || lines[0] != want || stdout.Len() != 0 {
		t.Fatalf("stderr:\n%s\nstdout:\n%s\nwant stderr %q alone", stderr.String(), stdout.String(), want)
	}
}

// TestCtlNoCommand: ctl without a command lists its commands, one line
// each, with its flags, and fails.
func TestCtlNoCommand(t *testing.T) {
	var out bytes.Buffer
	err := Run(context.Background(), []string{"ctl", "--json"}, &out, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("ctl without a command: %v, want flag.ErrHelp (exit status 2)", err)
	}
	for _, want := range []string{"Usage: roomlb ctl [flags] COMMAND", "\n  nodes ", "\n  rooms ", "\n  where ROOM ", "\n  drain NODE ", "\n  move ROOM NODE ", "\n  -redis-url "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := Run(context.Background(), []string{"ctl", "nodez"}, &out, &out); err == nil || !strings.Contains(err.Error(), "nodes, rooms, where, drain, move") {
		t.Fatalf("ctl nodez: %v, want the commands named", err)
	}
}
