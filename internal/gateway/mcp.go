package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/rpcmsg"
	"github.com/bulkhead-dev/bulkhead/internal/strictjson"
)

// sessions binds MCP session ids to the agent that opened them, so that a
// session id learned by another agent is worthless.
type sessions struct {
	clock clock.Clock
	mu    sync.Mutex
	owner map[string]sessionOwner
}

type sessionOwner struct {
	agent string
	seen  time.Time
}

const (
	maxSessions    = 65536
	sessionIdleTTL = 24 * time.Hour
)

func newSessions(c clock.Clock) *sessions {
	return &sessions{clock: c, owner: map[string]sessionOwner{}}
}

func sessionKey(server, id string) string { return server + "\x00" + id }

func (s *sessions) bind(server, id, agent string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if len(s.owner) >= maxSessions {
		for k, o := range s.owner {
			if now.Sub(o.seen) > sessionIdleTTL || len(s.owner) >= maxSessions {
				delete(s.owner, k)
			}
		}
	}
	s.owner[sessionKey(server, id)] = sessionOwner{agent: agent, seen: now}
}

// check reports whether agent owns session id on server.
func (s *sessions) check(server, id, agent string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := sessionKey(server, id)
	o, ok := s.owner[k]
	if !ok || o.agent != agent {
		return false
	}
	o.seen = s.clock.Now()
	s.owner[k] = o
	return true
}

func (s *sessions) unbind(server, id string) {
	s.mu.Lock()
	delete(s.owner, sessionKey(server, id))
	s.mu.Unlock()
}

// mcpCall is what a message needs before it may pass.
type mcpCall struct {
	// action and resource name the decision; an empty action means none
	// is needed (initialize, ping, notifications, responses).
	action   string
	resource cedar.EntityUID
	// input is context.input, canonical JSON.
	input []byte
	// filter names the list in the result to filter item by item.
	filter string
	// metered messages count against the call budget.
	metered bool
}

// listFilter is how a list result is filtered: the result's field, and the
// decision made per item on its key.
type listFilter struct{ field, action, key string }

var listFilters = map[string]listFilter{
	"tools/list":               {"tools", policy.ActionCallTool, "name"},
	"resources/list":           {"resources", policy.ActionReadResource, "uri"},
	"resources/templates/list": {"resourceTemplates", policy.ActionReadResource, "uriTemplate"},
	"prompts/list":             {"prompts", policy.ActionGetPrompt, "name"},
}

// paramMembers are the params each authorized method defines. A member
// that differs from one of them only in case is refused: a parser that
// folds case would read it as that member, the policy would not.
var paramMembers = map[string][]string{
	"tools/call":               {"name", "arguments", "_meta", "task"},
	"resources/read":           {"uri", "_meta"},
	"resources/subscribe":      {"uri", "_meta"},
	"resources/unsubscribe":    {"uri", "_meta"},
	"prompts/get":              {"name", "arguments", "_meta"},
	"completion/complete":      {"ref", "argument", "context", "_meta"},
	"tools/list":               {"cursor", "_meta"},
	"resources/list":           {"cursor", "_meta"},
	"resources/templates/list": {"cursor", "_meta"},
	"prompts/list":             {"cursor", "_meta"},
}

// object encodes a small object of string members as canonical JSON.
func object(kv ...string) []byte {
	v := strictjson.MakeObject()
	for i := 0; i+1 < len(kv); i += 2 {
		v = v.With(kv[i], strictjson.MakeString(kv[i+1]))
	}
	return v.Encode()
}

func invalidParams(format string, args ...any) *rpcmsg.Error {
	return &rpcmsg.Error{Code: rpcmsg.CodeInvalidParams, Message: fmt.Sprintf(format, args...)}
}

