package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/internal/cluster"
	"github.com/roomlb/roomlb/internal/redistest"
	"github.com/roomlb/roomlb/internal/wstest"
	"github.com/roomlb/roomlb/ott/otttest"
	"github.com/roomlb/roomlb/registry"
	"github.com/roomlb/roomlb/router"
	"github.com/roomlb/roomlb/sidecar"
)

const (
	grafanaDashboard = "../../deploy/grafana/roomlb.json"
	prometheusRules  = "../../deploy/prometheus/roomlb-rules.yml"
)

// TestDeployMetrics checks deploy/grafana/roomlb.json and
// deploy/prometheus/roomlb-rules.yml: both parse, have the shape Grafana and
// Prometheus load, and every metric their expressions use is exported by a
// real sidecar or router after a little traffic (a create, a WebSocket join
// and a chat, a move, a fenced room, refusals), so that the labelled series
// exist. The dashboard also shows every metric the README lists.
func TestDeployMetrics(t *testing.T) {
	dashExprs := readDashboardExprs(t)
	ruleExprs := readAlertRules(t)

	used := map[string][]string{} // metric name -> where
	for where, expr := range dashExprs {
		for _, name := range promqlMetricNames(expr) {
			used[name] = append(used[name], where)
		}
	}
	inRules := map[string]bool{}
	for where, expr := range ruleExprs {
		for _, name := range promqlMetricNames(expr) {
			used[name] = append(used[name], where)
			inRules[name] = true
		}
	}
	// The alerts the rules must have, by the metric each one watches.
	for _, name := range []string{
		"roomlb_sidecar_leases_lost_total",        // leases lost
		"roomlb_sidecar_monolith_link_up",         // monolith link down
		"roomlb_router_nodes",                     // no live node
		"roomlb_router_requests_total",            // router 5xx
		"roomlb_sidecar_claims_total",             // Redis errors
		"roomlb_sidecar_refusals_total",           // Redis errors
		"roomlb_sidecar_heartbeat_seconds_bucket", // slow heartbeats
	} {
		if !inRules[name] {
			t.Errorf("no alerting rule uses %s", name)
		}
	}
	// The dashboard shows every metric of the README's table.
	shown := map[string]bool{}
	for _, expr := range dashExprs {
		for _, name := range promqlMetricNames(expr) {
			shown[name] = true
			shown[histogramFamily(name)] = true
		}
	}
	for _, name := range readmeMetrics(t) {
		if !shown[name] {
			t.Errorf("the README lists %s; deploy/grafana/roomlb.json does not show it", name)
		}
	}

	families := scrapeLiveCluster(t)
	var names []string
	for name := range used {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		typ, ok := families[name]
		if !ok {
			if base := histogramFamily(name); base != name {
				typ, ok = families[base]
				ok = ok && (typ == "histogram" || typ == "summary" && !strings.HasSuffix(name, "_bucket"))
			}
		}
		if !ok {
			where := used[name]
			slices.Sort(where)
			t.Errorf("%s is used by %s but neither the sidecar nor the router exports it", name, strings.Join(slices.Compact(where), ", "))
		}
	}
	t.Logf("%d metric names used by the dashboard and the rules, all exported: %s", len(names), strings.Join(names, " "))
}

// histogramFamily strips the suffix of a histogram's or summary's series.
func histogramFamily(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			return base
		}
	}
	return name
}

