package ott

import (
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds the nesting of a JSON value, as encoding/json does, so a
// frame of a million '[' cannot exhaust the stack.
const maxDepth = 10000

// scanner is a validating JSON reader over one frame. It accepts exactly
// what JSON.parse accepts (RFC 8259; invalid UTF-8 inside strings is taken,
// as the monolith's Buffer.toString() does, and replaced by U+FFFD when a
// string is converted).
type scanner struct {
	data    []byte
	pos     int
	depth   int
	strs    *Decoder // interns ids; nil: plain conversion
	scratch []byte   // unescaped keys
}

// ws skips whitespace.
func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.pos < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

func (s *scanner) syntax(what string) error {
	return &SyntaxError{Offset: s.pos, msg: what}
}

// end checks that nothing but whitespace follows the value.
func (s *scanner) end() error {
	s.ws()
	if s.pos != len(s.data) {
		return s.syntax("data after top-level value")
	}
	return nil
}

// value skips one JSON value, validating it, and returns its bytes.
func (s *scanner) value() ([]byte, error) {
	c := s.peek()
	start := s.pos
	var err error
	switch {
	case c == '{':
		err = s.skipObject()
	case c == '[':
		err = s.skipArray()
	case c == '"':
		_, _, err = s.stringBytes()
	case c == '-' || (c >= '0' && c <= '9'):
		_, err = s.number()
	case c == 't':
		err = s.literal("true")
	case c == 'f':
		err = s.literal("false")
	case c == 'n':
		err = s.literal("null")
	default:
		err = s.syntax("expected a value")
	}
	if err != nil {
		return nil, err
	}
	return s.data[start:s.pos], nil
}

func (s *scanner) literal(lit string) error {
	if len(s.data)-s.pos < len(lit) || string(s.data[s.pos:s.pos+len(lit)]) != lit {
		return s.syntax("invalid literal")
	}
	s.pos += len(lit)
	return nil
}

func (s *scanner) enter() error {
	s.depth++
	if s.depth > maxDepth {
		return s.syntax("nested too deeply")
	}
	return nil
}

// skipObject skips the object at s.pos.
func (s *scanner) skipObject() error {
	if err := s.enter(); err != nil {
		return err
	}
	s.pos++ // '{'
	first := true
	for {
		_, ok, err := s.nextKey(&first, false)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if _, err := s.value(); err != nil {
			return err
		}
	}
	s.depth--
	return nil
}

// skipArray skips the array at s.pos.
func (s *scanner) skipArray() error {
	if err := s.enter(); err != nil {
		return err
	}
	s.pos++ // '['
	first := true
	for {
		ok, err := s.nextElem(&first)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if _, err := s.value(); err != nil {
			return err
		}
	}
	s.depth--
	return nil
}

// openObject consumes the '{' of an object; false if the value is not an
// object (nothing consumed).
func (s *scanner) openObject() bool {
	if s.peek() != '{' {
		return false
	}
	s.pos++
	return true
}

// nextKey reads the next member key of an object whose '{' was consumed,
// and the ':' after it. It returns ok false after consuming the closing '}'.
// first must start true. With unesc, the key is JSON-unescaped (into
// scratch when it holds escapes); otherwise it is raw.
func (s *scanner) nextKey(first *bool, unesc bool) (key []byte, ok bool, err error) {
	c := s.peek()
	if *first {
		*first = false
		if c == '}' {
			s.pos++
			return nil, false, nil
		}
	} else {
		switch c {
		case '}':
			s.pos++
			return nil, false, nil
		case ',':
			s.pos++
			c = s.peek()
		default:
			return nil, false, s.syntax("expected ',' or '}' in object")
		}
	}
	if c != '"' {
		return nil, false, s.syntax("expected a string key")
	}
	raw, esc, err := s.stringBytes()
	if err != nil {
		return nil, false, err
	}
	if s.peek() != ':' {
		return nil, false, s.syntax("expected ':' after key")
	}
	s.pos++
	if unesc && esc {
		s.scratch = unescape(s.scratch[:0], raw)
		return s.scratch, true, nil
	}
	return raw, true, nil
}

// openArray consumes the '[' of an array; false if the value is not one.
func (s *scanner) openArray() bool {
	if s.peek() != '[' {
		return false
	}
	s.pos++
	return true
}

// nextElem positions the scanner at the next element of an array whose '['
// was consumed; ok false after consuming the closing ']'.
func (s *scanner) nextElem(first *bool) (ok bool, err error) {
	c := s.peek()
	if *first {
		*first = false
		if c == ']' {
			s.pos++
			return false, nil
		}
		return true, nil
	}
	switch c {
	case ']':
		s.pos++
		return false, nil
	case ',':
		s.pos++
		return true, nil
	}
	return false, s.syntax("expected ',' or ']' in array")
}

// stringBytes reads a string at s.pos (after whitespace), validating it. It
// returns the bytes between the quotes, still escaped, and whether they need
// unescape (an escape or a byte that is not ASCII).
func (s *scanner) stringBytes() (raw []byte, special bool, err error) {
	if s.peek() != '"' {
		return nil, false, s.syntax("expected a string")
	}
	s.pos++
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			raw = s.data[start:s.pos]
			s.pos++
			return raw, special, nil
		case c == '\\':
			special = true
			if s.pos+1 >= len(s.data) {
				return nil, false, s.syntax("unterminated string")
			}
			switch s.data[s.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos += 2
			case 'u':
				if len(s.data)-s.pos < 6 {
					return nil, false, s.syntax("short \\u escape")
				}
				for _, h := range s.data[s.pos+2 : s.pos+6] {
					if unhex(h) < 0 {
						return nil, false, s.syntax("invalid \\u escape")
					}
				}
				s.pos += 6
			default:
				return nil, false, s.syntax("invalid escape")
			}
		case c < 0x20:
			return nil, false, s.syntax("control character in string")
		default:
			if c >= utf8.RuneSelf {
				special = true
			}
			s.pos++
		}
	}
	return nil, false, s.syntax("unterminated string")
}

