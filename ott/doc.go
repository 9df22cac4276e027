// Package ott holds the messages of the OpenTogetherTube balancer <-> monolith
// protocol and their JSON codec.
//
// What roomlb relies on in that protocol (the messages, the monolith's
// behaviour, the client side, its Redis keys and its pitfalls) is written up
// in PROTOCOL.md in this directory; comments in this module cite its sections
// as "ott/PROTOCOL.md §N" or, within a file that already names it, "§N".
//
// The sidecar dials its monolith and speaks this protocol as the balancer:
// it encodes B2M messages (init, load, unload, join, leave, client_msg) and
// decodes M2B messages (init, loaded, unloaded, gossip, room_msg, kick). The
// fake monolith in ott/otttest does the reverse.
//
// Every frame is one envelope {"type":"<name>","payload":{...}}. Decoding
// (DecodeM2B, DecodeB2M, or a Decoder that reuses strings) parses the envelope
// once and the payload once, straight into a typed message; the payloads the
// sidecar relays (room_msg.payload, client_msg.payload) and the room metadata
// it stores are kept as raw bytes that alias the frame, never re-encoded.
// Encoding is append style: every message has an Append(dst []byte) []byte
// method that writes the whole envelope into a caller-provided buffer.
//
// Because "init" exists in both directions with different payloads, there
// are two decode functions, one per direction, rather than one Decode.
package ott
