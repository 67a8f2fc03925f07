package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/sse"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
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

// mcpAuthz is what a message needs before it may pass.
type mcpAuthz struct {
	// action and resource name the decision; empty action means none is
	// needed (initialize, ping, notifications, responses).
	action   string
	resource cedar.EntityUID
	input    json.RawMessage
	// filter names the list in the result to filter item by item.
	filter string
	// metered messages count against the call budget.
	metered bool
}

// listFilters maps list methods to the result field filtered and the
// decision made per item.
var listFilters = map[string]struct{ field, action, key string }{
	"tools/list":               {"tools", policy.ActionCallTool, "name"},
	"resources/list":           {"resources", policy.ActionReadResource, "uri"},
	"resources/templates/list": {"resourceTemplates", policy.ActionReadResource, "uriTemplate"},
	"prompts/list":             {"prompts", policy.ActionGetPrompt, "name"},
}

// classify maps an MCP message to the decision it needs. Methods the
// gateway does not know are refused: deny by default applies to protocol
// features too.
func classify(server string, m *rpcMessage) (mcpAuthz, *rpcError) {
	if m.isResponse() {
		// The client answering a request of the server (sampling,
		// elicitation, roots): it carries no action of the agent's.
		return mcpAuthz{}, nil
	}
	switch {
	case m.Method == "initialize", m.Method == "ping", m.Method == "logging/setLevel", m.Method == "server/discover",
		strings.HasPrefix(m.Method, "notifications/") && m.isNotification():
		return mcpAuthz{}, nil
	case m.isNotification():
		return mcpAuthz{}, &rpcError{Code: codeInvalidRequest, Message: "only notifications/* may be sent without an id"}
	}
	var p struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
		URI       string          `json:"uri"`
		Ref       *struct {
			Type string `json:"type"`
			Name string `json:"name"`
			URI  string `json:"uri"`
		} `json:"ref"`
	}
	if len(m.Params) > 0 && string(m.Params) != "null" {
		if err := json.Unmarshal(m.Params, &p); err != nil {
			return mcpAuthz{}, &rpcError{Code: codeInvalidParams, Message: "params: " + err.Error()}
		}
	}
	obj := func(v map[string]any) json.RawMessage { b, _ := json.Marshal(v); return b }
	switch m.Method {
	case "tools/list":
		return mcpAuthz{action: policy.ActionListTools, resource: policy.ToolServer(server), filter: m.Method}, nil
	case "resources/list", "resources/templates/list", "prompts/list":
		return mcpAuthz{filter: m.Method}, nil
	case "tools/call":
		if err := policy.ValidateName("tool name", p.Name); err != nil {
			return mcpAuthz{}, &rpcError{Code: codeInvalidParams, Message: err.Error()}
		}
		args := p.Arguments
		if len(args) == 0 || string(args) == "null" {
			args = json.RawMessage("{}")
		}
		if args[0] != '{' {
			return mcpAuthz{}, &rpcError{Code: codeInvalidParams, Message: "arguments must be an object"}
		}
		return mcpAuthz{action: policy.ActionCallTool, resource: policy.Tool(server, p.Name), input: args, metered: true}, nil
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		if p.URI == "" {
			return mcpAuthz{}, &rpcError{Code: codeInvalidParams, Message: "uri is required"}
		}
		return mcpAuthz{action: policy.ActionReadResource, resource: policy.ToolServer(server), input: obj(map[string]any{"uri": p.URI}), metered: m.Method == "resources/read"}, nil
	case "prompts/get":
		in := map[string]any{"name": p.Name}
		if len(p.Arguments) > 0 && string(p.Arguments) != "null" {
			var args map[string]any
			if err := json.Unmarshal(p.Arguments, &args); err != nil {
				return mcpAuthz{}, &rpcError{Code: codeInvalidParams, Message: "prompt arguments must be an object of strings"}
			}
			in["args"] = args
		}
		return mcpAuthz{action: policy.ActionGetPrompt, resource: policy.ToolServer(server), input: obj(in), metered: true}, nil
	case "completion/complete":
		switch {
		case p.Ref != nil && p.Ref.Type == "ref/prompt":
			return mcpAuthz{action: policy.ActionGetPrompt, resource: policy.ToolServer(server), input: obj(map[string]any{"name": p.Ref.Name})}, nil
		case p.Ref != nil && p.Ref.Type == "ref/resource":
			return mcpAuthz{action: policy.ActionReadResource, resource: policy.ToolServer(server), input: obj(map[string]any{"uri": p.Ref.URI})}, nil
		}
		return mcpAuthz{}, &rpcError{Code: codeInvalidParams, Message: "completion needs a prompt or resource ref"}
	}
	return mcpAuthz{}, &rpcError{Code: codeDenied, Message: fmt.Sprintf("method %q is not permitted through the gateway", m.Method)}
}

