// Package rpcmsg parses one JSON-RPC 2.0 message as MCP sends it, strictly,
// for every path through the gateway (streamable HTTP and stdio alike).
//
// The message is parsed with strictjson, so it has exactly one reading:
// no duplicate or case-variant keys at any depth, valid UTF-8, no lone
// surrogates. On top of that the envelope is checked: only the members
// JSON-RPC defines, a string or safe-integer id, a printable method, params
// and results that are objects. What is forwarded is Message.Encode, the
// canonical encoding of the value that was checked, never the bytes that
// arrived.
package rpcmsg

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/bulkhead-dev/bulkhead/internal/strictjson"
)

// JSON-RPC error codes.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternal       = -32603
)

// Limits on a message's fields.
const (
	MaxIDLen     = 256
	MaxMethodLen = 128
	// MaxSafeInt is the largest integer every JSON parser keeps exact.
	MaxSafeInt = 1<<53 - 1
)

// Error is a refusal, with the id of the message if it could be read.
type Error struct {
	Code    int
	Message string
	// ID is the message's id (canonical JSON), or nil.
	ID []byte
}

func (e *Error) Error() string { return e.Message }

// Message is one parsed message.
type Message struct {
	// ID is the id, or the zero Value for a notification.
	ID     strictjson.Value
	Method string
	// Params, Result and Error are the zero Value when absent.
	Params strictjson.Value
	Result strictjson.Value
	Error  strictjson.Value
	whole  strictjson.Value
}

// IsRequest reports a request that expects a response.
func (m *Message) IsRequest() bool { return m.Method != "" && m.ID.Exists() }

// IsNotification reports a request without an id.
func (m *Message) IsNotification() bool { return m.Method != "" && !m.ID.Exists() }

// IsResponse reports a result or an error.
func (m *Message) IsResponse() bool { return m.Method == "" && m.ID.Exists() }

// IDJSON is the canonical encoding of the id, or nil.
func (m *Message) IDJSON() []byte {
	if !m.ID.Exists() {
		return nil
	}
	return m.ID.Encode()
}

// Encode is the canonical encoding of the message as parsed: the bytes to
// forward.
func (m *Message) Encode() []byte { return m.whole.Encode() }

// Value is the whole message as parsed.
func (m *Message) Value() strictjson.Value { return m.whole }

// WithResult returns the message with its result replaced.
func (m *Message) WithResult(r strictjson.Value) *Message {
	out := *m
	out.Result = r
	out.whole = m.whole.With("result", r)
	return &out
}

// WithParams returns the message with its params replaced.
func (m *Message) WithParams(p strictjson.Value) *Message {
	out := *m
	out.Params = p
	out.whole = m.whole.With("params", p)
	return &out
}

var envelope = []string{"jsonrpc", "id", "method", "params", "result", "error"}

// Parse parses and checks one message. maxDepth bounds nesting (0: the
// strictjson default).
func Parse(body []byte, maxDepth int) (*Message, *Error) {
	v, err := strictjson.Parse(body, strictjson.Limits{MaxDepth: maxDepth})
	if err != nil {
		code := CodeInvalidRequest
		if errors.Is(err, strictjson.ErrSyntax) || errors.Is(err, strictjson.ErrTrailing) {
			code = CodeParseError
		}
		return nil, &Error{Code: code, Message: "refused: " + trimPrefix(err.Error())}
	}
	switch v.Kind() {
	case strictjson.Object:
	case strictjson.Array:
		return nil, invalid(nil, "JSON-RPC batches are not accepted; send one message per request")
	default:
		return nil, invalid(nil, "a message must be a JSON object")
	}
	m := &Message{whole: v}
	for _, mem := range v.Members() {
		switch mem.Key {
		case "jsonrpc":
		case "id":
			m.ID = mem.Value
		case "method":
			s, ok := mem.Value.Str()
			if !ok {
				return nil, invalid(nil, `"method" must be a string`)
			}
			m.Method = s
			if m.Method == "" {
				return nil, invalid(nil, `"method" must not be empty`)
			}
		case "params":
			m.Params = mem.Value
		case "result":
			m.Result = mem.Value
		case "error":
			m.Error = mem.Value
		default:
			if err := KnownMembers(strictjson.MakeObject(mem), envelope...); err != nil {
				return nil, invalid(nil, "%v", err)
			}
			return nil, invalid(nil, "unknown member %.40q", mem.Key)
		}
	}
	var id []byte
	if m.ID.Exists() {
		if err := checkID(m.ID); err != nil {
			return nil, invalid(nil, "%v", err)
		}
		id = m.ID.Encode()
	}
	if s, ok := v.Get("jsonrpc").Str(); !ok || s != "2.0" {
		return nil, invalid(id, `"jsonrpc" must be "2.0"`)
	}
	if m.Method != "" {
		if err := checkMethod(m.Method); err != nil {
			return nil, invalid(id, "%v", err)
		}
		if m.Params.Exists() && m.Params.Kind() != strictjson.Object {
			return nil, invalid(id, `"params" must be an object`)
		}
		if m.Result.Exists() || m.Error.Exists() {
			return nil, invalid(id, "a request must not have a result or an error")
		}
		return m, nil
	}
	switch {
	case !m.ID.Exists():
		return nil, invalid(nil, `a message needs a "method" or an "id"`)
	case m.Params.Exists():
		return nil, invalid(id, `a response must not have "params"`)
	case m.Result.Exists() == m.Error.Exists():
		return nil, invalid(id, "a response must have exactly one of result and error")
	case m.Result.Exists() && m.Result.Kind() != strictjson.Object:
		return nil, invalid(id, `"result" must be an object`)
	case m.Error.Exists():
		if err := checkErrorObject(m.Error); err != nil {
			return nil, invalid(id, "%v", err)
		}
	}
	return m, nil
}

