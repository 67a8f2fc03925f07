// Package strictjson parses JSON so that every reader of what Bulkhead
// forwards agrees on what it says.
//
// JSON parsers disagree on inputs the grammar leaves open: a duplicate key
// is first-wins in some, last-wins in others; Go's encoding/json matches
// keys without regard to case (so "Method" fills a field named method);
// invalid UTF-8 and lone surrogates are replaced, kept or refused. A
// gateway that decides on one reading and forwards bytes that another
// parser reads differently authorizes one thing and executes another.
//
// Parse refuses every such input: duplicate keys at any depth, two keys of
// one object that are equal under Unicode case folding, invalid UTF-8 (raw
// or produced by escapes), lone surrogate escapes, nesting beyond a limit,
// and anything after the value. What it accepts has exactly one reading,
// and Value.Append writes it canonically (no whitespace, minimal string
// escapes, members in their original order, numbers as written), so the
// bytes forwarded are the value decided on.
package strictjson

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Kinds of failure; every *Error wraps one.
var (
	ErrSyntax      = errors.New("not valid JSON")
	ErrTrailing    = errors.New("data after the JSON value")
	ErrDepth       = errors.New("nested too deep")
	ErrUTF8        = errors.New("invalid UTF-8")
	ErrSurrogate   = errors.New("lone surrogate escape")
	ErrDuplicate   = errors.New("duplicate key")
	ErrCaseVariant = errors.New("keys differ only in case")
)

// Error is a refusal at a byte offset of the input.
type Error struct {
	Offset int
	Kind   error
	Msg    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("strictjson: %s at offset %d", e.Msg, e.Offset)
}

func (e *Error) Unwrap() error { return e.Kind }

// Kind is the type of a Value.
type Kind uint8

// Kinds of values. The zero Kind is no value (an absent member).
const (
	Null Kind = iota + 1
	Bool
	Number
	String
	Array
	Object
)

// Value is one parsed JSON value. The zero Value is "absent".
type Value struct {
	kind    Kind
	b       bool
	s       string // a string's content, or a number's literal
	items   []Value
	members []Member
}

// Member is one key and value of an object.
type Member struct {
	Key   string
	Value Value
}

// DefaultMaxDepth bounds nesting when Limits.MaxDepth is zero.
const DefaultMaxDepth = 64

// Limits bound what Parse accepts.
type Limits struct {
	// MaxDepth bounds nested objects and arrays; default DefaultMaxDepth.
	MaxDepth int
}

// Parse parses exactly one JSON value, surrounded by optional whitespace.
func Parse(b []byte, lim Limits) (Value, error) {
	if lim.MaxDepth <= 0 {
		lim.MaxDepth = DefaultMaxDepth
	}
	p := parser{b: b, max: lim.MaxDepth}
	p.space()
	v, err := p.value(0)
	if err != nil {
		return Value{}, err
	}
	p.space()
	if p.i != len(p.b) {
		return Value{}, p.fail(ErrTrailing, "data after the JSON value")
	}
	return v, nil
}

type parser struct {
	b   []byte
	i   int
	max int
}

func (p *parser) fail(kind error, format string, args ...any) *Error {
	return &Error{Offset: p.i, Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) value(depth int) (Value, error) {
	if p.i >= len(p.b) {
		return Value{}, p.fail(ErrSyntax, "unexpected end of input")
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		s, err := p.str()
		return Value{kind: String, s: s}, err
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case p.literal("true"):
		return Value{kind: Bool, b: true}, nil
	case p.literal("false"):
		return Value{kind: Bool}, nil
	case p.literal("null"):
		return Value{kind: Null}, nil
	}
	return Value{}, p.fail(ErrSyntax, "unexpected character %q", p.b[p.i])
}

func (p *parser) literal(word string) bool {
	if len(p.b)-p.i >= len(word) && string(p.b[p.i:p.i+len(word)]) == word {
		p.i += len(word)
		return true
	}
	return false
}

func (p *parser) object(depth int) (Value, error) {
	if depth > p.max {
		return Value{}, p.fail(ErrDepth, "nested deeper than %d levels", p.max)
	}
	p.i++ // {
	v := Value{kind: Object}
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return v, nil
	}
	var seen map[string]string // folded key -> key, for larger objects
	for {
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return Value{}, p.fail(ErrSyntax, "expected a key")
		}
		at := p.i
		key, err := p.str()
		if err != nil {
			return Value{}, err
		}
		if err := checkKey(v.members, &seen, key); err != nil {
			err.Offset = at
			return Value{}, err
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return Value{}, p.fail(ErrSyntax, "expected ':' after a key")
		}
		p.i++
		p.space()
		val, err := p.value(depth)
		if err != nil {
			return Value{}, err
		}
		v.members = append(v.members, Member{Key: key, Value: val})
		p.space()
		if p.i >= len(p.b) {
			return Value{}, p.fail(ErrSyntax, "unexpected end of input in an object")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return v, nil
		default:
			return Value{}, p.fail(ErrSyntax, "expected ',' or '}' in an object")
		}
	}
}

