package gateway

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
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
	task  string // the task of the token that opened it, if any
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

func (s *sessions) bind(server, id, agent, task string) {
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
	s.owner[sessionKey(server, id)] = sessionOwner{agent: agent, task: task, seen: now}
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

// agentOf is the agent session id of server is bound to ("" for none),
// and the task it was opened for.
func (s *sessions) agentOf(server, id string) (agent, task string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.owner[sessionKey(server, id)]
	return o.agent, o.task
}

func (s *sessions) unbind(server, id string) {
	s.mu.Lock()
	delete(s.owner, sessionKey(server, id))
	s.mu.Unlock()
}

// mcpCall is what a message needs before it may pass.
type mcpCall struct {
	// action and resource name the decision; an empty action means none
	// is needed (discovery, initialize, notifications, responses).
	action   string
	resource cedar.EntityUID
	// input is context.input, canonical JSON.
	input []byte
	// filter names the list in the result to filter item by item.
	filter string
	// metered messages count against the call budget.
	metered bool
	// task is the task a tasks/* method acts on.
	task string
	// rounds: the method may be answered input_required (MRTR).
	rounds bool
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

// methods are the methods the gateway knows, per revision, with the params
// each defines. A params member that differs from one of them only in
// case is refused: a parser that folds case would read it as that member,
// the policy would not. A method not listed for the request's revision is
// answered "method not found": deny by default covers protocol features
// too.
var (
	commonMethods = map[string][]string{
		"tools/list":               {"cursor", "_meta"},
		"resources/list":           {"cursor", "_meta"},
		"resources/templates/list": {"cursor", "_meta"},
		"prompts/list":             {"cursor", "_meta"},
		"completion/complete":      {"ref", "argument", "context", "_meta"},
		"tasks/get":                {"taskId", "_meta"},
		"tasks/cancel":             {"taskId", "_meta"},
	}
	legacyMethods = map[string][]string{
		"initialize":            nil,
		"ping":                  nil,
		"logging/setLevel":      nil,
		"tools/call":            {"name", "arguments", "_meta", "task"},
		"resources/read":        {"uri", "_meta"},
		"resources/subscribe":   {"uri", "_meta"},
		"resources/unsubscribe": {"uri", "_meta"},
		"prompts/get":           {"name", "arguments", "_meta"},
		"tasks/result":          {"taskId", "_meta"},
		"tasks/list":            {"cursor", "_meta"},
	}
	modernMethods = map[string][]string{
		"server/discover":      {"_meta"},
		"subscriptions/listen": {"notifications", "_meta"},
		"tools/call":           {"name", "arguments", "_meta", "inputResponses", "requestState"},
		"resources/read":       {"uri", "_meta", "inputResponses", "requestState"},
		"prompts/get":          {"name", "arguments", "_meta", "inputResponses", "requestState"},
		"tasks/update":         {"taskId", "inputResponses", "_meta"},
	}
	// listenMembers are the notification types of subscriptions/listen.
	listenMembers = []string{"toolsListChanged", "promptsListChanged", "resourcesListChanged", "resourceSubscriptions", "taskIds"}
)

// knownParams returns the params of method in revision rev, and whether
// the method exists there.
func knownParams(method string, rev revision) ([]string, bool) {
	if p, ok := commonMethods[method]; ok {
		return p, true
	}
	if rev.modern {
		p, ok := modernMethods[method]
		return p, ok
	}
	p, ok := legacyMethods[method]
	return p, ok
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

// listenCall is the decision a stream of the server's notifications
// (subscriptions/listen, a legacy GET stream) is opened and kept under:
// that the agent may read the server's lists.
func listenCall(server string) mcpCall {
	return mcpCall{action: policy.ActionListTools, resource: policy.ToolServer(server), input: []byte("{}")}
}

// classify maps an MCP message to the decision it needs. Everything the
// policy sees is read from the parsed message whose encoding is forwarded.
func classify(server string, m *rpcmsg.Message, rev revision) (mcpCall, *rpcmsg.Error) {
	if m.IsResponse() {
		if rev.modern {
			// 2026-07-28 has no server-to-client requests to answer.
			return mcpCall{}, &rpcmsg.Error{Code: rpcmsg.CodeInvalidRequest, Message: "a client sends no responses in MCP " + revisionModern}
		}
		// The client answering a request of the server (sampling,
		// elicitation, roots): it carries no action of the agent's.
		return mcpCall{}, nil
	}
	if m.IsNotification() {
		if strings.HasPrefix(m.Method, "notifications/") && (!rev.modern || m.Method == "notifications/cancelled") {
			return mcpCall{}, nil
		}
		return mcpCall{}, &rpcmsg.Error{Code: rpcmsg.CodeInvalidRequest, Message: "only notifications/* may be sent without an id"}
	}
	known, ok := knownParams(m.Method, rev)
	if !ok {
		return mcpCall{}, &rpcmsg.Error{Code: rpcmsg.CodeMethodNotFound, Message: fmt.Sprintf("method %q is not available through the gateway", m.Method)}
	}
	p := m.Params
	if known != nil {
		if err := rpcmsg.KnownMembers(p, known...); err != nil {
			return mcpCall{}, invalidParams("params: %v", err)
		}
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
	case "initialize", "ping", "logging/setLevel", "server/discover":
		return mcpCall{}, nil
	case "tools/list":
		return mcpCall{action: policy.ActionListTools, resource: policy.ToolServer(server), input: []byte("{}"), filter: m.Method}, nil
	case "resources/list", "resources/templates/list", "prompts/list":
		return mcpCall{filter: m.Method}, nil
	case "tasks/get", "tasks/cancel", "tasks/result", "tasks/update":
		id, rerr := str("taskId")
		if rerr != nil {
			return mcpCall{}, rerr
		}
		if id == "" {
			return mcpCall{}, invalidParams("taskId is required")
		}
		return mcpCall{task: id}, nil
	case "tasks/list":
		// Filtered: the caller's tasks only.
		return mcpCall{}, nil
	case "subscriptions/listen":
		// Narrowed by serveMCP, and decided as reading the server.
		return listenCall(server), nil
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
		return mcpCall{action: policy.ActionCallTool, resource: policy.Tool(server, name), input: input, metered: true, rounds: rev.modern}, nil
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		uri, rerr := str("uri")
		if rerr != nil {
			return mcpCall{}, rerr
		}
		if uri == "" {
			return mcpCall{}, invalidParams("uri is required")
		}
		return mcpCall{action: policy.ActionReadResource, resource: policy.ToolServer(server), input: object("uri", uri),
			metered: m.Method == "resources/read", rounds: rev.modern && m.Method == "resources/read"}, nil
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
		return mcpCall{action: policy.ActionGetPrompt, resource: policy.ToolServer(server), input: in.Encode(), metered: true, rounds: rev.modern}, nil
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
	return mcpCall{}, &rpcmsg.Error{Code: rpcmsg.CodeMethodNotFound, Message: fmt.Sprintf("method %q is not available through the gateway", m.Method)}
}
