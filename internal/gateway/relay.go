package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/sse"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/rpcmsg"
	"github.com/bulkhead-dev/bulkhead/internal/strictjson"
)

// outbound is the request the gateway sends upstream.
type outbound struct {
	method, target string
	// body is exactly the bytes checked (their canonical form); nil for
	// none.
	body []byte
	// contentType, if set, replaces the agent's: the body is the gateway's
	// encoding, so the type is too.
	contentType string
}

// forward sends the request upstream and relays the answer: for MCP,
// every message of a response that may carry a list is parsed strictly
// and its list filtered; injected secrets are redacted on every path; and
// response bytes are charged to budgets.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, c *caller, rt *runtime, out outbound, msg *rpcmsg.Message, filter string) {
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
	req, err := g.outbound(ctx, s, out, r.Header)
	if err != nil {
		g.logger.Error("upstream request not built", "server", s.Name, "err", err)
		g.upstreamFailed(w, r, msg, fmt.Errorf("%w: the gateway could not prepare the upstream request: %w", fault.Upstream, err))
		return
	}
	resp, err := rt.up.RoundTrip(req)
	if err != nil {
		g.upstreamFailed(w, r, msg, fmt.Errorf("%w: %s: %w", fault.Upstream, s.Name, err))
		return
	}
	defer resp.Body.Close()
	if msg != nil && msg.Method == "initialize" && resp.StatusCode/100 == 2 {
		if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" {
			g.sessions.bind(s.Name, sid, c.id.String())
		}
	}
	forms := g.secretForms()
	g.copyResponseHeaders(w.Header(), resp.Header, forms)
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	agent, task := c.id.String(), c.taskID()
	mcp := s.MCP != nil
	switch {
	case mcp && mt == "text/event-stream":
		w.WriteHeader(resp.StatusCode)
		g.relaySSE(ctx, w, resp.Body, c, s, msg, filter, forms)
	case mcp && filter != "" && mt != "application/json":
		// A list that arrives in a form the gateway cannot read must not
		// reach the agent, whose parser might read it anyway.
		g.upstreamFailed(w, r, msg, fmt.Errorf("%w: %s answered a list with status %d and type %q", fault.Upstream, s.Name, resp.StatusCode, mt))
	case mcp && filter != "":
		b, err := io.ReadAll(io.LimitReader(resp.Body, g.cfg.Limits.MaxResponse+1))
		if err != nil || int64(len(b)) > g.cfg.Limits.MaxResponse {
			g.upstreamFailed(w, r, msg, fmt.Errorf("%w: %s: response too large or broken", fault.Upstream, s.Name))
			return
		}
		body, _ := g.checkMessage(ctx, c, s, msg, filter, b)
		body = redactAll(body, forms)
		g.budgets.charge(s, agent, task, int64(len(body)))
		// Filtered per agent: no shared cache may keep it.
		w.Header().Set("Cache-Control", "private, no-store")
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
	default:
		w.WriteHeader(resp.StatusCode)
		copyRedacted(w, resp.Body, forms, func(n int) bool { return g.budgets.charge(s, agent, task, int64(n)) })
	}
}

// upstreamFailed answers a request the upstream did not serve.
func (g *Gateway) upstreamFailed(w http.ResponseWriter, r *http.Request, msg *rpcmsg.Message, err error) {
	g.logger.Warn("upstream failed", "path", r.URL.Path, "err", err)
	if msg != nil && msg.IsRequest() {
		g.failRPC(w, r, msg.IDJSON(), &refusal{err: err})
		return
	}
	g.fail(w, r, err)
}

// maxEvent bounds one SSE event from an upstream.
const maxEvent = 8 << 20

// errBudgetSpent stops a stream whose response budget ran out.
var errBudgetSpent = errors.New("response budget spent")

// relaySSE relays an event stream event by event: each message is checked
// (and its list filtered) as checkMessage says, injected secrets are
// redacted from every field, and bytes are charged to the budget. The
// strict reader cuts a stream it cannot parse rather than relay something
// the agent might read differently than the gateway did.
func (g *Gateway) relaySSE(ctx context.Context, w http.ResponseWriter, body io.Reader, c *caller, s *Server, msg *rpcmsg.Message, filter string, forms [][]byte) {
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	agent, task := c.id.String(), c.taskID()
	err := sse.Transform(w, body, maxEvent, func(ev sse.Event) (sse.Event, bool, error) {
		var stop error
		if ev.IsMessage() {
			data, ok := g.checkMessage(ctx, c, s, msg, filter, []byte(ev.Data))
			ev.Data = string(data)
			if !ok {
				stop = fmt.Errorf("%w: upstream message refused", sse.ErrStop)
			}
		}
		ev.Data = string(redactAll([]byte(ev.Data), forms))
		ev.ID = string(redactAll([]byte(ev.ID), forms))
		ev.Type = string(redactAll([]byte(ev.Type), forms))
		if !g.budgets.charge(s, agent, task, int64(len(ev.Data))) {
			return ev, false, errBudgetSpent
		}
		return ev, true, stop
	})
	if err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
		g.logger.Debug("upstream stream ended", "server", s.Name, "err", err)
	}
}