// decide asks the PDP; any error denies.
func (g *Gateway) decide(ctx context.Context, c *caller, action string, resource cedar.EntityUID, input json.RawMessage) (policy.Decision, time.Duration, error) {
	start := time.Now()
	q := Decision{Agent: c.id, Action: action, Resource: resource, Input: input}
	if c.task != nil {
		q.Task, q.Manifest, q.Tainted, q.Grants = c.task.ID, c.task.Manifest, c.task.Tainted, c.grantNames(g.deps.Clock.Now())
	}
	d, err := g.deps.Decider.Decide(ctx, q)
	return d, time.Since(start), err
}

// recordDecision writes a decision record: the agent, task, server,
// resource, a digest of the arguments, the outcome with the determining
// policy ids and version, and the decision latency.
func (g *Gateway) recordDecision(ctx context.Context, c *caller, server, action string, resource cedar.EntityUID, input []byte, d policy.Decision, latency time.Duration, reasons []string, extra map[string]string) error {
	decision := audit.Deny
	if d.Allowed && len(reasons) == 0 {
		decision = audit.Allow
	}
	detail := map[string]string{"gateway": g.cfg.Name, "server": server, "decision_id": d.ID,
		"policy_version": strconv.FormatInt(d.Version, 10), "latency_us": strconv.FormatInt(latency.Microseconds(), 10)}
	for k, v := range extra {
		detail[k] = v
	}
	if c.claims.Task != "" {
		detail["task_open"] = strconv.FormatBool(c.task != nil)
		if c.task != nil {
			detail["manifest"], detail["tainted"] = c.task.Manifest, strconv.FormatBool(c.task.Tainted)
			if gs := c.grantNames(g.deps.Clock.Now()); len(gs) > 0 {
				detail["grants"] = strings.Join(gs, " ")
			}
		}
	}
	ev := audit.Event{Actor: c.actor(), Action: "gateway." + action, Target: resource.String(), Decision: decision,
		Reasons: append(append([]string(nil), d.Reasons...), reasons...), Task: c.claims.Task, Detail: detail}
	if input != nil {
		ev.Digests = map[string]string{"arguments": audit.Digest(input)}
	}
	_, err := g.deps.Audit.Record(ctx, ev)
	return err
}