// str reads a string value and converts it.
func (s *scanner) str() (string, error) {
	raw, special, err := s.stringBytes()
	if err != nil {
		return "", err
	}
	return convert(raw, special), nil
}

// id reads a string value that names a room or a client; a Decoder reuses
// the strings of the ids it has seen.
func (s *scanner) id() (string, error) {
	raw, special, err := s.stringBytes()
	if err != nil {
		return "", err
	}
	if special || s.strs == nil {
		return convert(raw, special), nil
	}
	return s.strs.intern(raw), nil
}

// convert turns the raw bytes of a validated string into a Go string.
func convert(raw []byte, special bool) string {
	if !special || (utf8.Valid(raw) && !hasByte(raw, '\\')) {
		return string(raw)
	}
	return string(unescape(make([]byte, 0, len(raw)), raw))
}

func hasByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}

// unescape appends the JSON-unescaped form of a validated string's raw bytes
// to dst. Invalid UTF-8 and lone surrogates become U+FFFD, as in
// encoding/json.
func unescape(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '\\':
			e := raw[i+1]
			i += 2
			switch e {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				r := hex4(raw[i:])
				i += 4
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
						r2 = hex4(raw[i+2:])
					}
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				dst = utf8.AppendRune(dst, r)
			default: // '"', '\\', '/'
				dst = append(dst, e)
			}
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(raw[i:])
			i += size
			dst = utf8.AppendRune(dst, r) // RuneError for invalid bytes
		}
	}
	return dst
}

func unhex(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

func hex4(b []byte) rune {
	return unhex(b[0])<<12 | unhex(b[1])<<8 | unhex(b[2])<<4 | unhex(b[3])
}

// number reads a JSON number and returns its bytes.
func (s *scanner) number() ([]byte, error) {
	s.ws()
	start := s.pos
	d := s.data
	i := s.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		return nil, s.syntax("invalid number")
	}
	if i < len(d) && d[i] == '.' {
		i++
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			return nil, s.syntax("invalid number")
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			return nil, s.syntax("invalid number")
		}
	}
	s.pos = i
	return d[start:i], nil
}

// maxExact is the largest integer a float64 (a JavaScript number) holds
// exactly.
const maxExact = 1 << 53

// parseInt parses an integral JSON number.
func parseInt(num []byte) (int64, bool) {
	if n, err := strconv.ParseInt(string(num), 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil || f > maxExact || f < -maxExact || f != math.Trunc(f) {
		return 0, false
	}
	return int64(f), true
}

// boolean reads true or false.
func (s *scanner) boolean() (bool, error) {
	switch s.peek() {
	case 't':
		return true, s.literal("true")
	case 'f':
		return false, s.literal("false")
	}
	return false, s.syntax("expected a boolean")
}
