package stdio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/bulkhead-dev/bulkhead/internal/rpcmsg"
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

// parseMessage checks that body is exactly one JSON-RPC 2.0 message of the
// shape MCP uses, with the gateway's one strict parser (rpcmsg: no
// batches, no unknown, duplicate or case-variant members at any depth,
// valid UTF-8, no lone surrogates, ids that survive float64), and decodes
// its canonical encoding with the SDK, so the message the gateway inspected
// is the message the program reads.
func parseMessage(body []byte, maxDepth int) (jsonrpc.Message, *rpcError) {
	m, rerr := rpcmsg.Parse(body, maxDepth)
	if rerr != nil {
		return nil, &rpcError{status: http.StatusBadRequest, id: sdkID(rerr.ID), code: int64(rerr.Code), msg: rerr.Message}
	}
	id := sdkID(m.IDJSON())
	msg, err := jsonrpc.DecodeMessage(m.Encode())
	if err != nil {
		return nil, invalid(id, "not a JSON-RPC message")
	}
	// The SDK decoded what we checked; make sure it saw it the same way.
	switch msg := msg.(type) {
	case *jsonrpc.Request:
		if m.Method == "" || msg.ID != id {
			return nil, invalid(id, "not a JSON-RPC message")
		}
	case *jsonrpc.Response:
		if m.Method != "" || msg.ID != id {
			return nil, invalid(id, "not a JSON-RPC message")
		}
	}
	return msg, nil
}

// sdkID converts a canonical id that rpcmsg accepted (a string, or an
// integer of at most 2^53-1) to the SDK's; nil is no id.
func sdkID(raw []byte) jsonrpc.ID {
	if len(raw) == 0 {
		return jsonrpc.ID{}
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return jsonrpc.ID{}
		}
		id, _ := jsonrpc.MakeID(s)
		return id
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return jsonrpc.ID{}
	}
	id, _ := jsonrpc.MakeID(float64(n))
	return id
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
