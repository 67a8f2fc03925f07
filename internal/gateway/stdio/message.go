package stdio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/bulkhead-dev/bulkhead/internal/jsonlimit"
)

// Limits on single fields of a message; anything longer is hostile or broken.
const (
	maxIDLen     = 256
	maxMethodLen = 256
	maxSafeInt   = 1<<53 - 1 // the largest integer every JSON parser keeps exact
)

// rpcError is a refusal, written back as a JSON-RPC error with an HTTP status.
type rpcError struct {
	status int
	id     jsonrpc.ID // zero if the request's id is unknown
	code   int64
	msg    string // safe to show the client
}

func (e *rpcError) Error() string { return e.msg }

func invalid(id jsonrpc.ID, format string, args ...any) *rpcError {
	return &rpcError{status: http.StatusBadRequest, id: id, code: jsonrpc.CodeInvalidRequest, msg: fmt.Sprintf(format, args...)}
}

func parseError(format string, args ...any) *rpcError {
	return &rpcError{status: http.StatusBadRequest, code: jsonrpc.CodeParseError, msg: fmt.Sprintf(format, args...)}
}

var (
	envelopeMembers = map[string]bool{"jsonrpc": true, "id": true, "method": true, "params": true, "result": true, "error": true}
	errorMembers    = map[string]bool{"code": true, "message": true, "data": true}
)

// parseMessage checks that body is exactly one JSON-RPC 2.0 message of the
// shape MCP uses, and decodes it with the SDK. It is stricter than
// jsonrpc.DecodeMessage so that the message the gateway inspected is the
// message the upstream reads: no batches, no unknown or duplicate members
// (which parsers resolve differently), no ids that lose precision as
// float64, no nesting deeper than maxDepth.
func parseMessage(body []byte, maxDepth int) (jsonrpc.Message, *rpcError) {
	var noID jsonrpc.ID
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, parseError("empty body")
	}
	if !utf8.Valid(body) {
		return nil, parseError("body is not UTF-8")
	}
	switch trimmed[0] {
	case '[':
		return nil, invalid(noID, "JSON-RPC batches are not supported")
	case '{':
	default:
		if !json.Valid(body) {
			return nil, parseError("body is not valid JSON")
		}
		return nil, invalid(noID, "a message must be a JSON object")
	}
	// Depth first: it is a cheap linear scan, and bounds the work below.
	if jsonlimit.Depth(body) > maxDepth {
		return nil, invalid(noID, "message nests deeper than %d levels", maxDepth)
	}
	if !json.Valid(body) {
		return nil, parseError("body is not valid JSON")
	}
	m, err := members(body, envelopeMembers)
	if err != nil {
		return nil, invalid(noID, "%v", err)
	}

	var id jsonrpc.ID
	rawID, hasID := m["id"]
	if hasID {
		if id, err = parseID(rawID); err != nil {
			return nil, invalid(noID, "%v", err)
		}
	}
	var version string
	if raw, ok := m["jsonrpc"]; !ok || json.Unmarshal(raw, &version) != nil || version != "2.0" {
		return nil, invalid(id, `"jsonrpc" must be "2.0"`)
	}
	rawMethod, hasMethod := m["method"]
	rawParams, hasParams := m["params"]
	rawResult, hasResult := m["result"]
	rawErr, hasErr := m["error"]
	if hasMethod {
		if err := checkMethod(rawMethod); err != nil {
			return nil, invalid(id, "%v", err)
		}
		if hasParams && rawParams[0] != '{' {
			return nil, invalid(id, `"params" must be an object`)
		}
		if hasResult || hasErr {
			return nil, invalid(id, "a request must not have a result or an error")
		}
	} else {
		switch {
		case !hasID:
			return nil, invalid(noID, `a message needs a "method" or an "id"`)
		case hasParams:
			return nil, invalid(id, `a response must not have "params"`)
		case hasResult == hasErr:
			return nil, invalid(id, "a response must have exactly one of result and error")
		case hasResult && rawResult[0] != '{':
			return nil, invalid(id, `"result" must be an object`)
		case hasErr:
			if err := checkErrorObject(rawErr); err != nil {
				return nil, invalid(id, "%v", err)
			}
		}
	}

	msg, err := jsonrpc.DecodeMessage(body)
	if err != nil {
		return nil, invalid(id, "not a JSON-RPC message")
	}
	// The SDK decoded what we checked; make sure it saw it the same way.
	switch msg := msg.(type) {
	case *jsonrpc.Request:
		if !hasMethod || msg.ID != id {
			return nil, invalid(id, "not a JSON-RPC message")
		}
	case *jsonrpc.Response:
		if hasMethod || msg.ID != id {
			return nil, invalid(id, "not a JSON-RPC message")
		}
	}
	return msg, nil
}

