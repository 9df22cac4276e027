package ott

import (
	"errors"
	"strconv"
)

// Decode errors. A *SyntaxError unwraps to ErrSyntax and a *FieldError to
// ErrField.
var (
	ErrSyntax      = errors.New("ott: invalid JSON")
	ErrEnvelope    = errors.New("ott: bad envelope")
	ErrUnknownType = errors.New("ott: unknown message type")
	ErrField       = errors.New("ott: bad field")
)

// SyntaxError is a frame that is not one JSON value.
type SyntaxError struct {
	Offset int // byte offset in the frame where the problem was found
	msg    string
}

func (e *SyntaxError) Error() string {
	return "ott: invalid JSON at offset " + strconv.Itoa(e.Offset) + ": " + e.msg
}

func (e *SyntaxError) Unwrap() error { return ErrSyntax }

// FieldError is a payload field that is missing or of the wrong JSON type.
type FieldError struct {
	Type    Type
	Field   string // as on the wire: "client_id", "room.name", "rooms[].room"
	Problem string // "missing", "not a string", ...
}

func (e *FieldError) Error() string {
	return "ott: " + e.Type.String() + ": " + e.Field + ": " + e.Problem
}

func (e *FieldError) Unwrap() error { return ErrField }

type envelopeError string

func (e envelopeError) Error() string { return "ott: bad envelope: " + string(e) }
func (e envelopeError) Unwrap() error { return ErrEnvelope }

type unknownTypeError struct{ name string }

func (e *unknownTypeError) Error() string {
	return "ott: unknown message type " + strconv.Quote(e.name)
}

func (e *unknownTypeError) Unwrap() error { return ErrUnknownType }