// checkMessage reads one upstream message of the exchange opened by msg
// (nil for a GET stream) and returns what the agent may receive in its
// place, and false when the exchange must end there. Every message is
// parsed strictly and passed on in canonical form. A response must answer
// msg; the list in a response to a list request (or, on a GET stream where
// a resumed exchange may carry one, in any response) is filtered to what
// the caller may use. A message the gateway cannot read, or a response to
// another request, is replaced by an error and ends the exchange: a list it
// cannot filter never reaches the agent.
func (g *Gateway) checkMessage(ctx context.Context, c *caller, s *Server, msg *rpcmsg.Message, filter string, b []byte) ([]byte, bool) {
	var reqID []byte
	if msg != nil {
		reqID = msg.IDJSON()
	}
	refused := func(why string) ([]byte, bool) {
		g.logger.Warn("upstream message refused", "server", s.Name, "why", why)
		return rpcError(reqID, rpcmsg.CodeInternal, "the gateway refused the upstream's answer: "+why), false
	}
	m, rerr := rpcmsg.Parse(b, maxDepth)
	if rerr != nil {
		return refused("not a message the gateway can read (" + rerr.Message + ")")
	}
	if !m.IsResponse() {
		// The server's own requests and notifications.
		return m.Encode(), true
	}
	if msg != nil && !sameID(m.IDJSON(), reqID) {
		return refused("a response to another request")
	}
	if !m.Result.Exists() {
		return m.Encode(), true
	}
	if msg != nil && filter == "" {
		return m.Encode(), true
	}
	// Every list the result carries is filtered, the one asked for and any
	// other: on a GET stream (a resumed exchange) the gateway does not know
	// which was asked for.
	if err := rpcmsg.KnownMembers(m.Result, listResultMembers...); err != nil {
		return refused("list result: " + err.Error())
	}
	result := m.Result
	for _, method := range listMethods {
		lf := listFilters[method]
		if method != filter && !result.Get(lf.field).Exists() {
			continue
		}
		var err error
		if result, err = g.filterList(ctx, c, s, lf, result); err != nil {
			return refused(err.Error())
		}
	}
	return m.WithResult(result).Encode(), true
}

// listMethods are listFilters' keys in a fixed order.
var listMethods = []string{"tools/list", "resources/list", "resources/templates/list", "prompts/list"}

// listResultMembers are the members of list results that a case-folding
// parser could confuse.
var listResultMembers = []string{"tools", "resources", "resourceTemplates", "prompts", "nextCursor", "_meta", "ttlMs", "cacheScope"}

// filterList keeps the items of a list result the caller may use, and
// marks the result private: it differs per agent, so no intermediary may
// share it (MCP's cacheScope).
func (g *Gateway) filterList(ctx context.Context, c *caller, s *Server, lf listFilter, result strictjson.Value) (strictjson.Value, error) {
	list := result.Get(lf.field)
	if list.Exists() && list.Kind() != strictjson.Array {
		return strictjson.Value{}, fmt.Errorf("%s is not a list", lf.field)
	}
	kept := make([]strictjson.Value, 0, len(list.Items()))
	for _, it := range list.Items() {
		if it.Kind() != strictjson.Object {
			return strictjson.Value{}, fmt.Errorf("an item of %s is not an object", lf.field)
		}
		if err := rpcmsg.KnownMembers(it, lf.key); err != nil {
			return strictjson.Value{}, fmt.Errorf("an item of %s: %w", lf.field, err)
		}
		name, _ := it.Get(lf.key).Str()
		var res cedar.EntityUID
		var input []byte
		switch {
		case lf.action == policy.ActionCallTool:
			if policy.ValidateName("tool name", name) != nil {
				continue
			}
			res, input = policy.Tool(s.Name, name), []byte("{}")
		case lf.key == "uriTemplate":
			res, input = policy.ToolServer(s.Name), object("uri", name)
		default:
			res, input = policy.ToolServer(s.Name), object(lf.key, name)
		}
		if d, _, err := g.decide(ctx, c, lf.action, res, input); err == nil && d.Allowed {
			kept = append(kept, it)
		}
	}
	g.logger.Debug("filtered list", "server", s.Name, "field", lf.field, "kept", len(kept), "of", len(list.Items()))
	return result.With(lf.field, strictjson.MakeArray(kept...)).With("cacheScope", strictjson.MakeString("private")), nil
}
