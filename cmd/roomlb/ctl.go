package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/registry"
)

const ctlUsage = `Usage: roomlb ctl [flags] COMMAND

Commands:
  nodes              live nodes: id, address, state, rooms, clients, load
  rooms              owned rooms: name, owner, epoch, clients
  where ROOM         the owner of one room
  drain NODE         drain a node (its sidecar hands every room over and exits)
  move ROOM NODE     hand one room over to another node

Flags (each also as ROOMLB_<FLAG>):
`

// runCtl inspects and steers a cluster through its Redis registry.
func runCtl(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	redisURL := fs.String("redis-url", "redis://127.0.0.1:6379", "Redis of the registry")
	prefix := fs.String("prefix", registry.DefaultPrefix, "prefix of every registry key in Redis")
	secret := fs.String("secret", "", "shared secret of the sidecars (drain, move)")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	timeout := fs.Duration("timeout", time.Minute, "how long drain and move wait for the rooms to move")
	usage := func() {
		fmt.Fprint(fs.Output(), ctlUsage)
		fs.PrintDefaults()
	}
	fs.Usage = usage
	// Flags come first; the rest is the command.
	if err := fs.Parse(args); err != nil {
		return err
	}
	cmdArgs := fs.Args()
	if err := parse(fs, nil); err != nil { // fill from the environment
		return err
	}
	fs.Usage = usage // parse set its own
	if len(cmdArgs) == 0 {
		fs.Usage()
		return flag.ErrHelp
	}
	// The command and its arguments are checked before Redis is.
	commands := map[string]struct {
		args int
		run  func(c *ctl, args []string) error
	}{
		"nodes": {0, func(c *ctl, _ []string) error { return c.nodes(ctx) }},
		"rooms": {0, func(c *ctl, _ []string) error { return c.rooms(ctx) }},
		"where": {1, func(c *ctl, a []string) error { return c.where(ctx, a[0]) }},
		"drain": {1, func(c *ctl, a []string) error { return c.drain(ctx, a[0]) }},
		"move":  {2, func(c *ctl, a []string) error { return c.move(ctx, a[0], a[1]) }},
	}
	command, ok := commands[cmdArgs[0]]
	if !ok {
		return fmt.Errorf("ctl: unknown command %q (nodes, rooms, where, drain, move)", cmdArgs[0])
	}
	if len(cmdArgs) != command.args+1 {
		return fmt.Errorf("ctl %s: want %d argument(s), got %d", cmdArgs[0], command.args, len(cmdArgs)-1)
	}

	// ctl's errors say what failed; go-redis's own lines would only repeat
	// it (one per retry).
	redisLog.SetLogger(nil)
	reg, closeRedis, err := openRegistry(*redisURL, *prefix, 0, -1, nil)
	if err != nil {
		return err
	}
	defer closeRedis()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = reg.Client().Ping(pctx).Err()
	cancel()
	if err != nil {
		return fmt.Errorf("ctl: cannot reach Redis at %s (--redis-url): %w", redactURL(*redisURL), err)
	}
	c := &ctl{reg: reg, out: stdout, json: *asJSON, secret: *secret, timeout: *timeout}
	return command.run(c, cmdArgs[1:])
}

type ctl struct {
	reg     *registry.Registry
	out     io.Writer
	json    bool
	secret  string
	timeout time.Duration
}

func (c *ctl) print(v any, header string, rows [][]string) error {
	if c.json {
		e := json.NewEncoder(c.out)
		e.SetIndent("", "  ")
		return e.Encode(v)
	}
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	return w.Flush()
}

// nodeJSON is a node as ctl prints it.
type nodeJSON struct {
	ID       string  `json:"id"`
	Addr     string  `json:"addr"`
	State    string  `json:"state"`
	Rooms    int     `json:"rooms"`
	Clients  int     `json:"clients"`
	Load     float64 `json:"load"`
	Capacity int     `json:"capacity"`
	Region   string  `json:"region"`
	Version  string  `json:"version"`
}

func (c *ctl) nodes(ctx context.Context) error {
	nodes, err := c.reg.Nodes(ctx)
	if err != nil {
		return err
	}
	out := []nodeJSON{}
	var rows [][]string
	for _, n := range nodes {
		out = append(out, nodeJSON{n.ID, n.Addr, string(n.State), n.Rooms, n.Clients, n.Load, n.Capacity, n.Region, n.Version})
		rows = append(rows, []string{n.ID, n.Addr, string(n.State), fmt.Sprint(n.Rooms), fmt.Sprint(n.Clients),
			fmt.Sprintf("%.3f", n.Load), n.Region, n.Version})
	}
	return c.print(out, "ID\tADDR\tSTATE\tROOMS\tCLIENTS\tLOAD\tREGION\tVERSION", rows)
}