// members splits a JSON object (already known to be valid JSON) into its
// members, refusing unknown and duplicate names.
func members(raw []byte, allowed map[string]bool) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	out := make(map[string]json.RawMessage, len(allowed))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errors.New("not a JSON object")
		}
		name, _ := tok.(string)
		if !allowed[name] {
			return nil, fmt.Errorf("unknown member %.40q", name)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("duplicate member %q", name)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, errors.New("not a JSON object")
		}
		out[name] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, errors.New("not a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("data after the message")
	}
	return out, nil
}

// parseID accepts a string of at most maxIDLen bytes or an integer of at
// most maxSafeInt in magnitude: the SDK turns numeric ids into float64, so
// 1.5 would become 1 and 1e300 something undefined.
func parseID(raw json.RawMessage) (jsonrpc.ID, error) {
	const bad = `"id" must be a string of at most 256 bytes or an integer of at most 2^53-1`
	switch c := raw[0]; {
	case c == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil || len(s) > maxIDLen {
			return jsonrpc.ID{}, errors.New(bad)
		}
		return jsonrpc.MakeID(s)
	case c == '-' || (c >= '0' && c <= '9'):
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil || n > maxSafeInt || n < -maxSafeInt {
			return jsonrpc.ID{}, errors.New(bad)
		}
		return jsonrpc.MakeID(float64(n))
	default: // null, objects, arrays, booleans
		return jsonrpc.ID{}, errors.New(bad)
	}
}

func checkMethod(raw json.RawMessage) error {
	var m string
	if raw[0] != '"' || json.Unmarshal(raw, &m) != nil {
		return errors.New(`"method" must be a string`)
	}
	if m == "" || len(m) > maxMethodLen {
		return fmt.Errorf(`"method" must be 1 to %d bytes`, maxMethodLen)
	}
	for i := 0; i < len(m); i++ {
		if m[i] <= ' ' || m[i] >= 0x7f {
			return errors.New(`"method" must be printable ASCII without spaces`)
		}
	}
	return nil
}

func checkErrorObject(raw json.RawMessage) error {
	if raw[0] != '{' {
		return errors.New(`"error" must be an object`)
	}
	m, err := members(raw, errorMembers)
	if err != nil {
		return fmt.Errorf(`"error": %w`, err)
	}
	code, ok := m["code"]
	if !ok {
		return errors.New(`"error" needs an integer "code"`)
	}
	if _, err := strconv.ParseInt(string(code), 10, 64); err != nil {
		return errors.New(`"error" needs an integer "code"`)
	}
	var msg string
	if raw, ok := m["message"]; !ok || raw[0] != '"' || json.Unmarshal(raw, &msg) != nil {
		return errors.New(`"error" needs a string "message"`)
	}
	return nil
}

// encodeLine encodes msg as one line of newline-delimited JSON. The SDK
// compacts raw params, so the line has no inner newline; the check makes
// that a guarantee rather than an assumption, since one stray newline would
// desynchronize the upstream's framing.
func encodeLine(msg jsonrpc.Message) ([]byte, error) {
	data, err := jsonrpc.EncodeMessage(msg)
	if err != nil {
		return nil, fmt.Errorf("stdio: encoding message: %w", err)
	}
	if bytes.ContainsAny(data, "\r\n") || !json.Valid(data) {
		return nil, errors.New("stdio: encoded message is not one line of JSON")
	}
	return append(data, '\n'), nil
}

// writeRPCError writes e as a JSON-RPC error response.
func writeRPCError(w http.ResponseWriter, e *rpcError) {
	wireErr := &jsonrpc.Error{Code: e.code, Message: e.msg}
	var data []byte
	if e.id.IsValid() {
		data, _ = jsonrpc.EncodeMessage(&jsonrpc.Response{ID: e.id, Error: wireErr})
	} else {
		// JSON-RPC wants "id": null here; the SDK's encoder would omit it.
		data, _ = json.Marshal(struct {
			Version string         `json:"jsonrpc"`
			ID      *int           `json:"id"`
			Error   *jsonrpc.Error `json:"error"`
		}{"2.0", nil, wireErr})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(e.status)
	_, _ = w.Write(data)
}

// writeResponse writes an upstream's response to a call.
func writeResponse(w http.ResponseWriter, resp *jsonrpc.Response) {
	data, err := jsonrpc.EncodeMessage(resp)
	if err != nil {
		writeRPCError(w, &rpcError{status: http.StatusBadGateway, id: resp.ID, code: CodeUpstreamFailed, msg: "upstream sent a response that cannot be encoded"})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

// protocolVersion returns the version an initialize result negotiated, or ""
// if it is missing or not a plausible version string (then the
// Mcp-Protocol-Version header goes unchecked; the program still decides).
func protocolVersion(result json.RawMessage) string {
	var r struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	if json.Unmarshal(result, &r) != nil || len(r.ProtocolVersion) > 32 {
		return ""
	}
	for _, c := range []byte(r.ProtocolVersion) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '.') {
			return ""
		}
	}
	return r.ProtocolVersion
}
