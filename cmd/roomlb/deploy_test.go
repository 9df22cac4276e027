package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// knownEnv is every ROOMLB_ variable the binaries read: one per flag.
func knownEnv(t *testing.T) map[string]string {
	t.Helper()
	known := map[string]string{}
	flagLine := regexp.MustCompile(`^  -([a-z-]+)`)
	for _, cmd := range []string{"sidecar", "router"} {
		var out bytes.Buffer
		Run(context.Background(), []string{cmd, "--help"}, &out, &out)
		for _, line := range strings.Split(out.String(), "\n") {
			if m := flagLine.FindStringSubmatch(line); m != nil {
				known[envName(m[1])] = cmd
			}
		}
	}
	return known
}

// TestNomadJobs parses every Nomad job of deploy/nomad and checks that each
// ROOMLB_ variable it sets is one the binaries read, and that the sidecar
// task's kill timeout leaves room for a whole drain.
func TestNomadJobs(t *testing.T) {
	known := knownEnv(t)
	files, _ := filepath.Glob("../../deploy/nomad/*.hcl")
	if len(files) == 0 {
		t.Fatal("no Nomad jobs in deploy/nomad")
	}
	envRef := regexp.MustCompile(`ROOMLB_[A-Z0-9_]+`)
	seen := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, diags := hclsyntax.ParseConfig(src, f, hcl.InitialPos)
		if diags.HasErrors() {
			t.Fatalf("%s: %s", f, diags.Error())
		}
		// Every name, in env blocks and in env templates alike.
		for _, name := range envRef.FindAllString(string(src), -1) {
			seen++
			if _, ok := known[name]; !ok {
				t.Errorf("%s sets %s, which no roomlb binary reads", filepath.Base(f), name)
			}
		}
		walk(file.Body.(*hclsyntax.Body), func(task *hclsyntax.Block) {
			checkKillTimeout(t, filepath.Base(f), task)
		})
	}
	if seen == 0 {
		t.Fatal("the Nomad jobs set no ROOMLB_ variable")
	}
}

// walk calls fn for every task block.
func walk(b *hclsyntax.Body, fn func(*hclsyntax.Block)) {
	for _, blk := range b.Blocks {
		if blk.Type == "task" {
			fn(blk)
		}
		walk(blk.Body, fn)
	}
}

// maxKillTimeout is the Nomad client's default max_kill_timeout: a task's
// kill_timeout above it is cut to it.
const maxKillTimeout = 30 * time.Second

// checkKillTimeout: a task that sets ROOMLB_DRAIN_TIMEOUT must be given a
// longer kill_timeout, or Nomad kills it in the middle of its drain, and
// one within the client's max_kill_timeout, or Nomad cuts it short anyway.
func checkKillTimeout(t *testing.T, file string, task *hclsyntax.Block) {
	var drain, kill time.Duration
	if a, ok := task.Body.Attributes["kill_timeout"]; ok {
		v, _ := a.Expr.Value(nil)
		kill, _ = time.ParseDuration(v.AsString())
	}
	for _, blk := range task.Body.Blocks {
		if blk.Type != "env" {
			continue
		}
		if a, ok := blk.Body.Attributes["ROOMLB_DRAIN_TIMEOUT"]; ok {
			v, _ := a.Expr.Value(nil)
			drain, _ = time.ParseDuration(v.AsString())
		}
	}
	if drain > 0 && kill <= drain {
		t.Errorf("%s: task %q drains for up to %v but is killed after %v", file, task.Labels[0], drain, kill)
	}
	if kill > maxKillTimeout {
		t.Errorf("%s: task %q has kill_timeout %v, above the Nomad client's default max_kill_timeout %v", file, task.Labels[0], kill, maxKillTimeout)
	}
}

// TestNodeJobStopsTheSidecarFirst: in the node job the sidecar is the
// group's leader and the monolith a prestart sidecar task, so that a stop
// drains the sidecar while the monolith still runs (and still writes its
// rooms' state), and stops the monolith after.
func TestNodeJobStopsTheSidecarFirst(t *testing.T) {
	f := "../../deploy/nomad/roomlb-node.nomad.hcl"
	src, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	file, diags := hclsyntax.ParseConfig(src, f, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	tasks := map[string]*hclsyntax.Block{}
	walk(file.Body.(*hclsyntax.Body), func(task *hclsyntax.Block) { tasks[task.Labels[0]] = task })
	sc, mono := tasks["sidecar"], tasks["monolith"]
	if sc == nil || mono == nil {
		t.Fatalf("tasks %v, want sidecar and monolith", tasks)
	}
	if v := attr(sc.Body, "leader"); v != "true" {
		t.Errorf("sidecar task: leader = %q, want true", v)
	}
	var hook, sidecar string
	for _, blk := range mono.Body.Blocks {
		if blk.Type == "lifecycle" {
			hook, sidecar = attr(blk.Body, "hook"), attr(blk.Body, "sidecar")
		}
	}
	if hook != "prestart" || sidecar != "true" {
		t.Errorf("monolith task: lifecycle hook %q sidecar %q, want prestart and true", hook, sidecar)
	}
	for _, blk := range sc.Body.Blocks {
		if blk.Type == "lifecycle" {
			t.Errorf("sidecar task: has a lifecycle block; as the leader it is the main task")
		}
	}
}

// attr renders a literal attribute of b ("" when missing).
func attr(b *hclsyntax.Body, name string) string {
	a, ok := b.Attributes[name]
	if !ok {
		return ""
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		return ""
	}
	switch {
	case v.Type().FriendlyName() == "bool":
		if v.True() {
			return "true"
		}
		return "false"
	case v.Type().FriendlyName() == "string":
		return v.AsString()
	}
	return v.GoString()
}

// TestNomadJobsShareWhatTheMonolithsMustShare: every monolith of the node
// job gets the shared OpenTogetherTube session secret, a shared Postgres
// database and the Redis URL from the job's variables; Redis asks for a
// password; the routers' origins are a job variable, and their port is
// dynamic (two routers on one Nomad client).
func TestNomadJobsShareWhatTheMonolithsMustShare(t *testing.T) {
	read := func(name string) string {
		src, err := os.ReadFile("../../deploy/nomad/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(src)
	}
	node := read("roomlb-node.nomad.hcl")
	for _, want := range []string{"SESSION_SECRET={{ .session_secret }}", "DB_MODE=postgres", "DATABASE_URL={{ .database_url }}", "REDIS_URL={{ .redis_url }}"} {
		if !strings.Contains(node, want) {
			t.Errorf("roomlb-node.nomad.hcl: the monolith's environment lacks %q", want)
		}
	}
	if redis := read("redis.nomad.hcl"); !strings.Contains(redis, `--requirepass \"$REDIS_PASSWORD\"`) || !strings.Contains(redis, "REDIS_PASSWORD={{ .password }}") {
		t.Errorf("redis.nomad.hcl: Redis runs without the password of its variable")
	}
	router := read("roomlb-router.nomad.hcl")
	if !strings.Contains(router, "ROOMLB_ALLOWED_ORIGINS  = var.allowed_origins") {
		t.Errorf("roomlb-router.nomad.hcl: the allowed origins are not the job variable")
	}
	if strings.Contains(router, "static =") {
		t.Errorf("roomlb-router.nomad.hcl: a static port needs a Nomad client per router")
	}
	for _, f := range []string{node, router} {
		if strings.Contains(f, "ghcr.io") {
			t.Errorf("a job names an image the README does not build")
		}
	}
}
