package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/roomlb/roomlb/internal/procattr"
	"github.com/roomlb/roomlb/ott/otttest"
)

// A worker is a load-generator process (`roomlb bench --worker`), for what
// must not share the bench's process: thousands of idle connections (each
// process may hold 20,000 files at most) and a fake monolith whose CPU is
// measured. The parent sends one JSON request per line on its stdin and reads
// one JSON answer per line from its stdout; the worker stops when its stdin
// closes.

// workerReq is one request to a worker.
type workerReq struct {
	Op string `json:"op"` // open, close, monolith

	// open: connect PerRoom clients to each of Rooms at Base, from source
	// address Local, each sending the auth frame with Token; answered once
	// every client has joined (or failed).
	Base    string      `json:"base,omitempty"`
	Header  http.Header `json:"header,omitempty"`
	Rooms   []string    `json:"rooms,omitempty"`
	PerRoom int         `json:"per_room,omitempty"`
	Token   string      `json:"token,omitempty"`
	Local   string      `json:"local,omitempty"`

	// monolith: start a fake monolith over this Redis, with this state
	// debounce (0: the fake's default).
	Redis         string        `json:"redis,omitempty"`
	StateDebounce time.Duration `json:"state_debounce,omitempty"`
}

// workerResp answers a workerReq.
type workerResp struct {
	Err      string `json:"error,omitempty"`
	Open     int    `json:"open,omitempty"`
	Balancer string `json:"balancer,omitempty"`
	HTTP     string `json:"http,omitempty"`
}

// Worker serves a parent bench's requests from in until in closes or ctx
// ends; answers go to out.
func Worker(ctx context.Context, in io.Reader, out io.Writer) error {
	w := &workerState{}
	defer w.closeAll()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	enc := json.NewEncoder(out)
	lines := make(chan []byte)
	go func() {
		defer close(lines)
		for sc.Scan() {
			lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	for {
		var line []byte
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case line, ok = <-lines:
			if !ok {
				return nil
			}
		}
		var req workerReq
		var resp workerResp
		if err := json.Unmarshal(line, &req); err != nil {
			resp.Err = err.Error()
		} else if err := w.do(ctx, &req, &resp); err != nil {
			resp.Err = err.Error()
		}
		if err := enc.Encode(&resp); err != nil {
			return err
		}
	}
}

type workerState struct {
	mu    sync.Mutex
	conns []*wsClient
	wg    sync.WaitGroup
	mono  *otttest.Monolith
	rdb   *redis.Client
}

func (w *workerState) do(ctx context.Context, req *workerReq, resp *workerResp) error {
	switch req.Op {
	case "open":
		n, err := w.open(ctx, req)
		resp.Open = n
		return err
	case "close":
		w.closeConns()
		return nil
	case "monolith":
		if w.mono != nil {
			return errors.New("a monolith runs already")
		}
		opt, err := redis.ParseURL(req.Redis)
		if err != nil {
			return err
		}
		w.rdb = redis.NewClient(opt)
		w.mono, err = otttest.New(otttest.Config{Redis: w.rdb, StateDebounce: req.StateDebounce})
		if err != nil {
			return err
		}
		resp.Balancer, resp.HTTP = w.mono.BalancerAddr(), w.mono.HTTPAddr()
		return nil
	}
	return fmt.Errorf("unknown op %q", req.Op)
}

// open connects the clients, 32 at a time, and keeps them reading.
func (w *workerState) open(ctx context.Context, req *workerReq) (int, error) {
	d := dialer(net.ParseIP(req.Local))
	sem := make(chan struct{}, 32)
	var mu sync.Mutex
	var firstErr error
	n := 0
	var wg sync.WaitGroup
	for _, room := range req.Rooms {
		for range req.PerRoom {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := dialClient(ctx, d, req.Base, room, req.Token, req.Header)
				if err == nil {
					if err = c.waitAction("you", 30*time.Second); err != nil {
						c.close()
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					firstErr = cmpErr(firstErr, err)
					return
				}
				n++
				w.keep(c)
			}()
		}
	}
	wg.Wait()
	return n, firstErr
}

// keep holds an idle client, reading (and dropping) what it is sent.
func (w *workerState) keep(c *wsClient) {
	w.mu.Lock()
	w.conns = append(w.conns, c)
	w.mu.Unlock()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			if _, err := c.read(); err != nil {
				return
			}
		}
	}()
}

func (w *workerState) closeConns() {
	w.mu.Lock()
	conns := w.conns
	w.conns = nil
	w.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	w.wg.Wait()
}

func (w *workerState) closeAll() {
	w.closeConns()
	if w.mono != nil {
		w.mono.Close()
		w.rdb.Close()
	}
}

// workerProc is a running worker, seen from the parent.
type workerProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *json.Decoder
	done chan struct{}
	mu   sync.Mutex
}

func (e *env) startWorker(name string) (*workerProc, error) {
	logf, err := os.Create(filepath.Join(e.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(e.opts.Binary, "bench", "--worker")
	cmd.Stderr = logf
	cmd.SysProcAttr = procattr.Tied()
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench: start worker: %w", err)
	}
	w := &workerProc{cmd: cmd, in: in, out: json.NewDecoder(out), done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(w.done)
	}()
	return w, nil
}

func (w *workerProc) pid() int { return w.cmd.Process.Pid }

// call sends a request and waits, up to limit, for its answer.
func (w *workerProc) call(req workerReq, limit time.Duration) (workerResp, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b, _ := json.Marshal(req)
	if _, err := w.in.Write(append(b, '\n')); err != nil {
		return workerResp{}, fmt.Errorf("bench: worker: %w", err)
	}
	got := make(chan error, 1)
	var resp workerResp
	go func() { got <- w.out.Decode(&resp) }()
	select {
	case err := <-got:
		if err != nil {
			return resp, fmt.Errorf("bench: worker: %w", err)
		}
	case <-time.After(limit):
		w.cmd.Process.Kill()
		<-got
		return resp, fmt.Errorf("bench: worker gave no answer to %s within %v", req.Op, limit)
	}
	if resp.Err != "" {
		return resp, errors.New("bench: worker: " + resp.Err)
	}
	return resp, nil
}

// stop closes the worker's stdin and waits for it, killing it after 10 s.
func (w *workerProc) stop() {
	w.in.Close()
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		w.cmd.Process.Kill()
		<-w.done
	}
}