func invalid(id []byte, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidRequest, Message: fmt.Sprintf(format, args...), ID: id}
}

func trimPrefix(s string) string {
	const p = "strictjson: "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

// KnownMembers refuses a member of object v whose key equals one of known
// under case folding without being it: a parser that matches keys without
// regard to case would read it as that member, one that does not would
// ignore it. (Two such keys in one object are refused by strictjson.)
func KnownMembers(v strictjson.Value, known ...string) error {
	for _, m := range v.Members() {
		f := strictjson.Fold(m.Key)
		for _, k := range known {
			if m.Key != k && f == strictjson.Fold(k) {
				return fmt.Errorf("member %.40q differs only in case from %q", m.Key, k)
			}
		}
	}
	return nil
}

// checkID accepts a string of at most MaxIDLen bytes or an integer of at
// most MaxSafeInt in magnitude, written plainly: parsers that turn numbers
// into float64 would otherwise read 1.5 as 1 or 1e300 as something else,
// and answer with an id the gateway cannot match.
func checkID(v strictjson.Value) error {
	const bad = `"id" must be a string of at most 256 bytes or an integer of at most 2^53-1`
	switch v.Kind() {
	case strictjson.String:
		if s, _ := v.Str(); len(s) > MaxIDLen {
			return errors.New(bad)
		}
		return nil
	case strictjson.Number:
		text, _ := v.NumberText()
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil || n > MaxSafeInt || n < -MaxSafeInt || text == "-0" {
			return errors.New(bad)
		}
		return nil
	}
	return errors.New(bad)
}

func checkMethod(m string) error {
	if len(m) > MaxMethodLen {
		return fmt.Errorf(`"method" must be 1 to %d bytes`, MaxMethodLen)
	}
	for i := 0; i < len(m); i++ {
		if m[i] <= ' ' || m[i] >= 0x7f {
			return errors.New(`"method" must be printable ASCII without spaces`)
		}
	}
	return nil
}

func checkErrorObject(v strictjson.Value) error {
	if v.Kind() != strictjson.Object {
		return errors.New(`"error" must be an object`)
	}
	for _, m := range v.Members() {
		switch m.Key {
		case "code", "message", "data":
		default:
			return fmt.Errorf(`"error": unknown member %.40q`, m.Key)
		}
	}
	if _, ok := v.Get("code").Int(); !ok {
		return errors.New(`"error" needs an integer "code"`)
	}
	if _, ok := v.Get("message").Str(); !ok {
		return errors.New(`"error" needs a string "message"`)
	}
	return nil
}

// ErrorResponse encodes an error response to id (canonical JSON, or nil
// for "id": null).
func ErrorResponse(id []byte, code int, message string, data strictjson.Value) []byte {
	if len(id) == 0 {
		id = []byte("null")
	}
	b := append([]byte(`{"jsonrpc":"2.0","id":`), id...)
	b = append(b, `,"error":{"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"message":`...)
	b = strictjson.AppendString(b, message)
	if data.Exists() {
		b = append(b, `,"data":`...)
		b = data.Append(b)
	}
	return append(b, "}}"...)
}
