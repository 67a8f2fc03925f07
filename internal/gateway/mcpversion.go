package gateway

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/bulkhead-dev/bulkhead/internal/rpcmsg"
	"github.com/bulkhead-dev/bulkhead/internal/strictjson"
)

// MCP revisions. A request names its revision in the MCP-Protocol-Version
// header: 2026-07-28 ("modern") is stateless, with its method and name
// mirrored into headers; the earlier ("legacy") revisions open a session
// with initialize. Without the header a request is legacy (initialize
// itself, and clients before 2025-06-18, send none).
const revisionModern = "2026-07-28"

// supportedRevisions are the revisions the gateway speaks, newest first;
// an UnsupportedProtocolVersion error lists them.
var supportedRevisions = []string{revisionModern, "2025-11-25", "2025-06-18", "2025-03-26"}

// MCP error codes the gateway answers with (2026-07-28 numbering).
const (
	codeHeaderMismatch     = -32020
	codeUnsupportedVersion = -32022
)

// Reserved _meta keys of 2026-07-28 requests and results.
const (
	metaProtocolVersion = "io.modelcontextprotocol/protocolVersion"
	metaSubscriptionID  = "io.modelcontextprotocol/subscriptionId"
)

// revision is the MCP revision of one request.
type revision struct {
	version string // "" when the request named none
	modern  bool
}

// requestRevision reads the revision a request names. An unknown one is
// refused with the spec's UnsupportedProtocolVersion error (answering id,
// nil when unknown), which lists the revisions both the gateway and, if
// it has said, the upstream speak (upstream: nil when unknown): the
// gateway's checks differ per revision, so it must not guess.
func requestRevision(h http.Header, id []byte, upstream []string) (revision, []byte) {
	vs := h.Values("Mcp-Protocol-Version")
	switch {
	case len(vs) == 0:
		return revision{}, nil
	case len(vs) > 1:
		return revision{}, rpcmsg.ErrorResponse(id, codeHeaderMismatch, "more than one MCP-Protocol-Version header", strictjson.Value{})
	case !slices.Contains(supportedRevisions, vs[0]):
		var supported []strictjson.Value
		for _, v := range supportedRevisions {
			if upstream == nil || slices.Contains(upstream, v) {
				supported = append(supported, strictjson.MakeString(v))
			}
		}
		data := strictjson.MakeObject().With("supported", strictjson.MakeArray(supported...)).
			With("requested", strictjson.MakeString(truncate(vs[0], 64)))
		return revision{}, rpcmsg.ErrorResponse(id, codeUnsupportedVersion, "Unsupported protocol version", data)
	}
	return revision{version: vs[0], modern: vs[0] == revisionModern}, nil
}

// mirrorError is a refusal of checkMirrored, with the JSON-RPC code it is
// answered with.
type mirrorError struct {
	code int
	msg  string
}

func (e *mirrorError) Error() string { return e.msg }

func mismatch(format string, args ...any) error {
	return &mirrorError{code: codeHeaderMismatch, msg: fmt.Sprintf(format, args...)}
}

// nameSource is, per method, the params member that 2026-07-28 mirrors
// into the Mcp-Name header.
var nameSource = map[string]string{
	"tools/call": "name", "prompts/get": "name", "resources/read": "uri",
	"tasks/get": "taskId", "tasks/update": "taskId", "tasks/cancel": "taskId",
}

// checkMirrored refuses a 2026-07-28 request whose mirrored headers are
// missing or disagree with its body: an intermediary or an upstream may
// route or decide on the header while the gateway decided on the body. The
// body's protocol version must be the header's, Mcp-Method its method,
// Mcp-Name the name, URI or task it acts on.
func checkMirrored(h http.Header, rev revision, m *rpcmsg.Message) error {
	meta := m.Params.Get("_meta")
	v, ok := meta.Get(metaProtocolVersion).Str()
	if rev.modern && !ok {
		// A request without its envelope is malformed, not mismatched.
		return &mirrorError{code: rpcmsg.CodeInvalidParams, msg: "params._meta must carry " + metaProtocolVersion}
	}
	if v != rev.version {
		return mismatch("header mismatch: MCP-Protocol-Version is %q but the body's %s is %.32q", rev.version, metaProtocolVersion, v)
	}
	if err := mirrored(h, "Mcp-Method", m.Method); err != nil {
		return err
	}
	if src, ok := nameSource[m.Method]; ok {
		want, isStr := m.Params.Get(src).Str()
		if !isStr {
			return &mirrorError{code: rpcmsg.CodeInvalidParams, msg: fmt.Sprintf("params.%s must be a string", src)}
		}
		return mirrored(h, "Mcp-Name", want)
	}
	if len(h.Values("Mcp-Name")) > 0 {
		return mismatch("header mismatch: Mcp-Name is not defined for %s", m.Method)
	}
	return nil
}

// mirrored checks that header name appears once and, decoded, equals want.
func mirrored(h http.Header, name, want string) error {
	vs := h.Values(name)
	if len(vs) != 1 {
		return mismatch("header mismatch: exactly one %s header is required", name)
	}
	got, err := decodeHeaderValue(vs[0])
	if err != nil {
		return mismatch("header mismatch: %s: %v", name, err)
	}
	if got != want {
		return mismatch("header mismatch: %s %.64q does not match the body's %.64q", name, got, want)
	}
	return nil
}

const (
	b64Prefix = "=?base64?"
	b64Suffix = "?="
)

// decodeHeaderValue reads a mirrored header value: plain visible ASCII
// (with inner spaces), or the =?base64?...?= sentinel around the Base64 of
// UTF-8 text.
func decodeHeaderValue(v string) (string, error) {
	if strings.HasPrefix(v, b64Prefix) && strings.HasSuffix(v, b64Suffix) && len(v) >= len(b64Prefix)+len(b64Suffix) {
		b, err := base64.StdEncoding.DecodeString(v[len(b64Prefix) : len(v)-len(b64Suffix)])
		if err != nil || !utf8.Valid(b) {
			return "", fmt.Errorf("malformed base64 value")
		}
		return string(b), nil
	}
	if v != strings.TrimSpace(v) {
		return "", fmt.Errorf("leading or trailing whitespace must be base64-encoded")
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c > 0x7e {
			return "", fmt.Errorf("a character outside visible ASCII must be base64-encoded")
		}
	}
	return v, nil
}

// encodeHeaderValue writes s as a mirrored header value.
func encodeHeaderValue(s string) string {
	plain := s == strings.TrimSpace(s) && !(strings.HasPrefix(s, b64Prefix) && strings.HasSuffix(s, b64Suffix))
	for i := 0; plain && i < len(s); i++ {
		plain = s[i] >= 0x20 && s[i] <= 0x7e
	}
	if plain {
		return s
	}
	return b64Prefix + base64.StdEncoding.EncodeToString([]byte(s)) + b64Suffix
}

// mirrorCode is the JSON-RPC code a checkMirrored or paramHeaders error is
// answered with.
func mirrorCode(err error) int {
	var me *mirrorError
	if errors.As(err, &me) {
		return me.code
	}
	return codeHeaderMismatch
}
