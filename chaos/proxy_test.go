package chaos

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// TestLinkProxy: bytes go both ways, also with a delay, and what a stalled
// link held arrives once it resumes, on the same connection.
func TestLinkProxy(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() { // an echo server, line by line
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	}()
	p, err := newLinkProxy("127.0.0.1:0", up.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	echo := func(s string) {
		t.Helper()
		if _, err := c.Write([]byte(s + "\n")); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != s+"\n" {
			t.Fatalf("echo of %q: %q, %v", s, got, err)
		}
	}
	echo("plain")
	p.setLatency(5 * time.Millisecond)
	echo("slow")
	p.setLatency(0)
	p.setStalled(true)
	if _, err := c.Write([]byte("held\n")); err != nil {
		t.Fatal(err)
	}
	p.setStalled(false)
	if got, err := r.ReadString('\n'); err != nil || got != "held\n" {
		t.Fatalf("after the stall: %q, %v", got, err)
	}
	echo("after")
}
