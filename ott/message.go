package ott

import "encoding/json"

// Type is the envelope's "type": which message a frame holds. The zero value
// is no message.
type Type uint8

// Message types. TypeInit exists in both directions (with different
// payloads); the others belong to one direction only.
const (
	TypeInit Type = iota + 1 // B2M and M2B

	// B2M
	TypeLoad
	TypeUnload
	TypeJoin
	TypeLeave
	TypeClientMsg

	// M2B
	TypeLoaded
	TypeUnloaded
	TypeGossip
	TypeRoomMsg
	TypeKick

	numTypes
)

var typeNames = [numTypes]string{
	TypeInit:      "init",
	TypeLoad:      "load",
	TypeUnload:    "unload",
	TypeJoin:      "join",
	TypeLeave:     "leave",
	TypeClientMsg: "client_msg",
	TypeLoaded:    "loaded",
	TypeUnloaded:  "unloaded",
	TypeGossip:    "gossip",
	TypeRoomMsg:   "room_msg",
	TypeKick:      "kick",
}

// String returns the type's name on the wire ("room_msg"), or "" for an
// unknown Type.
func (t Type) String() string {
	if t < numTypes {
		return typeNames[t]
	}
	return ""
}

// ParseType returns the Type named by its wire name, or 0 and false.
func ParseType(name string) (Type, bool) {
	t := typeOf([]byte(name))
	return t, t != 0
}

// typeOf maps a wire name to its Type (0 if unknown) without allocating.
func typeOf(name []byte) Type {
	switch string(name) {
	case "init":
		return TypeInit
	case "load":
		return TypeLoad
	case "unload":
		return TypeUnload
	case "join":
		return TypeJoin
	case "leave":
		return TypeLeave
	case "client_msg":
		return TypeClientMsg
	case "loaded":
		return TypeLoaded
	case "unloaded":
		return TypeUnloaded
	case "gossip":
		return TypeGossip
	case "room_msg":
		return TypeRoomMsg
	case "kick":
		return TypeKick
	}
	return 0
}

// isB2M and isM2B tell whether a type exists in that direction.
func (t Type) isB2M() bool {
	return t == TypeInit || (t >= TypeLoad && t <= TypeClientMsg)
}

func (t Type) isM2B() bool {
	return t == TypeInit || (t >= TypeLoaded && t <= TypeKick)
}

// Close codes the monolith puts in kick.reason (its close-code enum,
// ott/PROTOCOL.md §3.4). A browser reconnects on codes below 4000 and stays
// disconnected on 4000 and above (§5.4).
const (
	CloseAway                 = 1001 // room unloaded Commanded or Shutdown
	CloseUnknown              = 4000 // internal error; default of kickme
	CloseInvalidConnectionURL = 4001 // direct connections only
	CloseRoomNotFound         = 4002 // join of a room that does not exist
	CloseRoomUnloaded         = 4003 // room unloaded Keepalive or Admin
	CloseMissingToken         = 4004 // join without a token or session
	CloseKicked               = 4005 // kicked by a moderator
)

// UnloadReason is unloaded.reason. Any string decodes; the monolith sends one
// of the four constants.
type UnloadReason string

// Unload reasons, exact strings (§3.3).
const (
	UnloadKeepalive UnloadReason = "Keepalive" // idle room reaped
	UnloadAdmin     UnloadReason = "Admin"     // forced over the HTTP API
	UnloadCommanded UnloadReason = "Commanded" // a balancer sent unload
	UnloadShutdown  UnloadReason = "Shutdown"  // monolith exiting
)

// B2M is one decoded balancer-to-monolith message: Type says which one of
// the other fields is set.
type B2M struct {
	Type      Type
	Init      BalancerInit
	Load      Load
	Unload    Unload
	Join      Join
	Leave     Leave
	ClientMsg ClientMsg
}

// M2B is one decoded monolith-to-balancer message: Type says which one of
// the other fields is set.
type M2B struct {
	Type     Type
	Init     MonolithInit
	Loaded   Loaded
	Unloaded Unloaded
	Gossip   Gossip
	RoomMsg  RoomMsg
	Kick     Kick
}

// BalancerInit is the balancer's B2M init. The monolith ignores everything
// else a balancer sends until this arrives (§2.3).
type BalancerInit struct {
	ID string `json:"id"`
}

