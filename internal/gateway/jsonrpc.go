package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/bulkhead-dev/bulkhead/internal/jsonlimit"
)

// JSON-RPC error codes the gateway answers with.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	codeInvalidParams  = -32602
	codeInternal       = -32603
	// codeDenied is Bulkhead's: the call was refused by policy, budget or
	// rate limit. Its data names the decision, never the policy text.
	codeDenied = -32001
)

// rpcMessage is one JSON-RPC 2.0 message, parsed strictly.
type rpcMessage struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   json.RawMessage `json:"error,omitempty"`
}

func (m *rpcMessage) isRequest() bool      { return m.Method != "" && len(m.ID) > 0 }
func (m *rpcMessage) isNotification() bool { return m.Method != "" && len(m.ID) == 0 }
func (m *rpcMessage) isResponse() bool     { return m.Method == "" && len(m.ID) > 0 }

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

const (
	maxDepth  = 64
	maxIDLen  = 128
	maxMethod = 128
)

var (
	numericID = regexp.MustCompile(`^-?[0-9]{1,19}$`)
	methodRE  = regexp.MustCompile(`^[A-Za-z0-9_./-]{1,128}$`)
)

// parseRPC parses one message. Batches (a JSON array) are refused: the
// current MCP specification has none, and a batch would let one HTTP
// request smuggle many calls past a per-call check.
func parseRPC(body []byte) (*rpcMessage, *rpcError) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, &rpcError{Code: codeInvalidRequest, Message: "empty body"}
	}
	if trimmed[0] == '[' {
		return nil, &rpcError{Code: codeInvalidRequest, Message: "JSON-RPC batches are not accepted; send one message per request"}
	}
	if err := checkDepth(trimmed); err != nil {
		return nil, &rpcError{Code: codeParseError, Message: err.Error()}
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	var m rpcMessage
	if err := dec.Decode(&m); err != nil {
		return nil, &rpcError{Code: codeParseError, Message: "not a JSON-RPC message: " + err.Error()}
	}
	if dec.More() {
		return nil, &rpcError{Code: codeInvalidRequest, Message: "more than one JSON value in the body"}
	}
	if m.JSONRPC != "2.0" {
		return nil, &rpcError{Code: codeInvalidRequest, Message: `"jsonrpc" must be "2.0"`}
	}
	if len(m.ID) > 0 {
		if err := checkID(m.ID); err != nil {
			return nil, &rpcError{Code: codeInvalidRequest, Message: err.Error()}
		}
	}
	switch {
	case m.Method != "":
		if !methodRE.MatchString(m.Method) {
			return nil, &rpcError{Code: codeInvalidRequest, Message: "method name is malformed"}
		}
		if len(m.Result) > 0 || len(m.Error) > 0 {
			return nil, &rpcError{Code: codeInvalidRequest, Message: "a request may not carry result or error"}
		}
		if len(m.Params) > 0 && m.Params[0] != '{' && string(m.Params) != "null" {
			return nil, &rpcError{Code: codeInvalidParams, Message: "params must be an object"}
		}
	case len(m.ID) > 0:
		if (len(m.Result) > 0) == (len(m.Error) > 0) {
			return nil, &rpcError{Code: codeInvalidRequest, Message: "a response carries exactly one of result or error"}
		}
	default:
		return nil, &rpcError{Code: codeInvalidRequest, Message: "a message needs a method or an id"}
	}
	return &m, nil
}

func checkID(id json.RawMessage) error {
	s := string(id)
	switch {
	case s == "null":
		return fmt.Errorf("id may not be null")
	case s[0] == '"':
		var v string
		if err := json.Unmarshal(id, &v); err != nil || len(v) > maxIDLen {
			return fmt.Errorf("id must be a string of at most %d characters or an integer", maxIDLen)
		}
	case !numericID.MatchString(s):
		return fmt.Errorf("id must be a string of at most %d characters or an integer", maxIDLen)
	}
	return nil
}

// checkDepth refuses JSON nested deeper than maxDepth before any decoder
// recurses into it.
func checkDepth(b []byte) error {
	if jsonlimit.Depth(b) > maxDepth {
		return fmt.Errorf("JSON nested deeper than %d levels", maxDepth)
	}
	return nil
}

// rpcErrorResponse encodes an error response to id.
func rpcErrorResponse(id json.RawMessage, e *rpcError) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	b, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   *rpcError       `json:"error"`
	}{"2.0", id, e})
	return b
}

// sameID compares two raw ids as JSON values.
func sameID(a, b json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(a), bytes.TrimSpace(b))
}
