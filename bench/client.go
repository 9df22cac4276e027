package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"

	"github.com/roomlb/roomlb/contract"
	"github.com/roomlb/roomlb/ott"
)

// The load generator speaks two protocols: the browser's (through a router,
// HAProxy or straight to a sidecar: auth frame, then the room's frames) and
// the balancer's (straight to a monolith: join, client_msg, room_msg), which
// is what a proxy of zero cost would cost the monolith.

// dialer dials WebSockets from a given loopback source address, so that many
// connections do not exhaust one address's ephemeral ports.
func dialer(local net.IP) *websocket.Dialer {
	nd := &net.Dialer{Timeout: 5 * time.Second}
	if local != nil {
		nd.LocalAddr = &net.TCPAddr{IP: local}
	}
	return &websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   2048,
		WriteBufferSize:  1024,
	}
}

// wsClient is a browser-like client of one room.
type wsClient struct {
	conn *websocket.Conn
	node string // X-Roomlb-Node of the handshake
	buf  []byte
}

// dialClient connects to base+/api/room/<room> and sends the auth frame.
func dialClient(ctx context.Context, d *websocket.Dialer, base, room, token string, hdr http.Header) (*wsClient, error) {
	conn, res, err := d.DialContext(ctx, base+"/api/room/"+room, hdr)
	if err != nil {
		de := &dialError{room: room, err: err}
		if res != nil {
			de.status = res.StatusCode
		}
		return nil, de
	}
	c := &wsClient{conn: conn, node: res.Header.Get(contract.HeaderNode)}
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"action":"auth","token":"`+token+`"}`)); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// dialError is a client's handshake that failed; status is the HTTP
// answer's (0 without one).
type dialError struct {
	room   string
	status int
	err    error
}

func (e *dialError) Error() string {
	if e.status != 0 {
		return fmt.Sprintf("dial %s: %v (HTTP %d)", e.room, e.err, e.status)
	}
	return fmt.Sprintf("dial %s: %v", e.room, e.err)
}

func (e *dialError) Unwrap() error { return e.err }

// httpStatus is the HTTP status that refused a client's handshake (0 when
// err is no such refusal).
func httpStatus(err error) int {
	if de, ok := errors.AsType[*dialError](err); ok {
		return de.status
	}
	return 0
}

// read returns the next text frame; it is valid until the next read.
func (c *wsClient) read() ([]byte, error) {
	for {
		mt, r, err := c.conn.NextReader()
		if err != nil {
			return nil, err
		}
		c.buf, err = ott.ReadMessage(c.buf[:0], r)
		if err != nil {
			return nil, err
		}
		if mt == websocket.TextMessage {
			return c.buf, nil
		}
	}
}

// waitAction reads until a frame with "action":"<action>", within limit.
func (c *wsClient) waitAction(action string, limit time.Duration) error {
	c.conn.SetReadDeadline(time.Now().Add(limit))
	defer c.conn.SetReadDeadline(time.Time{})
	want := []byte(`"action":"` + action + `"`)
	for {
		f, err := c.read()
		if err != nil {
			return fmt.Errorf("waiting for %q: %w", action, err)
		}
		if bytes.Contains(f, want) {
			return nil
		}
	}
}

// chat sends a chat message (request type 11) with text.
func (c *wsClient) chat(text []byte) error {
	return c.conn.WriteMessage(websocket.TextMessage, chatFrame(nil, text))
}

func (c *wsClient) close() { c.conn.Close() }

func chatFrame(dst, text []byte) []byte {
	dst = append(dst, `{"action":"req","request":{"type":11,"text":"`...)
	dst = append(dst, text...)
	return append(dst, `"}}`...)
}

// stamp is the text of a measured chat: the sender's index and the send
// time in nanoseconds since base.
func stamp(dst []byte, sender int, base time.Time) []byte {
	dst = append(dst, 'b')
	dst = strconv.AppendInt(dst, int64(sender), 10)
	dst = append(dst, '.')
	return strconv.AppendInt(dst, int64(time.Since(base)), 10)
}

var chatMarker = []byte(`"action":"chat"`)
var textMarker = []byte(`"text":"b`)

// parseStamp finds a stamp in a chat broadcast (browser frame or room_msg
// envelope): the sender and the send time.
func parseStamp(f []byte) (sender int, sent time.Duration, ok bool) {
	if !bytes.Contains(f, chatMarker) {
		return 0, 0, false
	}
	i := bytes.Index(f, textMarker)
	if i < 0 {
		return 0, 0, false
	}
	f = f[i+len(textMarker):]
	dot := bytes.IndexByte(f, '.')
	end := bytes.IndexByte(f, '"')
	if dot < 0 || end < dot {
		return 0, 0, false
	}
	s, err1 := strconv.Atoi(string(f[:dot]))
	ns, err2 := strconv.ParseInt(string(f[dot+1:end]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return s, time.Duration(ns), true
}

// balancerLink is the load generator speaking the balancer protocol to a
// monolith: one link multiplexes many clients.
type balancerLink struct {
	conn *websocket.Conn
	id   string
	wmu  sync.Mutex
	wbuf []byte
	rbuf []byte
	dec  ott.Decoder
}

func dialBalancer(ctx context.Context, d *websocket.Dialer, addr string) (*balancerLink, error) {
	conn, _, err := d.DialContext(ctx, "ws://"+addr+"/", nil)
	if err != nil {
		return nil, fmt.Errorf("dial monolith: %w", err)
	}
	l := &balancerLink{conn: conn, id: uuid.NewString()}
	// The monolith speaks first (init); then ours.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := l.read()
	conn.SetReadDeadline(time.Time{})
	if err != nil || m.Type != ott.TypeInit {
		conn.Close()
		return nil, errors.Join(errors.New("bench: monolith sent no init"), err)
	}
	if err := l.send(ott.BalancerInit{ID: l.id}.Append); err != nil {
		conn.Close()
		return nil, err
	}
	return l, nil
}

// send writes the frame that appendMsg appends.
func (l *balancerLink) send(appendMsg func([]byte) []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.wbuf = appendMsg(l.wbuf[:0])
	return l.conn.WriteMessage(websocket.TextMessage, l.wbuf)
}

func (l *balancerLink) join(room, client, token string) error {
	return l.send(ott.Join{Room: room, Client: client, Token: token}.Append)
}

func (l *balancerLink) chat(client string, text []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.wbuf = append(l.wbuf[:0], `{"type":"client_msg","payload":{"client_id":"`...)
	l.wbuf = append(l.wbuf, client...)
	l.wbuf = append(l.wbuf, `","payload":`...)
	l.wbuf = chatFrame(l.wbuf, text)
	l.wbuf = append(l.wbuf, "}}"...)
	return l.conn.WriteMessage(websocket.TextMessage, l.wbuf)
}

// read decodes the next frame; payloads alias a buffer reused by the next
// read.
func (l *balancerLink) read() (ott.M2B, error) {
	for {
		mt, r, err := l.conn.NextReader()
		if err != nil {
			return ott.M2B{}, err
		}
		l.rbuf, err = ott.ReadMessage(l.rbuf[:0], r)
		if err != nil {
			return ott.M2B{}, err
		}
		if mt != websocket.TextMessage {
			continue
		}
		m, err := l.dec.DecodeM2B(l.rbuf)
		if err != nil {
			continue
		}
		return m, nil
	}
}

func (l *balancerLink) close() { l.conn.Close() }

// joinAll joins every client on the link and waits for each one's "you"
// (the last message of a join), answering other frames with nothing.
func (l *balancerLink) joinAll(joins map[string]string, token string, limit time.Duration) error {
	for client, room := range joins {
		if err := l.join(room, client, token); err != nil {
			return err
		}
	}
	l.conn.SetReadDeadline(time.Now().Add(limit))
	defer l.conn.SetReadDeadline(time.Time{})
	left := len(joins)
	you := []byte(`"action":"you"`)
	for left > 0 {
		m, err := l.read()
		if err != nil {
			return fmt.Errorf("bench: joins on the monolith link: %d of %d missing: %w", left, len(joins), err)
		}
		switch m.Type {
		case ott.TypeRoomMsg:
			if m.RoomMsg.ClientID != "" && bytes.Contains(m.RoomMsg.Payload, you) {
				left--
			}
		case ott.TypeKick:
			return fmt.Errorf("bench: monolith kicked %s (%d)", m.Kick.ClientID, m.Kick.Reason)
		}
	}
	return nil
}
