package router

import "net"

// handback is what a relay loop hands a relay back with (see
// loop_linux.go): the descriptors of its sockets, and for each direction
// what it passed on but could not write without waiting (pending), the
// client's chunk those bytes came from (to replay if writing them fails),
// and why its source stopped (err: an end, a read error, errMoved,
// errTooBig).
type handback struct {
	fd  [2]int
	dir [2]backDir
}

type backDir struct {
	pending, chunk []byte
	err            error
}

// socketOf is the socket under a connection the router wrapped
// (limitedConn), or c.
func socketOf(c net.Conn) net.Conn {
	if lc, ok := c.(*limitedConn); ok {
		return lc.Conn
	}
	return c
}

// withSocket gives c's wrapper (limitedConn) the socket s in place of its
// own, or returns s when c has none.
func withSocket(c, s net.Conn) net.Conn {
	if lc, ok := c.(*limitedConn); ok {
		lc.Conn = s
		return lc
	}
	return s
}