// readmeMetrics returns the metrics of the README's "Metrics" table.
func readmeMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(roomlb_[a-z0-9_]+)` \\|")
	var names []string
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		names = append(names, m[1])
	}
	if len(names) < 10 {
		t.Fatalf("found %d metrics in the README's table", len(names))
	}
	return names
}

// readDashboardExprs parses the Grafana dashboard, checks its shape, and
// returns every PromQL expression in it by where it is.
func readDashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(grafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	}
	type datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	type panel struct {
		ID         int         `json:"id"`
		Type       string      `json:"type"`
		Title      string      `json:"title"`
		Datasource *datasource `json:"datasource"`
		GridPos    struct{ H, W, X, Y int }
		Targets    []target `json:"targets"`
		Panels     []panel  `json:"panels"`
	}
	var dash struct {
		Inputs []struct {
			Name, Type, PluginID string
		} `json:"__inputs"`
		Title      string  `json:"title"`
		UID        string  `json:"uid"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Type       string      `json:"type"`
				Name       string      `json:"name"`
				Query      any         `json:"query"`
				Definition string      `json:"definition"`
				Datasource *datasource `json:"datasource"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", grafanaDashboard, err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Errorf("the dashboard has no title or uid")
	}
	const ds = "${DS_PROMETHEUS}"
	if !slices.ContainsFunc(dash.Inputs, func(in struct{ Name, Type, PluginID string }) bool {
		return in.Name == "DS_PROMETHEUS" && in.Type == "datasource" && in.PluginID == "prometheus"
	}) {
		t.Errorf("the dashboard has no DS_PROMETHEUS datasource input")
	}
	exprs := map[string]string{}
	labelValues := regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	dsVar := false
	for _, v := range dash.Templating.List {
		switch v.Type {
		case "datasource":
			dsVar = dsVar || v.Name == "DS_PROMETHEUS"
		case "query":
			if v.Datasource == nil || v.Datasource.UID != ds {
				t.Errorf("variable %s: datasource is not %s", v.Name, ds)
			}
			m := labelValues.FindStringSubmatch(v.Definition)
			if m == nil {
				t.Errorf("variable %s: %q is not label_values(METRIC, LABEL)", v.Name, v.Definition)
				continue
			}
			exprs["dashboard variable "+v.Name] = m[1]
		}
	}
	if !dsVar {
		t.Errorf("the dashboard has no datasource variable DS_PROMETHEUS")
	}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("panel %q: id %d is zero or not unique", p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.Title == "" {
				t.Errorf("panel %d has no title", p.ID)
			}
			if g := p.GridPos; g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("panel %q: gridPos %+v is off the 24 columns", p.Title, g)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != ds {
				t.Errorf("panel %q: datasource is not the Prometheus %s", p.Title, ds)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
					t.Errorf("panel %q: query %q: empty, or refId %q empty or not unique", p.Title, tg.Expr, tg.RefID)
				}
				refs[tg.RefID] = true
				if err := promqlBalanced(tg.Expr); err != nil {
					t.Errorf("panel %q: %q: %v", p.Title, tg.Expr, err)
				}
				exprs[fmt.Sprintf("panel %q %s", p.Title, tg.RefID)] = tg.Expr
			}
		}
	}
	walk(dash.Panels)
	if len(exprs) < 20 {
		t.Fatalf("the dashboard has %d queries", len(exprs))
	}
	return exprs
}

// readAlertRules parses the Prometheus rules file, checks that every rule
// is a complete alerting rule, and returns the expressions by alert.
func readAlertRules(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(prometheusRules)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", prometheusRules, err)
	}
	root, _ := doc.(map[string]any)
	groups, _ := root["groups"].([]any)
	if len(root) != 1 || len(groups) == 0 {
		t.Fatalf("%s: want a single key, groups, with a list of groups", prometheusRules)
	}
	alertName := regexp.MustCompile(`^[A-Z][A-Za-z0-9]+$`)
	duration := regexp.MustCompile(`^[0-9]+[smh]$`)
	exprs := map[string]string{}
	for _, g := range groups {
		group, _ := g.(map[string]any)
		rules, _ := group["rules"].([]any)
		if name, _ := group["name"].(string); name == "" || len(rules) == 0 {
			t.Fatalf("%s: a group without a name or rules", prometheusRules)
		}
		for _, r := range rules {
			rule, _ := r.(map[string]any)
			alert, _ := rule["alert"].(string)
			expr, _ := rule["expr"].(string)
			forDur, _ := rule["for"].(string)
			labels, _ := rule["labels"].(map[string]any)
			ann, _ := rule["annotations"].(map[string]any)
			if !alertName.MatchString(alert) || exprs["rule "+alert] != "" {
				t.Errorf("rule %q: alert name missing, not CamelCase or not unique", alert)
			}
			for k := range rule {
				if !slices.Contains([]string{"alert", "expr", "for", "labels", "annotations"}, k) {
					t.Errorf("rule %s: unknown key %q", alert, k)
				}
			}
			if strings.TrimSpace(expr) == "" {
				t.Errorf("rule %s has no expr", alert)
			} else if err := promqlBalanced(expr); err != nil {
				t.Errorf("rule %s: %v", alert, err)
			}
			if !duration.MatchString(forDur) {
				t.Errorf("rule %s: for %q is not a duration", alert, forDur)
			}
			if sev, _ := labels["severity"].(string); sev != "warning" && sev != "critical" {
				t.Errorf("rule %s: severity %q, want warning or critical", alert, sev)
			}
			for _, k := range []string{"summary", "description"} {
				if s, _ := ann[k].(string); len(s) < 20 {
					t.Errorf("rule %s: annotation %s missing or too short to tell the operator anything", alert, k)
				}
			}
			exprs["rule "+alert] = expr
		}
	}
	return exprs
}

// scrapeLiveCluster runs two sidecars (over the Go fake monolith) and two
// routers, makes every labelled series of the metrics appear, scrapes each
// /metrics, and returns the metric families found, with their types.
func scrapeLiveCluster(t *testing.T) map[string]string {
	t.Helper()
	srv := redistest.New(t)
	ctx := context.Background()
	c, err := cluster.Start(ctx, cluster.Options{
		RedisURL: srv.URL(), Nodes: 2, Routers: 2, Monolith: cluster.FakeMonolith,
		FakeConfig: func(fc *otttest.Config) { fc.StateDebounce = 200 * time.Millisecond },
		Sidecar: func(i int, sc *sidecar.Config) {
			sc.HeartbeatTTL = 2 * time.Second
			sc.StateDebounce = 200 * time.Millisecond
		},
		// The second router takes one connection per client address, so
		// that a second one is refused.
		Router: func(i int, rc *router.Config) {
			if i == 1 {
				rc.MaxConnsPerAddr = 1
			}
		},
		Log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	r := c.Routers[0].Addr
	node := func(id string) *cluster.Node {
		for _, n := range c.Nodes {
			if n.ID == id {
				return n
			}
		}
		t.Fatalf("no node %q", id)
		return nil
	}
	other := func(id string) *cluster.Node {
		if c.Nodes[0].ID == id {
			return c.Nodes[1]
		}
		return c.Nodes[0]
	}
	create := func(name string) registry.Owner {
		t.Helper()
		res, err := http.Post("http://"+r+"/api/room/create", "application/json",
			strings.NewReader(`{"name":"`+name+`","isTemporary":true}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("create %s: %d %s", name, res.StatusCode, body)
		}
		o, err := c.Registry.Owner(ctx, name)
		if err != nil || o.Node == "" {
			t.Fatalf("owner of %s: %+v %v", name, o, err)
		}
		return o
	}

	// A room with a client who chats: claims, messages, connections.
	res, err := http.Get("http://" + r + "/api/auth/grant")
	if err != nil {
		t.Fatal(err)
	}
	var grant struct{ Token string }
	json.NewDecoder(res.Body).Decode(&grant)
	res.Body.Close()
	create("Watch")
	cl, _, err := wstest.Dial(t, "ws://"+r+"/api/room/Watch", nil, grant.Token)
	if err != nil {
		t.Fatal(err)
	}
	cl.MustNext("you", 10*time.Second)
	if err := cl.Chat("metrics"); err != nil {
		t.Fatal(err)
	}
	cl.MustNext("chat", 10*time.Second)

	// A move: a hand-off out of one node and into the other.
	o := create("Moved")
	from, to := node(o.Node), other(o.Node)
	req, _ := http.NewRequest("POST", "http://"+from.SidecarAddr+"/admin/move",
		strings.NewReader(url.Values{"room": {"moved"}, "to": {to.ID}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(contract.HeaderSecret, c.Secret)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusAccepted {
		t.Fatalf("move: %v %v", res, err)
	} else {
		res.Body.Close()
	}
	waitForSeries(t, from.SidecarAddr, `roomlb_sidecar_handoffs_total{direction="out"}`)
	waitForSeries(t, to.SidecarAddr, `roomlb_sidecar_handoffs_total{direction="in"}`)

	// A room changed by hand in Redis to another node (nobody takes a
	// room from a live node otherwise), and a client sent to the old
	// owner by a router that has not heard: the owner's next metadata
	// write is refused, and it fences the room ("lost").
	o = create("Fenced")
	taker, err := c.Registry.Node(ctx, other(o.Node).ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Registry.Transfer(ctx, registry.Lease{Room: "fenced", Node: o.Node, Session: o.Session, Epoch: o.Epoch}, taker.ID, taker.Session); err != nil {
		t.Fatal(err)
	}
	hdr := http.Header{contract.HeaderSecret: {c.Secret}, contract.HeaderEpoch: {strconv.FormatInt(o.Epoch, 10)}}
	if _, _, err := wstest.Dial(t, "ws://"+node(o.Node).SidecarAddr+"/api/room/Fenced", hdr, grant.Token); err != nil {
		t.Fatalf("client to the old owner of a room changed by hand: %v", err)
	}
	waitForSeries(t, node(o.Node).SidecarAddr, `roomlb_sidecar_leases_lost_total{reason="lost"}`)

	// A request without the secret, straight to a sidecar: a refusal.
	if res, err := http.Get("http://" + c.Nodes[0].SidecarAddr + "/api/room/watch"); err != nil {
		t.Fatal(err)
	} else {
		res.Body.Close()
	}
	waitForSeries(t, c.Nodes[0].SidecarAddr, `roomlb_sidecar_refusals_total{reason="secret"}`)

	// A second connection from one address to the second router: refused.
	first, err := net.Dial("tcp", c.Routers[1].Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	fmt.Fprintf(first, "GET /api/auth/grant HTTP/1.1\r\nHost: roomlb\r\n\r\n")
	first.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := bufio.NewReader(first).ReadString('\n'); err != nil || !strings.Contains(line, " 200 ") {
		t.Fatalf("first connection: %q %v", line, err)
	}
	second, err := net.Dial("tcp", c.Routers[1].Addr)
	if err != nil {
		t.Fatal(err)
	}
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(second)
	second.Close()
	waitForSeries(t, c.Routers[1].AdminAddr, `roomlb_router_refused_connections_total{reason="max_conns_per_addr"}`)

	families := map[string]string{}
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.SidecarAddr)
	}
	for _, rt := range c.Routers {
		addrs = append(addrs, rt.AdminAddr)
	}
	for _, addr := range addrs {
		text := scrapeMetrics(t, addr)
		for line := range strings.Lines(text) {
			f := strings.Fields(line)
			if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
				families[f[2]] = f[3]
			}
		}
	}
	return families
}

// scrapeMetrics returns the text exposition of http://addr/metrics.
func scrapeMetrics(t *testing.T, addr string) string {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("scrape %s: %d %v", addr, res.StatusCode, err)
	}
	return string(b)
}