// linearKeys is the object size up to which keys are compared pairwise.
const linearKeys = 8

// checkKey refuses key if an earlier member has the same key or one equal
// to it under case folding.
func checkKey(members []Member, seen *map[string]string, key string) *Error {
	if len(members) < linearKeys {
		for _, m := range members {
			if m.Key == key {
				return &Error{Kind: ErrDuplicate, Msg: fmt.Sprintf("duplicate key %.64q", key)}
			}
			if strings.EqualFold(m.Key, key) {
				return caseVariant(m.Key, key)
			}
		}
		return nil
	}
	if *seen == nil {
		*seen = make(map[string]string, 2*len(members))
		for _, m := range members {
			(*seen)[Fold(m.Key)] = m.Key
		}
	}
	f := Fold(key)
	if prev, ok := (*seen)[f]; ok {
		if prev == key {
			return &Error{Kind: ErrDuplicate, Msg: fmt.Sprintf("duplicate key %.64q", key)}
		}
		return caseVariant(prev, key)
	}
	(*seen)[f] = key
	return nil
}

func caseVariant(a, b string) *Error {
	return &Error{Kind: ErrCaseVariant, Msg: fmt.Sprintf("keys %.64q and %.64q differ only in case", a, b)}
}

// Fold maps s to a form shared by every string equal to it under Unicode
// simple case folding (strings.EqualFold): each rune becomes the smallest
// rune of its folding orbit, so "K", "k" and the Kelvin sign agree.
func Fold(s string) string {
	ascii, lower := true, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
		if 'a' <= c && c <= 'z' {
			lower = true // maps to the smaller 'A'..'Z'
		}
	}
	if ascii {
		if !lower {
			return s
		}
		return strings.ToUpper(s)
	}
	return strings.Map(foldRune, s)
}

func foldRune(r rune) rune {
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		m = min(m, f)
	}
	return m
}

func (p *parser) array(depth int) (Value, error) {
	if depth > p.max {
		return Value{}, p.fail(ErrDepth, "nested deeper than %d levels", p.max)
	}
	p.i++ // [
	v := Value{kind: Array}
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return v, nil
	}
	for {
		p.space()
		item, err := p.value(depth)
		if err != nil {
			return Value{}, err
		}
		v.items = append(v.items, item)
		p.space()
		if p.i >= len(p.b) {
			return Value{}, p.fail(ErrSyntax, "unexpected end of input in an array")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return v, nil
		default:
			return Value{}, p.fail(ErrSyntax, "expected ',' or ']' in an array")
		}
	}
}

// str parses a string starting at its opening quote.
func (p *parser) str() (string, error) {
	p.i++ // "
	start := p.i
	// Fast path: no escapes.
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return s, nil
		case c == '\\':
			return p.strSlow(start)
		case c < 0x20:
			return "", p.fail(ErrSyntax, "control character in a string")
		case c < utf8.RuneSelf:
			p.i++
		default:
			r, n := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && n <= 1 {
				return "", p.fail(ErrUTF8, "invalid UTF-8 in a string")
			}
			p.i += n
		}
	}
	return "", p.fail(ErrSyntax, "unterminated string")
}

func (p *parser) strSlow(start int) (string, error) {
	buf := append(make([]byte, 0, p.i-start+16), p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return string(buf), nil
		case c == '\\':
			if p.i+1 >= len(p.b) {
				return "", p.fail(ErrSyntax, "unterminated escape")
			}
			e := p.b[p.i+1]
			p.i += 2
			switch e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				r, err := p.unicodeEscape()
				if err != nil {
					return "", err
				}
				buf = utf8.AppendRune(buf, r)
			default:
				p.i -= 2
				return "", p.fail(ErrSyntax, "invalid escape \\%c", e)
			}
		case c < 0x20:
			return "", p.fail(ErrSyntax, "control character in a string")
		case c < utf8.RuneSelf:
			buf = append(buf, c)
			p.i++
		default:
			r, n := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && n <= 1 {
				return "", p.fail(ErrUTF8, "invalid UTF-8 in a string")
			}
			buf = append(buf, p.b[p.i:p.i+n]...)
			p.i += n
		}
	}
	return "", p.fail(ErrSyntax, "unterminated string")
}