// writeRPC answers with one JSON-RPC message.
func writeRPC(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func denied(id json.RawMessage, msg, decisionID string) []byte {
	data := map[string]string{}
	if decisionID != "" {
		data["decision_id"] = decisionID
	}
	return rpcErrorResponse(id, &rpcError{Code: codeDenied, Message: msg, Data: data})
}

func (g *Gateway) serveMCP(w http.ResponseWriter, r *http.Request, c *caller, rt *runtime) {
	s := rt.cfg
	sid := r.Header.Get("Mcp-Session-Id")
	if sid != "" && !g.sessions.check(s.Name, sid, c.id.String()) {
		// Unknown, expired, or another agent's session: the spec's answer
		// for a session the server does not know.
		writeError(w, http.StatusNotFound, "not_found", "unknown MCP session; initialize a new one")
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodDelete:
		if r.Method == http.MethodGet && sid == "" {
			writeError(w, http.StatusBadRequest, "invalid_request", "a GET stream needs an Mcp-Session-Id")
			return
		}
		g.forward(w, r, c, rt, nil, nil, "")
		if r.Method == http.MethodDelete {
			g.sessions.unbind(s.Name, sid)
		}
		return
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		writeError(w, http.StatusMethodNotAllowed, "invalid_request", "MCP uses GET, POST and DELETE")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.Limits.MaxBody))
	if err != nil {
		writeRPC(w, http.StatusRequestEntityTooLarge, rpcErrorResponse(nil, &rpcError{Code: codeInvalidRequest,
			Message: fmt.Sprintf("request body over %d bytes", g.cfg.Limits.MaxBody)}))
		return
	}
	msg, rerr := parseRPC(body)
	if rerr != nil {
		g.recordRefusal(r.Context(), c, "gateway.mcp", policy.ToolServer(s.Name).String(), rerr.Message, map[string]string{"server": s.Name})
		writeRPC(w, http.StatusBadRequest, rpcErrorResponse(nil, rerr))
		return
	}
	if msg.Method == "initialize" && sid != "" {
		writeRPC(w, http.StatusBadRequest, rpcErrorResponse(msg.ID, &rpcError{Code: codeInvalidRequest, Message: "initialize starts a session; send it without Mcp-Session-Id"}))
		return
	}
	az, rerr := classify(s.Name, msg)
	if rerr != nil {
		g.recordRefusal(r.Context(), c, "gateway.mcp", policy.ToolServer(s.Name).String(), rerr.Message,
			map[string]string{"server": s.Name, "method": msg.Method})
		writeRPC(w, http.StatusOK, rpcErrorResponse(msg.ID, rerr))
		return
	}
	if az.action != "" {
		d, latency, err := g.decideCall(r.Context(), c, az.action, az.resource, az.input)
		var reasons []string
		if err != nil {
			reasons = []string{"decision failed: " + err.Error()}
			d.Allowed = false
		}
		extra := map[string]string{"method": msg.Method}
		if d.Allowed {
			grant, err := g.spendGrant(r.Context(), c, d.Reasons, az.resource, d.ID)
			if err != nil {
				reasons, d.Allowed = []string{"grant not usable: " + err.Error()}, false
			} else if grant != "" {
				extra["grant"] = grant
			}
		}
		if !d.Allowed {
			if rec := g.recordDecision(r.Context(), c, s.Name, az.action, az.resource, az.input, d, latency, reasons, extra); rec != nil {
				g.logger.Error("could not record a denial", "err", rec)
			}
			writeRPC(w, http.StatusOK, denied(msg.ID, "denied by policy", d.ID))
			return
		}
		// Write first: nothing is forwarded unless its record is durable.
		if err := g.recordDecision(r.Context(), c, s.Name, az.action, az.resource, az.input, d, latency, nil, extra); err != nil {
			writeRPC(w, http.StatusServiceUnavailable, rpcErrorResponse(msg.ID, &rpcError{Code: codeInternal, Message: "refused: the audit log is unavailable"}))
			return
		}
	}
	if az.metered {
		if err := g.budgets.admit(s, c.id.String(), c.taskID(), c.taskLimits()); err != nil {
			g.recordRefusal(r.Context(), c, "gateway.budget", az.resource.String(), err.Error(), map[string]string{"server": s.Name, "method": msg.Method})
			writeRPC(w, http.StatusOK, denied(msg.ID, err.Error(), ""))
			return
		}
		if err := g.taint(r.Context(), c, az.resource); err != nil {
			g.logger.Warn("could not record a task's taint; refusing", "task", c.taskID(), "err", err)
			writeRPC(w, http.StatusServiceUnavailable, rpcErrorResponse(msg.ID, &rpcError{Code: codeInternal, Message: "refused: the task's taint could not be recorded"}))
			return
		}
	}
	g.forward(w, r, c, rt, body, msg, az.filter)
}

// forward sends the request upstream and relays the answer, filtering list
// results and charging response bytes.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, c *caller, rt *runtime, body []byte, msg *rpcMessage, filter string) {
	s := rt.cfg
	ctx := r.Context()
	var cancel context.CancelFunc
	if r.Method != http.MethodGet {
		ctx, cancel = context.WithTimeout(ctx, g.cfg.Limits.UpstreamTimeout)
	} else {
		// A stream lives no longer than the token that opened it: the agent
		// reconnects with a fresh token and is authenticated again.
		ctx, cancel = clock.Until(ctx, g.deps.Clock, c.claims.Expiry.Time())
	}
	defer cancel()
	req, err := g.outbound(ctx, s, r.Method, rt.target, body, r.Header)
	if err != nil {
		g.logger.Error("upstream request not built", "server", s.Name, "err", err)
		g.upstreamFailed(w, msg, "the gateway could not prepare the upstream request")
		return
	}
	resp, err := rt.up.RoundTrip(req)
	if err != nil {
		g.logger.Warn("upstream unreachable", "server", s.Name, "err", err)
		g.upstreamFailed(w, msg, "upstream server unavailable")
		return
	}
	defer resp.Body.Close()
	if msg != nil && msg.Method == "initialize" && resp.StatusCode/100 == 2 {
		if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" {
			g.sessions.bind(s.Name, sid, c.id.String())
		}
	}
	g.copyResponseHeaders(w.Header(), resp.Header)
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	agent, task := c.id.String(), c.taskID()
	switch {
	case mt == "text/event-stream":
		w.WriteHeader(resp.StatusCode)
		g.relaySSE(ctx, w, resp.Body, c, s, msg, filter)
	case filter != "" && mt == "application/json":
		b, err := io.ReadAll(io.LimitReader(resp.Body, g.cfg.Limits.MaxResponse+1))
		if err != nil || int64(len(b)) > g.cfg.Limits.MaxResponse {
			g.upstreamFailed(w, msg, "upstream response too large or broken")
			return
		}
		out := g.filterMessage(ctx, c, s, msg, filter, b)
		g.budgets.charge(s, agent, task, int64(len(out)))
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(out)
	default:
		w.WriteHeader(resp.StatusCode)
		g.relay(w, resp.Body, s, agent, task)
	}
}

