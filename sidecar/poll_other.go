//go:build !linux

package sidecar

import "errors"

// Without epoll each client has a goroutine reading it (see poll_linux.go).

type poller struct{}

type pollConn struct{}

func clientPoller() *poller { return nil }

func newPollConn(any) *pollConn { return nil }

func (*poller) arm(*client) error { return errNoPoller }

func (*poller) forget(*client) {}

var errNoPoller = errors.New("sidecar: no client poller")