// classify maps an MCP message to the decision it needs. Methods the
// gateway does not know are refused: deny by default applies to protocol
// features too. Everything the policy sees is read from the parsed message
// whose encoding is forwarded.
func classify(server string, m *rpcmsg.Message) (mcpCall, *rpcmsg.Error) {
	if m.IsResponse() {
		// The client answering a request of the server (sampling,
		// elicitation, roots): it carries no action of the agent's.
		return mcpCall{}, nil
	}
	switch {
	case m.Method == "initialize", m.Method == "ping", m.Method == "logging/setLevel", m.Method == "server/discover",
		strings.HasPrefix(m.Method, "notifications/") && m.IsNotification():
		return mcpCall{}, nil
	case m.IsNotification():
		return mcpCall{}, &rpcmsg.Error{Code: rpcmsg.CodeInvalidRequest, Message: "only notifications/* may be sent without an id"}
	}
	known, ok := paramMembers[m.Method]
	if !ok {
		return mcpCall{}, &rpcmsg.Error{Code: codeDenied, Message: fmt.Sprintf("method %q is not permitted through the gateway", m.Method)}
	}
	p := m.Params
	if err := rpcmsg.KnownMembers(p, known...); err != nil {
		return mcpCall{}, invalidParams("params: %v", err)
	}
	str := func(key string) (string, *rpcmsg.Error) {
		v := p.Get(key)
		if !v.Exists() {
			return "", nil
		}
		s, ok := v.Str()
		if !ok {
			return "", invalidParams("%s must be a string", key)
		}
		return s, nil
	}
	switch m.Method {
	case "tools/list":
		return mcpCall{action: policy.ActionListTools, resource: policy.ToolServer(server), input: []byte("{}"), filter: m.Method}, nil
	case "resources/list", "resources/templates/list", "prompts/list":
		return mcpCall{filter: m.Method}, nil
	case "tools/call":
		name, rerr := str("name")
		if rerr != nil {
			return mcpCall{}, rerr
		}
		if err := policy.ValidateName("tool name", name); err != nil {
			return mcpCall{}, invalidParams("%v", err)
		}
		args := p.Get("arguments")
		input := []byte("{}")
		switch args.Kind() {
		case 0, strictjson.Null:
		case strictjson.Object:
			input = args.Encode()
		default:
			return mcpCall{}, invalidParams("arguments must be an object")
		}
		return mcpCall{action: policy.ActionCallTool, resource: policy.Tool(server, name), input: input, metered: true}, nil
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		uri, rerr := str("uri")
		if rerr != nil {
			return mcpCall{}, rerr
		}
		if uri == "" {
			return mcpCall{}, invalidParams("uri is required")
		}
		return mcpCall{action: policy.ActionReadResource, resource: policy.ToolServer(server), input: object("uri", uri),
			metered: m.Method == "resources/read"}, nil
	case "prompts/get":
		name, rerr := str("name")
		if rerr != nil {
			return mcpCall{}, rerr
		}
		in := strictjson.MakeObject().With("name", strictjson.MakeString(name))
		switch args := p.Get("arguments"); args.Kind() {
		case 0, strictjson.Null:
		case strictjson.Object:
			in = in.With("args", args)
		default:
			return mcpCall{}, invalidParams("prompt arguments must be an object")
		}
		return mcpCall{action: policy.ActionGetPrompt, resource: policy.ToolServer(server), input: in.Encode(), metered: true}, nil
	case "completion/complete":
		ref := p.Get("ref")
		if err := rpcmsg.KnownMembers(ref, "type", "name", "uri"); err != nil {
			return mcpCall{}, invalidParams("ref: %v", err)
		}
		typ, _ := ref.Get("type").Str()
		switch typ {
		case "ref/prompt":
			name, _ := ref.Get("name").Str()
			return mcpCall{action: policy.ActionGetPrompt, resource: policy.ToolServer(server), input: object("name", name)}, nil
		case "ref/resource":
			uri, _ := ref.Get("uri").Str()
			return mcpCall{action: policy.ActionReadResource, resource: policy.ToolServer(server), input: object("uri", uri)}, nil
		}
		return mcpCall{}, invalidParams("completion needs a prompt or resource ref")
	}
	return mcpCall{}, &rpcmsg.Error{Code: codeDenied, Message: fmt.Sprintf("method %q is not permitted through the gateway", m.Method)}
}

func (g *Gateway) serveMCP(w http.ResponseWriter, r *http.Request, c *caller, rt *runtime) {
	s := rt.cfg
	sid := r.Header.Get("Mcp-Session-Id")
	if sid != "" && !g.sessions.check(s.Name, sid, c.id.String()) {
		// Unknown, expired, or another agent's session: the spec's answer
		// for a session the server does not know.
		g.fail(w, r, fmt.Errorf("%w: unknown MCP session; initialize a new one", fault.NotFound))
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodDelete:
		if r.Method == http.MethodGet && sid == "" {
			g.fail(w, r, fmt.Errorf("%w: a GET stream needs an Mcp-Session-Id", fault.Invalid))
			return
		}
		g.forward(w, r, c, rt, outbound{method: r.Method, target: rt.target}, nil, "")
		if r.Method == http.MethodDelete {
			g.sessions.unbind(s.Name, sid)
		}
		return
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		g.fail(w, r, fmt.Errorf("%w: MCP uses GET, POST and DELETE", fault.MethodNotAllowed))
		return
	}
	target := policy.ToolServer(s.Name).String()
	if err := checkContentType(r.Header, bodyJSON, true); err != nil {
		g.recordRefusal(r.Context(), c, "gateway.mcp", target, err.Error(), map[string]string{"server": s.Name})
		g.fail(w, r, err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.Limits.MaxBody))
	if err != nil {
		writeRPC(w, http.StatusRequestEntityTooLarge, rpcError(nil, rpcmsg.CodeInvalidRequest,
			fmt.Sprintf("request body over %d bytes", g.cfg.Limits.MaxBody)))
		return
	}
	msg, rerr := rpcmsg.Parse(body, maxDepth)
	if rerr != nil {
		// Never forwarded: a message the gateway cannot read one way only
		// might be read another way upstream.
		g.recordRefusal(r.Context(), c, "gateway.mcp", target, rerr.Message, map[string]string{"server": s.Name})
		writeRPC(w, http.StatusBadRequest, rpcError(rerr.ID, rerr.Code, rerr.Message))
		return
	}
	if msg.Method == "initialize" && sid != "" {
		writeRPC(w, http.StatusBadRequest, rpcError(msg.IDJSON(), rpcmsg.CodeInvalidRequest, "initialize starts a session; send it without Mcp-Session-Id"))
		return
	}
	call, rerr := classify(s.Name, msg)
	if rerr != nil {
		g.recordRefusal(r.Context(), c, "gateway.mcp", target, rerr.Message, map[string]string{"server": s.Name, "method": msg.Method})
		writeRPC(w, http.StatusOK, rpcError(msg.IDJSON(), rerr.Code, rerr.Message))
		return
	}
	if rf := g.authorize(r.Context(), c, action{server: s, name: call.action, resource: call.resource, input: call.input,
		metered: call.metered, detail: map[string]string{"method": msg.Method}}); rf != nil {
		g.failRPC(w, r, msg.IDJSON(), rf)
		return
	}
	// The canonical encoding of what was decided, never the bytes that
	// arrived.
	g.forward(w, r, c, rt, outbound{method: http.MethodPost, target: rt.target, body: msg.Encode(), contentType: "application/json"}, msg, call.filter)
}
