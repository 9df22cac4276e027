package ott

import "io"

// ReadMessage reads r, one WebSocket message's reader
// (websocket.Conn.NextReader), to its end, appending to buf and growing it
// only when it is full: a reader that keeps its buffer reads every message
// of a connection without allocating. Balancer link frames and client
// frames alike are read so.
func ReadMessage(buf []byte, r io.Reader) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