// Load asks the monolith to load a room. It has no negative answer (§4.2).
type Load struct {
	Room string `json:"room"`
}

// Unload asks the monolith to unload a room. Sending it for a room the
// monolith has not loaded crashes the monolith (§4.6).
type Unload struct {
	Room string `json:"room"`
}

// Join adds a client to a room. Note "client", not "client_id".
type Join struct {
	Room   string `json:"room"`
	Client string `json:"client"`
	// Token is the client's auth token. The monolith does not check its
	// JSON type; a token that is missing or not a string decodes as "" (which
	// the monolith answers with kick 4004 either way).
	Token string `json:"token"`
}

// Leave removes a client. Note "client", not "client_id".
type Leave struct {
	Client string `json:"client"`
}

// ClientMsg carries one frame of a client to the monolith.
type ClientMsg struct {
	ClientID string `json:"client_id"`
	// Payload is the client's frame, verbatim: a JSON value (the monolith
	// accepts an object, an array or null). When decoded it aliases the frame.
	// Encoding writes it as is; nil is written as null.
	Payload json.RawMessage `json:"payload"`
}

// MonolithInit is the monolith's M2B init, sent as soon as a balancer
// connects (§2.3).
type MonolithInit struct {
	Port   int    `json:"port"` // the monolith's HTTP port
	Region string `json:"region"`
	ID     string `json:"id"` // new on every monolith start
}

// Loaded says the monolith has loaded a room.
type Loaded struct {
	Room      RoomMetadata `json:"room"`
	LoadEpoch int64        `json:"load_epoch"`
}

// Unloaded says the monolith has unloaded a room. Note "name", not "room".
type Unloaded struct {
	Name   string       `json:"name"`
	Reason UnloadReason `json:"reason"`
}

// Gossip lists every room the monolith holds, the same name twice when it
// holds a duplicate (§8 item 4). It is authoritative.
type Gossip struct {
	Rooms []GossipRoom `json:"rooms"`
}

// GossipRoom is one entry of Gossip.
type GossipRoom struct {
	Room      RoomMetadata `json:"room"`
	LoadEpoch int64        `json:"load_epoch"`
}

// RoomMsg is a server message for one client (ClientID set) or for every
// client of the receiving balancer in Room (ClientID empty).
type RoomMsg struct {
	Room     string `json:"room"`                // canonical casing
	ClientID string `json:"client_id,omitempty"` // empty: broadcast
	// Payload is the frame for the client(s), verbatim. When decoded it
	// aliases the frame. Encoding writes it as is; nil is written as null.
	Payload json.RawMessage `json:"payload"`
}

// Kick tells the balancer to close a client's socket with Reason as the close
// code; the monolith has already forgotten the client (send no leave).
type Kick struct {
	ClientID string `json:"client_id"`
	// Reason is the close code, unvalidated: a client's kickme can make it
	// any integer (pass it through SanitizeCloseCode), and even any JSON
	// value; a reason that is not an integer decodes as 0.
	Reason int `json:"reason"`
}

// RoomMetadata describes a room in loaded and gossip. Field names are
// camelCase on the wire. Decoding requires only "name" (a string); a field
// of another JSON type than documented decodes as its zero value, and Raw
// keeps it.
type RoomMetadata struct {
	Name        string `json:"name"` // canonical casing; required
	Title       string `json:"title"`
	Description string `json:"description"`
	IsTemporary bool   `json:"isTemporary"`
	Visibility  string `json:"visibility"` // public, unlisted, private
	QueueMode   string `json:"queueMode"`  // manual, vote, loop, dj
	// CurrentSource is the playing video, opaque; nil when null or absent.
	CurrentSource json.RawMessage `json:"currentSource"`
	Users         int             `json:"users"`

	// Raw is the whole metadata object as received, aliasing the frame: what
	// the sidecar stores. When Raw is set, encoding writes Raw and ignores the
	// other fields (so nothing the monolith sent is lost); leave it nil to
	// encode the fields.
	Raw json.RawMessage `json:"-"`
}

// Visibility values of RoomMetadata.
const (
	VisibilityPublic   = "public"
	VisibilityUnlisted = "unlisted"
	VisibilityPrivate  = "private"
)