// waitForSeries waits until the /metrics of addr has a sample of series.
func waitForSeries(t *testing.T, addr, series string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if strings.Contains(scrapeMetrics(t, addr), "\n"+series+" ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never exported %s", addr, series)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// promqlKeywords are PromQL words that are not metric names where they
// stand alone; every other identifier not followed by "(" is a metric.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "by": true, "without": true, "on": true,
	"ignoring": true, "group_left": true, "group_right": true, "offset": true, "bool": true,
	"atan2": true, "inf": true, "nan": true,
	// Aggregations, which may take their grouping before the "(".
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true,
	"stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true, "limitk": true, "limit_ratio": true,
}

// promqlMetricNames returns the metric names a PromQL expression selects:
// identifiers outside label matchers ({...}), ranges ([...]), strings and
// grouping lists that are neither functions nor keywords. Grafana variables
// ($node, $__rate_interval) are skipped.
func promqlMetricNames(expr string) []string {
	var names []string
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || !first && '0' <= c && c <= '9'
	}
	skipTo := func(i int, close byte) int { // i is at the opening byte
		for i++; i < len(expr) && expr[i] != close; i++ {
			if q := expr[i]; q == '"' || q == '\'' || q == '`' {
				for i++; i < len(expr) && expr[i] != q; i++ {
					if expr[i] == '\\' && q != '`' {
						i++
					}
				}
			}
		}
		return i + 1
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '{':
			i = skipTo(i, '}')
		case c == '[':
			i = skipTo(i, ']')
		case c == '"' || c == '\'' || c == '`':
			i = skipTo(i, c)
		case c == '$' || '0' <= c && c <= '9' || c == '.':
			// A Grafana variable, a number or a duration.
			for i++; i < len(expr) && (isIdent(expr[i], false) || expr[i] == '.'); i++ {
			}
		case isIdent(c, true):
			j := i
			for j < len(expr) && isIdent(expr[j], false) {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && (expr[k] == ' ' || expr[k] == '\n' || expr[k] == '\t') {
				k++
			}
			switch {
			case word == "by" || word == "without" || word == "on" || word == "ignoring" ||
				word == "group_left" || word == "group_right":
				if k < len(expr) && expr[k] == '(' {
					j = skipTo(k, ')') // a list of label names
				}
			case promqlKeywords[word] || k < len(expr) && expr[k] == '(':
				// A keyword or a function.
			default:
				names = append(names, word)
			}
			i = j
		default:
			i++
		}
	}
	return names
}

