package gateway

import (
	"bytes"
	"errors"
	"net/http"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
	"github.com/bulkhead-dev/bulkhead/internal/rpcmsg"
	"github.com/bulkhead-dev/bulkhead/internal/strictjson"
)

// Every JSON-RPC message through the gateway is parsed by rpcmsg (strict,
// one reading) and forwarded as its canonical encoding.

// codeDenied is Bulkhead's JSON-RPC error code: the call was refused by
// policy, budget or rate limit. Its data names the decision, never the
// policy text.
const codeDenied = -32001

// maxDepth bounds the nesting of a message or body the gateway reads.
const maxDepth = 64

// writeRPC answers with one JSON-RPC message.
func writeRPC(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// rpcError encodes an error response to id.
func rpcError(id []byte, code int, msg string) []byte {
	return rpcmsg.ErrorResponse(id, code, msg, strictjson.Value{})
}

// failRPC answers a JSON-RPC request refused for err, through the same
// mapping of fault kinds to status and client text as every other
// surface: a refusal by policy, budget or rate limit is a JSON-RPC error
// (codeDenied, naming the decision) in a 200; anything else carries its
// HTTP status, and server-side causes only their fixed text.
func (g *Gateway) failRPC(w http.ResponseWriter, r *http.Request, id []byte, rf *refusal) {
	status, _, text := httpx.Problem(rf.err)
	if status >= 500 {
		g.logger.Warn("request refused", "path", r.URL.Path, "err", rf.err)
	} else if rf.msg != "" {
		text = rf.msg
	}
	switch {
	case errors.Is(rf.err, fault.Forbidden), errors.Is(rf.err, fault.Exhausted):
		data := strictjson.MakeObject()
		if rf.decisionID != "" {
			data = data.With("decision_id", strictjson.MakeString(rf.decisionID))
		}
		writeRPC(w, http.StatusOK, rpcmsg.ErrorResponse(id, codeDenied, text, data))
	case errors.Is(rf.err, fault.Invalid):
		writeRPC(w, status, rpcError(id, rpcmsg.CodeInvalidParams, text))
	default:
		writeRPC(w, status, rpcError(id, rpcmsg.CodeInternal, text))
	}
}

// sameID compares two canonical ids.
func sameID(a, b []byte) bool { return len(a) > 0 && bytes.Equal(a, b) }
