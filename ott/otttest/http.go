package otttest

import (
	"cmp"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/roomlb/roomlb/ott"
)

const maxBody = 1 << 20

// Room name rules, only at creation (§8 item 2).
var (
	roomNameRE    = regexp.MustCompile(`(?i)^[a-z0-9_-]+$`)
	reservedNames = []string{"list", "create", "generate"}
	visibilities  = []string{ott.VisibilityPublic, ott.VisibilityUnlisted, ott.VisibilityPrivate}
	queueModes    = []string{"manual", "vote", "loop", "dj"}
)

// apiError is an error answer of the API: {"success":false,"error":{...}}.
type apiError struct {
	status int
	Name   string `json:"name"`
	Msg    string `json:"message"`
	Arg    string `json:"arg,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func (e *apiError) Error() string { return e.Name + ": " + e.Msg }

func badArg(arg, reason string) *apiError {
	return &apiError{status: http.StatusBadRequest, Name: "BadApiArgumentException", Msg: arg + " " + reason, Arg: arg, Reason: reason}
}

var errNotFound = &apiError{status: http.StatusNotFound, Name: "NotFound", Msg: "not found"}

func (m *Monolith) serveAPI(w http.ResponseWriter, r *http.Request) {
	if err := m.route(w, r); err != nil {
		var ae *apiError
		switch {
		case errors.As(err, &ae):
		case errors.Is(err, errRoomNotFound):
			ae = &apiError{status: http.StatusNotFound, Name: "RoomNotFoundException", Msg: "Room not found"}
		case errors.Is(err, errRoomNameTaken):
			ae = &apiError{status: http.StatusBadRequest, Name: "RoomNameTakenException", Msg: "Room name taken"}
		default:
			m.log.Error("http", "method", r.Method, "path", r.URL.Path, logErr, err)
			ae = &apiError{status: http.StatusInternalServerError, Name: "Unknown", Msg: "internal error"}
		}
		writeJSON(w, ae.status, struct {
			Success bool      `json:"success"`
			Error   *apiError `json:"error"`
		}{false, ae})
	}
}

func (m *Monolith) route(w http.ResponseWriter, r *http.Request) error {
	path := r.URL.EscapedPath()
	get, post := r.Method == http.MethodGet, r.Method == http.MethodPost
	switch {
	case path == "/api/status" && get:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return nil
	case path == "/api/auth/grant" && get:
		return m.grant(w, r)
	case path == "/api/room/list" && get:
		return m.list(w)
	case path == "/api/room/create" && post:
		return m.create(w, r)
	case path == "/api/room/generate" && post:
		rm, err := m.createRoom(r.Context(), newState(uuid.NewString(), true))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, struct {
			Success bool   `json:"success"`
			Room    string `json:"room"`
		}{true, rm.st.Name})
		return nil
	case strings.HasPrefix(path, "/api/room/") && get:
		seg := strings.TrimSuffix(strings.TrimPrefix(path, "/api/room/"), "/")
		if seg == "" || strings.Contains(seg, "/") {
			return errNotFound
		}
		name, err := url.PathUnescape(seg)
		if err != nil {
			return badArg("name", "is not valid percent-encoding")
		}
		// Like the real one, looking at a room loads it (and tells the
		// balancers).
		rm, err := m.getRoom(name)
		if err != nil {
			return err
		}
		m.mu.Lock()
		info := rm.infoJSON(time.Now())
		m.mu.Unlock()
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Write(info)
		return nil
	}
	return errNotFound
}

// grant makes an anonymous session (§5.2, §7): base64 of 512 random bytes.
func (m *Monolith) grant(w http.ResponseWriter, r *http.Request) error {
	var b [512]byte
	rand.Read(b[:])
	token := base64.StdEncoding.EncodeToString(b[:])
	s, _ := json.Marshal(struct {
		IsLoggedIn bool   `json:"isLoggedIn"`
		Username   string `json:"username"`
	}{false, randomUsername()})
	if err := m.rdb.SetEx(r.Context(), authKeyPrefix+token, s, sessionLifetime).Err(); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: "token", Value: url.QueryEscape(token), Path: "/", HttpOnly: true,
		SameSite: http.SameSiteLaxMode, MaxAge: int(sessionLifetime / time.Second)})
	writeJSON(w, http.StatusOK, map[string]string{"token": token})
	return nil
}

// list answers the public loaded rooms, users desc then name.
func (m *Monolith) list(w http.ResponseWriter) error {
	m.mu.Lock()
	var rooms []ott.RoomMetadata
	for _, r := range m.rooms {
		if r.st.Visibility == ott.VisibilityPublic {
			rooms = append(rooms, r.metadata())
		}
	}
	m.mu.Unlock()
	// Users desc, then name; case-insensitive first, roughly like the real
	// one's localeCompare.
	slices.SortStableFunc(rooms, func(a, b ott.RoomMetadata) int {
		return cmp.Or(cmp.Compare(b.Users, a.Users), strings.Compare(lower(a.Name), lower(b.Name)), strings.Compare(a.Name, b.Name))
	})
	b := []byte{'['}
	for i := range rooms {
		if i > 0 {
			b = append(b, ',')
		}
		b = rooms[i].AppendJSON(b)
	}
	b = append(b, ']')
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Write(b)
	return nil
}

// create is POST /api/room/create: {name, title?, description?, visibility?,
// queueMode?, isTemporary?}; isTemporary defaults to true like the real API.
func (m *Monolith) create(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return err
	}
	if len(body) > maxBody {
		return &apiError{status: http.StatusRequestEntityTooLarge, Name: "PayloadTooLarge", Msg: "body too large"}
	}
	var req struct {
		Name        *string `json:"name"`
		Title       *string `json:"title"`
		Description *string `json:"description"`
		Visibility  *string `json:"visibility"`
		QueueMode   *string `json:"queueMode"`
		IsTemporary *bool   `json:"isTemporary"`
	}
	if len(body) > 0 && json.Unmarshal(body, &req) != nil {
		return &apiError{status: http.StatusBadRequest, Name: "BadRequest", Msg: "body is not JSON"}
	}
	switch {
	case req.Name == nil || *req.Name == "":
		return badArg("name", "missing")
	case slices.Contains(reservedNames, *req.Name):
		return badArg("name", "not allowed (reserved)")
	case len(*req.Name) < 3 || len(*req.Name) > 32:
		return badArg("name", "not allowed (too short or too long)")
	case !roomNameRE.MatchString(*req.Name):
		return badArg("name", "not allowed (invalid characters)")
	case req.Visibility != nil && !slices.Contains(visibilities, *req.Visibility):
		return badArg("visibility", "must be one of "+strings.Join(visibilities, ", "))
	case req.QueueMode != nil && !slices.Contains(queueModes, *req.QueueMode):
		return badArg("queueMode", "must be one of "+strings.Join(queueModes, ", "))
	}
	st := newState(*req.Name, req.IsTemporary == nil || *req.IsTemporary)
	st.Title = deref(req.Title, "")
	st.Description = deref(req.Description, "")
	st.Visibility = deref(req.Visibility, ott.VisibilityPublic)
	st.QueueMode = deref(req.QueueMode, "manual")
	if _, err := m.createRoom(r.Context(), st); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"success": true})
	return nil
}

func newState(name string, temporary bool) roomState {
	st := roomState{Name: name, IsTemporary: temporary}
	st.fillDefaults()
	return st
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b := mustJSON(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// Anonymous sessions get names shaped like the real ones.
var (
	adjectives = []string{"brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "kind", "lively", "proud", "quick", "silly", "witty", "zesty"}
	colors     = []string{"amber", "azure", "coral", "crimson", "golden", "indigo", "jade", "lilac", "olive", "rose", "ruby", "teal", "violet"}
	animals    = []string{"badger", "crane", "dolphin", "falcon", "gecko", "heron", "koala", "lemur", "otter", "panda", "quokka", "raven", "tiger", "walrus"}
)

func randomUsername() string {
	pick := func(list []string) string {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(list))))
		return list[n.Int64()]
	}
	return pick(adjectives) + "_" + pick(colors) + "_" + pick(animals)
}