// promqlBalanced checks that brackets and quotes of expr are balanced.
func promqlBalanced(expr string) error {
	var stack []byte
	pairs := map[byte]byte{')': '(', ']': '[', '}': '{'}
	for i := 0; i < len(expr); i++ {
		switch c := expr[i]; c {
		case '"', '\'', '`':
			j := i + 1
			for ; j < len(expr) && expr[j] != c; j++ {
				if expr[j] == '\\' && c != '`' {
					j++
				}
			}
			if j >= len(expr) {
				return fmt.Errorf("unterminated string at %d", i)
			}
			i = j
		case '(', '[', '{':
			stack = append(stack, c)
		case ')', ']', '}':
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return fmt.Errorf("unbalanced %q at %d", c, i)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) > 0 {
		return fmt.Errorf("unclosed %q", stack[len(stack)-1])
	}
	return nil
}

// TestPromQLMetricNames checks the metric name extraction the deploy test
// relies on.
func TestPromQLMetricNames(t *testing.T) {
	for expr, want := range map[string]string{
		`histogram_quantile(0.99, sum by (instance, le) (rate(a_seconds_bucket{x="y{"}[5m]))) > 1`: "a_seconds_bucket",
		"sum by (result) (rate(b_total{instance=~\"$node\"}[$__rate_interval]))":                   "b_total",
		"sum(c) by (le) / ignoring (x) group_left (y) d offset 5m unless on(z) e":                  "c d e",
		"count(f == 0) or vector(0)":                             "f",
		`g{a="b"} > 0 and bool h` + "\n  or\n" + `rate(i:j[1m])`: "g h i:j",
		`sum without (kind) (k)`:                                 "k",
	} {
		if got := strings.Join(promqlMetricNames(expr), " "); got != want {
			t.Errorf("promqlMetricNames(%q) = %q, want %q", expr, got, want)
		}
	}
	if promqlBalanced(`sum(rate(a{b="}"}[5m]))`) != nil || promqlBalanced(`sum(rate(a[5m])`) == nil {
		t.Error("promqlBalanced")
	}
}
