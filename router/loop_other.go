//go:build !linux

package router

import (
	"errors"
	"net"
)

// Relay loops need epoll: elsewhere every relay runs on its goroutines.
type loop struct{}

func pickLoop() *loop              { return nil }
func (*loop) adopt(*relay) bool    { return false }
func (*loop) kick(*relay)          {}
func fdConn(int) (net.Conn, error) { return nil, errors.New("router: no relay loops here") }