// unicodeEscape reads the XXXX of \uXXXX (p.i just past the u), and the
// low half of a surrogate pair.
func (p *parser) unicodeEscape() (rune, error) {
	at := p.i - 2
	r, ok := hex4(p.b, p.i)
	if !ok {
		return 0, &Error{Offset: at, Kind: ErrSyntax, Msg: "invalid \\u escape"}
	}
	p.i += 4
	switch {
	case r >= 0xDC00 && r <= 0xDFFF:
		return 0, &Error{Offset: at, Kind: ErrSurrogate, Msg: "lone low surrogate escape"}
	case r >= 0xD800 && r <= 0xDBFF:
		if p.i+6 > len(p.b) || p.b[p.i] != '\\' || p.b[p.i+1] != 'u' {
			return 0, &Error{Offset: at, Kind: ErrSurrogate, Msg: "lone high surrogate escape"}
		}
		lo, ok := hex4(p.b, p.i+2)
		if !ok || lo < 0xDC00 || lo > 0xDFFF {
			return 0, &Error{Offset: at, Kind: ErrSurrogate, Msg: "lone high surrogate escape"}
		}
		p.i += 6
		return 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00), nil
	}
	return r, nil
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// number parses the JSON number grammar and keeps the literal.
func (p *parser) number() (Value, error) {
	start := p.i
	if p.b[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.b) && p.b[p.i] == '0':
		p.i++
	case p.i < len(p.b) && p.b[p.i] >= '1' && p.b[p.i] <= '9':
		p.digits()
	default:
		return Value{}, p.fail(ErrSyntax, "invalid number")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return Value{}, p.fail(ErrSyntax, "invalid number")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return Value{}, p.fail(ErrSyntax, "invalid number")
		}
	}
	return Value{kind: Number, s: string(p.b[start:p.i])}, nil
}

func (p *parser) digits() int {
	n := 0
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

// Kind returns the value's kind; 0 for the zero (absent) Value.
func (v Value) Kind() Kind { return v.kind }

// Exists reports whether v is a value (not the zero Value).
func (v Value) Exists() bool { return v.kind != 0 }

// Str returns a string's content.
func (v Value) Str() (string, bool) { return v.s, v.kind == String }

// Boolean returns a boolean's value.
func (v Value) Boolean() (bool, bool) { return v.b, v.kind == Bool }

// NumberText returns a number's literal as written.
func (v Value) NumberText() (string, bool) { return v.s, v.kind == Number }

// Int returns a number written as a plain integer that fits an int64.
func (v Value) Int() (int64, bool) {
	if v.kind != Number {
		return 0, false
	}
	n, err := strconv.ParseInt(v.s, 10, 64)
	return n, err == nil
}

// Items returns an array's elements.
func (v Value) Items() []Value { return v.items }

// Members returns an object's members in their order.
func (v Value) Members() []Member { return v.members }

// Get returns the member named key (exactly), or the zero Value.
func (v Value) Get(key string) Value {
	for _, m := range v.members {
		if m.Key == key {
			return m.Value
		}
	}
	return Value{}
}

// MakeString makes a string value.
func MakeString(s string) Value { return Value{kind: String, s: s} }

// MakeObject makes an object of members, in order. Keys must be distinct.
func MakeObject(members ...Member) Value { return Value{kind: Object, members: members} }

// MakeArray makes an array.
func MakeArray(items ...Value) Value { return Value{kind: Array, items: items} }

// With returns a copy of object v with member key set to val: replaced in
// place if present, appended if not.
func (v Value) With(key string, val Value) Value {
	out := Value{kind: Object, members: make([]Member, 0, len(v.members)+1)}
	found := false
	for _, m := range v.members {
		if m.Key == key {
			m.Value, found = val, true
		}
		out.members = append(out.members, m)
	}
	if !found {
		out.members = append(out.members, Member{Key: key, Value: val})
	}
	return out
}

// Encode returns the canonical encoding of v.
func (v Value) Encode() []byte { return v.Append(nil) }

// Append appends the canonical encoding of v: no whitespace, members in
// order, numbers as written, strings with only '"', '\\' and control
// characters escaped. Parse of the result gives v back.
func (v Value) Append(dst []byte) []byte {
	switch v.kind {
	case Null:
		return append(dst, "null"...)
	case Bool:
		if v.b {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case Number:
		return append(dst, v.s...)
	case String:
		return AppendString(dst, v.s)
	case Array:
		dst = append(dst, '[')
		for i, it := range v.items {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = it.Append(dst)
		}
		return append(dst, ']')
	case Object:
		dst = append(dst, '{')
		for i, m := range v.members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendString(dst, m.Key)
			dst = append(dst, ':')
			dst = m.Value.Append(dst)
		}
		return append(dst, '}')
	}
	return append(dst, "null"...)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a canonical JSON string. Invalid UTF-8 (which
// Parse never produces) is written as U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				dst = append(dst, s[start:i]...)
				dst = append(dst, "\ufffd"...)
				i++
				start = i
				continue
			}
			i += n
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