// roomJSON is a room as ctl prints it.
type roomJSON struct {
	Room    string `json:"room"`
	Name    string `json:"name"`
	Owner   string `json:"owner"`
	Epoch   int64  `json:"epoch"`
	Clients int    `json:"clients"`
	// Session is the owner's heartbeat session the room belongs to.
	Session string `json:"session"`
}

func (c *ctl) rooms(ctx context.Context) error {
	rooms, err := c.reg.Rooms(ctx)
	if err != nil {
		return err
	}
	sort.Slice(rooms, func(i, j int) bool { return rooms[i].Room < rooms[j].Room })
	out := []roomJSON{}
	var rows [][]string
	for _, r := range rooms {
		name := r.Meta.Name
		if name == "" {
			name = r.Room
		}
		out = append(out, roomJSON{r.Room, name, r.Owner.Node, r.Owner.Epoch, r.Meta.Users, r.Owner.Session})
		rows = append(rows, []string{name, r.Owner.Node, fmt.Sprint(r.Owner.Epoch), fmt.Sprint(r.Meta.Users)})
	}
	return c.print(out, "NAME\tOWNER\tEPOCH\tCLIENTS", rows)
}

func (c *ctl) where(ctx context.Context, room string) error {
	o, err := c.reg.Owner(ctx, room)
	if err != nil {
		return err
	}
	key, _ := registry.RoomKey(room)
	m, _, _ := c.reg.Meta(ctx, key)
	name := m.Name
	if name == "" {
		name = key
	}
	addr, state := "", "gone"
	if n, err := c.reg.Node(ctx, o.Node); err == nil {
		addr, state = n.Addr, string(n.State)
	}
	v := struct {
		roomJSON
		Addr      string `json:"addr"`
		NodeState string `json:"node_state"`
	}{roomJSON{key, name, o.Node, o.Epoch, m.Users, o.Session}, addr, state}
	return c.print(v, "NAME\tOWNER\tEPOCH\tSESSION\tNODE ADDR\tNODE STATE",
		[][]string{{name, o.Node, fmt.Sprint(o.Epoch), o.Session, addr, state}})
}

// admin posts to a sidecar's admin endpoint.
func (c *ctl) admin(ctx context.Context, node, path string, form url.Values) error {
	n, err := c.reg.Node(ctx, node)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+n.Addr+path, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(contract.HeaderSecret, c.secret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s at %s: %w", node, n.Addr, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("%s at %s: %s: %s", node, n.Addr, res.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

func (c *ctl) drain(ctx context.Context, node string) error {
	if err := c.admin(ctx, node, "/admin/drain", nil); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "draining %s\n", node)
	return c.wait(ctx, "node "+node+" gone", func() (bool, error) {
		ok, err := c.reg.Alive(ctx, node)
		return !ok, err
	})
}

func (c *ctl) move(ctx context.Context, room, to string) error {
	key, err := registry.RoomKey(room)
	if err != nil {
		return err
	}
	o, err := c.reg.Owner(ctx, key)
	if err != nil {
		return err
	}
	if o.Node == to {
		fmt.Fprintf(c.out, "%s is on %s already\n", key, to)
		return nil
	}
	if n, err := c.reg.Node(ctx, to); err != nil {
		return err
	} else if n.State != registry.StateActive {
		return fmt.Errorf("ctl move: %s is %s", to, n.State)
	}
	// One admin operation on a room at a time (an efficiency lock: the
	// move itself is fenced by the room's epoch).
	rs := redsync.New(goredis.NewPool(c.reg.Client()))
	mu := rs.NewMutex(c.reg.RoomLockKey(key), redsync.WithExpiry(c.timeout+10*time.Second), redsync.WithTries(1))
	if err := mu.TryLockContext(ctx); err != nil {
		return fmt.Errorf("ctl move: another admin operation on %s is running", key)
	}
	defer mu.UnlockContext(context.Background())
	if err := c.admin(ctx, o.Node, "/admin/move", url.Values{"room": {key}, "to": {to}}); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "moving %s from %s to %s\n", key, o.Node, to)
	return c.wait(ctx, key+" on "+to, func() (bool, error) {
		now, err := c.reg.Owner(ctx, key)
		var oe *registry.OwnerError
		if errors.As(err, &oe) {
			return false, nil
		}
		return err == nil && now.Node == to && now.Epoch > o.Epoch, err
	})
}

func (c *ctl) wait(ctx context.Context, what string, done func() (bool, error)) error {
	deadline := time.Now().Add(c.timeout)
	for {
		ok, err := done()
		if err != nil {
			return err
		}
		if ok {
			fmt.Fprintf(c.out, "done: %s\n", what)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ctl: not done after %v: %s", c.timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// redactURL is u without its password, to print.
func redactURL(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Redacted()
	}
	return u
}
