package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/roomlb/roomlb/bench"
)

// runBench starts the peers on loopback, measures them and prints the
// table; `--worker` is the load generator's worker process, driven over
// stdin and stdout by the parent bench.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		quick    = fs.Bool("quick", false, "a smaller run, about half as long")
		jsonFile = fs.String("json", "", "also write the figures to this file as JSON")
		figures  = fs.String("figures", "", "comma-separated figures to run, 1 to 9 (default: all)")
		mono     = fs.String("monolith", bench.MonolithFake, "monolith behind the hot-path figures: fake (Go, in process) or node (the reference monolith)")
		fanout   = fs.String("fanout-monolith", "", "monolith of figure 3, whose process CPU is measured (default: node when node is on PATH, else fake)")
		haproxy  = fs.String("haproxy", "", "haproxy binary (default: haproxy on PATH)")
		dir      = fs.String("dir", "", "keep logs and configs in this folder (default: a temporary one, removed)")
		worker   = fs.Bool("worker", false, "run as a load-generator worker of a parent bench (internal)")
	)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *worker {
		return bench.Worker(ctx, os.Stdin, stdout)
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: find this binary: %w", err)
	}
	o := bench.Options{Binary: bin, Scale: bench.Full, Monolith: *mono, FanoutMonolith: *fanout, HAProxy: *haproxy, Dir: *dir, Log: stderr}
	if *quick {
		o.Scale = bench.Quick
	}
	if o.FanoutMonolith == "" {
		o.FanoutMonolith = bench.MonolithFake
		if _, err := exec.LookPath("node"); err == nil {
			o.FanoutMonolith = bench.MonolithNode
		}
	}
	for _, s := range strings.Split(*figures, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 9 {
			return fmt.Errorf("--figures: %q is not a figure (1 to 9)", s)
		}
		o.Figures = append(o.Figures, n)
	}
	rep, runErr := bench.Run(ctx, o)
	if rep == nil {
		return runErr
	}
	fmt.Fprint(stdout, rep.Table())
	if *jsonFile != "" {
		b, err := rep.JSON()
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonFile, append(b, '\n'), 0o644); err != nil {
			return errors.Join(runErr, err)
		}
	}
	return runErr
}