func (g *Gateway) upstreamFailed(w http.ResponseWriter, msg *rpcMessage, text string) {
	if msg != nil && msg.isRequest() {
		writeRPC(w, http.StatusBadGateway, rpcErrorResponse(msg.ID, &rpcError{Code: codeInternal, Message: text}))
		return
	}
	writeError(w, http.StatusBadGateway, "upstream", text)
}

// relay copies a body, charging it to the response budget and cutting it
// when the budget is spent.
func (g *Gateway) relay(w http.ResponseWriter, body io.Reader, s *Server, agent, task string) {
	buf := make([]byte, 32<<10)
	fl, _ := w.(http.Flusher)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			chunk := g.redact(buf[:n])
			if _, werr := w.Write(chunk); werr != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
			if !g.budgets.charge(s, agent, task, int64(n)) {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// maxEvent bounds one SSE event from an upstream.
const maxEvent = 8 << 20

// errBudgetSpent stops a stream whose response budget ran out.
var errBudgetSpent = errors.New("response budget spent")

// relaySSE relays an event stream event by event: the list result it
// carries is filtered, injected secrets are redacted, and bytes are charged
// to the budget. The strict reader cuts a stream it cannot parse rather than
// relay something the agent might read differently than the gateway did.
func (g *Gateway) relaySSE(ctx context.Context, w http.ResponseWriter, body io.Reader, c *caller, s *Server, msg *rpcMessage, filter string) {
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	agent, task := c.id.String(), c.taskID()
	err := sse.Transform(w, body, maxEvent, func(ev sse.Event) (sse.Event, bool, error) {
		if filter != "" && ev.IsMessage() {
			ev.Data = string(g.filterMessage(ctx, c, s, msg, filter, []byte(ev.Data)))
		}
		ev.Data = string(g.redact([]byte(ev.Data)))
		if !g.budgets.charge(s, agent, task, int64(len(ev.Data))) {
			return ev, false, errBudgetSpent
		}
		return ev, true, nil
	})
	if err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
		g.logger.Debug("upstream stream ended", "server", s.Name, "err", err)
	}
}

// filterMessage filters the list in a response to msg down to the items
// the caller may use. Anything that is not that response passes as is.
func (g *Gateway) filterMessage(ctx context.Context, c *caller, s *Server, msg *rpcMessage, filter string, b []byte) []byte {
	var resp struct {
		JSONRPC string                     `json:"jsonrpc"`
		ID      json.RawMessage            `json:"id"`
		Result  map[string]json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(b, &resp); err != nil || msg == nil || !sameID(resp.ID, msg.ID) || resp.Result == nil {
		return b
	}
	lf := listFilters[filter]
	var items []json.RawMessage
	if raw, ok := resp.Result[lf.field]; ok {
		if err := json.Unmarshal(raw, &items); err != nil {
			// A list we cannot read is not passed on unfiltered.
			return rpcErrorResponse(msg.ID, &rpcError{Code: codeInternal, Message: "upstream returned a malformed list"})
		}
	}
	kept := make([]json.RawMessage, 0, len(items))
	for _, it := range items {
		var key map[string]any
		_ = json.Unmarshal(it, &key)
		name, _ := key[lf.key].(string)
		var res cedar.EntityUID
		var input json.RawMessage
		if lf.action == policy.ActionCallTool {
			if policy.ValidateName("tool name", name) != nil {
				continue
			}
			res, input = policy.Tool(s.Name, name), json.RawMessage("{}")
		} else {
			in, _ := json.Marshal(map[string]string{lf.key: name})
			if lf.key == "uriTemplate" {
				in, _ = json.Marshal(map[string]string{"uri": name})
			}
			res, input = policy.ToolServer(s.Name), in
		}
		if d, _, err := g.decide(ctx, c, lf.action, res, input); err == nil && d.Allowed {
			kept = append(kept, it)
		}
	}
	resp.Result[lf.field], _ = json.Marshal(kept)
	out, err := json.Marshal(resp)
	if err != nil {
		return rpcErrorResponse(msg.ID, &rpcError{Code: codeInternal, Message: "could not filter the list"})
	}
	g.logger.Debug("filtered list", "server", s.Name, "method", msg.Method, "kept", len(kept), "of", len(items))
	return out
}
