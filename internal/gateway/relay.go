package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"

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
	// header holds headers the gateway made itself (mirrored from the
	// body it forwards).
	header http.Header
	// modern requests (MCP 2026-07-28) carry no session or stream
	// resumption headers.
	modern bool
	// recorded is the decision record of a read-only call, written while
	// the call is forwarded: the answer waits for it.
	recorded *pendingRecord
	// spend is what the call spent budgets for (zero: no decision made
	// it), which its answer's bytes are charged to.
	spend use
	// standing is the decision the request was forwarded under, decided
	// again while its answer flows (zero: none).
	standing standing
}

// exchange is one MCP request and what its answer must be checked for.
type exchange struct {
	// msg is the request; nil for a legacy GET stream.
	msg     *rpcmsg.Message
	call    mcpCall
	rev     revision
	session string
	auth    authorized
	// cont is the round this request continues (MRTR), and roundArgs the
	// canonical arguments a next round is keyed by.
	cont      *round
	roundArgs []byte
	// items counts the records its results returned (a tool's content
	// items, a resource's contents, a prompt's messages).
	items int64
}

// longLived reports a response stream that is not one call's answer: a
// legacy GET stream or a subscriptions/listen stream. It lives until the
// token that opened it expires, not until the upstream timeout.
func (ex *exchange) longLived() bool {
	return ex.msg == nil || ex.msg.Method == "subscriptions/listen"
}

// inspected reports an answer the gateway must read before the agent gets
// it: a list to filter, a result that may open a task or ask for input, a
// task's state, the server's own description.
func (ex *exchange) inspected() bool {
	if ex.msg == nil || !ex.msg.IsRequest() {
		return ex.msg == nil
	}
	return ex.call.filter != "" || ex.call.rounds || ex.call.task != "" || ex.msg.Method == "tools/call" ||
		ex.msg.Method == "tasks/list" || ex.msg.Method == "server/discover" || ex.msg.Method == "subscriptions/listen"
}

// forward sends the request upstream and relays the answer: for MCP,
// every message of an answer the gateway must read is parsed strictly and
// checked (lists filtered, tasks bound to their creator, notifications
// decided); injected secrets are redacted on every path; and response
// bytes are charged to budgets.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, c *caller, rt *runtime, out outbound, ex *exchange) {
	s := rt.cfg
	ctx := r.Context()
	var cancel context.CancelFunc
	if ex != nil && ex.longLived() || ex == nil && r.Method == http.MethodGet {
		// A stream lives no longer than the token that opened it: the agent
		// reconnects with a fresh token and is authenticated again.
		ctx, cancel = clock.Until(ctx, g.deps.Clock, c.claims.Expiry.Time())
	} else {
		ctx, cancel = context.WithTimeout(ctx, g.cfg.Limits.UpstreamTimeout)
	}
	defer cancel()
	ctx, cut := context.WithCancelCause(ctx)
	defer cut(nil)
	if out.standing.action != "" {
		// Until its answer is delivered, a request stays under its
		// decision: a new one that refuses it cuts it.
		// A copy: the relay goes on deciding with c (notifications) while
		// a re-decision reads this one.
		cc := *c
		defer g.streams.open(&openStream{c: &cc, st: out.standing, cancel: cut})()
	}
	var msg *rpcmsg.Message
	if ex != nil {
		msg = ex.msg
	}
	req, err := g.outbound(ctx, s, out, r.Header)
	if err != nil {
		g.logger.Error("upstream request not built", "server", s.Name, "err", err)
		g.upstreamFailed(w, r, msg, fmt.Errorf("%w: the gateway could not prepare the upstream request: %w", fault.Upstream, err))
		return
	}
	resp, err := rt.up.RoundTrip(req)
	if rerr := out.recorded.wait(); rerr != nil {
		// A read whose record is not durable: the agent never sees its
		// answer, so it happened for no one.
		if err == nil {
			resp.Body.Close()
		}
		g.logger.Error("could not record a read-only call; its answer is withheld", "server", s.Name, "err", rerr)
		g.upstreamFailed(w, r, msg, fmt.Errorf("%w: refused: the audit log is unavailable", fault.Unavailable))
		return
	}
	if err != nil {
		if errors.Is(context.Cause(ctx), errDecidedAgain) {
			g.upstreamFailed(w, r, msg, fmt.Errorf("%w: the call was decided again while it ran, and denied", fault.Forbidden))
			return
		}
		g.upstreamFailed(w, r, msg, fmt.Errorf("%w: %s: %w", fault.Upstream, s.Name, err))
		return
	}
	defer resp.Body.Close()
	if msg != nil && msg.Method == "initialize" && resp.StatusCode/100 == 2 {
		if sid := resp.Header.Get("Mcp-Session-Id"); sid != "" {
			g.sessions.bind(s.Name, sid, c.id.String(), c.claims.Task)
		}
	}
	forms := g.secretForms()
	g.copyResponseHeaders(w.Header(), resp.Header, forms)
	if ex != nil && ex.rev.modern {
		w.Header().Del("Mcp-Session-Id")
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	spend := out.spend
	if spend.s == nil {
		spend = use{s: s, agent: c.id.String(), task: c.taskID(), lim: c.taskLimits()}
	}
	m := g.budgets.meter(ctx, spend)
	defer m.close()
	if out.standing.action != "" {
		defer func() {
			var items int64
			if ex != nil {
				items = ex.items
			}
			g.noteUsage(c, out.standing.resource.String(), m.sent, items)
		}()
	}
	inspect := ex != nil && ex.inspected()
	switch {
	case ex != nil && mt == "text/event-stream":
		w.WriteHeader(resp.StatusCode)
		g.relaySSE(ctx, w, resp.Body, c, s, ex, forms, m)
	case inspect && mt != "application/json" && (ex.call.filter != "" || resp.StatusCode/100 == 2):
		// An answer that may carry a list, a task or a request for input,
		// in a form the gateway cannot read, must not reach the agent,
		// whose parser might read it anyway.
		g.upstreamFailed(w, r, msg, fmt.Errorf("%w: %s answered with status %d and type %q", fault.Upstream, s.Name, resp.StatusCode, mt))
	case inspect && mt == "application/json":
		b, err := io.ReadAll(io.LimitReader(resp.Body, g.cfg.Limits.MaxResponse+1))
		if err != nil || int64(len(b)) > g.cfg.Limits.MaxResponse {
			g.upstreamFailed(w, r, msg, fmt.Errorf("%w: %s: response too large or broken", fault.Upstream, s.Name))
			return
		}
		body, _, _ := g.checkMessage(ctx, c, s, ex, b)
		body = redactAll(body, forms)
		// Read whole already: a JSON answer is delivered, and a spent
		// budget refuses the next call.
		m.charge(int64(len(body)))
		if ex.call.filter != "" || ex.call.task != "" || ex.msg.Method == "tasks/list" {
			// Filtered or bound per agent: no shared cache may keep it.
			w.Header().Set("Cache-Control", "private, no-store")
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
	default:
		w.WriteHeader(resp.StatusCode)
		copyRedacted(w, resp.Body, forms, func(n int) bool { return m.charge(int64(n)) })
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
// as checkMessage says (and dropped, or the stream ended, when it says
// so), injected secrets are redacted from every field, and bytes are
// charged to the budget. The strict reader cuts a stream it cannot parse
// rather than relay something the agent might read differently than the
// gateway did.
func (g *Gateway) relaySSE(ctx context.Context, w http.ResponseWriter, body io.Reader, c *caller, s *Server, ex *exchange, forms [][]byte, m *meter) {
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	err := sse.Transform(w, body, maxEvent, func(ev sse.Event) (sse.Event, bool, error) {
		var stop error
		if ev.IsMessage() && ev.Data != "" {
			// An event without data carries no message (a resumable
			// stream's priming event): nothing to check.
			data, keep, ok := g.checkMessage(ctx, c, s, ex, []byte(ev.Data))
			if !keep {
				return ev, false, nil
			}
			ev.Data = string(data)
			if !ok {
				stop = fmt.Errorf("%w: upstream message refused", sse.ErrStop)
			}
		}
		if ex.rev.modern {
			// 2026-07-28 streams do not resume: no event ids.
			ev.ID = ""
			if ev == (sse.Event{}) {
				return ev, false, nil
			}
		}
		ev.Data = string(redactAll([]byte(ev.Data), forms))
		ev.ID = string(redactAll([]byte(ev.ID), forms))
		ev.Type = string(redactAll([]byte(ev.Type), forms))
		if !m.charge(int64(len(ev.Data))) {
			return ev, false, errBudgetSpent
		}
		return ev, true, stop
	})
	if err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
		g.logger.Debug("upstream stream ended", "server", s.Name, "err", err)
	}
}

// checkMessage reads one upstream message of exchange ex and returns what
// the agent may receive in its place; keep is false for a message the
// agent must not see at all, and ok false when the exchange must end
// there. Every message is parsed strictly and passed on in canonical form.
// A response must answer ex's request; a message the gateway cannot read,
// or a response to another request, is replaced by an error and ends the
// exchange: what the gateway cannot check never reaches the agent.
func (g *Gateway) checkMessage(ctx context.Context, c *caller, s *Server, ex *exchange, b []byte) (out []byte, keep, ok bool) {
	var reqID []byte
	if ex.msg != nil {
		reqID = ex.msg.IDJSON()
	}
	refused := func(why string) ([]byte, bool, bool) {
		g.logger.Warn("upstream message refused", "server", s.Name, "why", why)
		return rpcError(reqID, rpcmsg.CodeInternal, "the gateway refused the upstream's answer: "+why), true, false
	}
	m, rerr := rpcmsg.Parse(b, maxDepth)
	if rerr != nil {
		return refused("not a message the gateway can read (" + rerr.Message + ")")
	}
	if !m.IsResponse() {
		if !g.notificationVisible(ctx, c, s, ex, m) {
			return nil, false, true
		}
		return m.Encode(), true, true
	}
	if ex.msg != nil && !sameID(m.IDJSON(), reqID) {
		return refused("a response to another request")
	}
	if !m.Result.Exists() {
		return m.Encode(), true, true
	}
	result, err := g.checkResult(ctx, c, s, ex, m.Result)
	if err != nil {
		return refused(err.Error())
	}
	return m.WithResult(result).Encode(), true, true
}

// checkResult checks a result for the exchange that asked for it: lists
// are filtered (every list it carries, the one asked for and any other: on
// a GET stream, a resumed exchange, the gateway does not know which was
// asked for); a task it creates is bound to the caller; a request for
// input opens the call's next round; tasks/list shows the caller's tasks
// only; server/discover names only revisions the gateway speaks.
func (g *Gateway) checkResult(ctx context.Context, c *caller, s *Server, ex *exchange, result strictjson.Value) (strictjson.Value, error) {
	method := ""
	if ex.msg != nil {
		method = ex.msg.Method
	}
	if method == "" || ex.call.filter != "" {
		if err := rpcmsg.KnownMembers(result, listResultMembers...); err != nil {
			return strictjson.Value{}, fmt.Errorf("list result: %w", err)
		}
		if method == "tools/list" {
			// The upstream's own list, before filtering: what its tools
			// mirror into headers.
			g.mcp.learnTools(s.Name, result.Get("tools").Items(), ex.msg.Params.Get("cursor").Exists())
		}
		for _, lm := range listMethods {
			lf := listFilters[lm]
			if lm != ex.call.filter && !result.Get(lf.field).Exists() {
				continue
			}
			var err error
			if result, err = g.filterList(ctx, c, s, lf, result); err != nil {
				return strictjson.Value{}, err
			}
		}
		return result, nil
	}
	agent := c.id.String()
	switch method {
	case "tools/call", "prompts/get", "resources/read":
		if err := rpcmsg.KnownMembers(result, "resultType", "taskId", "task", "inputRequests", "requestState"); err != nil {
			return strictjson.Value{}, err
		}
		ex.items += int64(len(result.Get(itemsOf[method]).Items()))
		typ, _ := result.Get("resultType").Str()
		switch {
		case typ == "task" || result.Get("task").Get("taskId").Exists():
			id, _ := result.Get("taskId").Str()
			if typ != "task" {
				id, _ = result.Get("task").Get("taskId").Str()
			}
			if id == "" {
				return strictjson.Value{}, errors.New("a task without a taskId")
			}
			session := ""
			if !ex.rev.modern {
				session = ex.session
			}
			g.mcp.bindTask(s.Name, id, agent, session)
		case typ == "input_required" && ex.call.rounds:
			state, _ := result.Get("requestState").Str()
			next := round{call: ex.auth.decisionID, n: 1, grants: ex.auth.grants}
			if ex.cont != nil {
				next.n = ex.cont.n + 1
			}
			g.mcp.rememberRound(roundKey(s.Name, agent, ex.call.resource.String(), []byte(state), ex.roundArgs), next)
		}
	case "tasks/list":
		if err := rpcmsg.KnownMembers(result, "tasks", "nextCursor", "_meta"); err != nil {
			return strictjson.Value{}, err
		}
		var kept []strictjson.Value
		for _, t := range result.Get("tasks").Items() {
			if id, _ := t.Get("taskId").Str(); id != "" && g.mcp.ownsTask(s.Name, id, agent, ex.session) {
				kept = append(kept, t)
			}
		}
		return result.With("tasks", strictjson.MakeArray(kept...)), nil
	case "server/discover":
		var vs []strictjson.Value
		var names []string
		for _, v := range result.Get("supportedVersions").Items() {
			if str, _ := v.Str(); slices.Contains(supportedRevisions, str) {
				vs = append(vs, v)
				names = append(names, str)
			}
		}
		g.mcp.learnVersions(s.Name, names)
		if result.Get("supportedVersions").Exists() {
			return result.With("supportedVersions", strictjson.MakeArray(vs...)), nil
		}
	}
	return result, nil
}

// itemsOf names the list of records in each method's result.
var itemsOf = map[string]string{"tools/call": "content", "prompts/get": "messages", "resources/read": "contents"}

// notificationVisible decides whether the agent may receive a message the
// upstream sends on its own: a resource's update only if the agent may
// read the resource now (so a change of policy applies to open
// subscriptions at once), a task's state only to the task's creator. On a
// subscriptions/listen stream only the notifications the spec defines
// there pass.
func (g *Gateway) notificationVisible(ctx context.Context, c *caller, s *Server, ex *exchange, m *rpcmsg.Message) bool {
	switch m.Method {
	case "notifications/resources/updated":
		uri, _ := m.Params.Get("uri").Str()
		d, _, err := g.decide(ctx, c, policy.ActionReadResource, policy.ToolServer(s.Name), object("uri", uri))
		return err == nil && d.Allowed
	case "notifications/tasks/status", "notifications/tasks":
		id, _ := m.Params.Get("taskId").Str()
		return g.mcp.ownsTask(s.Name, id, c.id.String(), ex.session)
	case "notifications/subscriptions/acknowledged", "notifications/tools/list_changed",
		"notifications/prompts/list_changed", "notifications/resources/list_changed":
		return true
	}
	return ex.msg == nil || ex.msg.Method != "subscriptions/listen"
}

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

// listMethods are listFilters' keys in a fixed order.
var listMethods = []string{"tools/list", "resources/list", "resources/templates/list", "prompts/list"}

// listResultMembers are the members of list results that a case-folding
// parser could confuse.
var listResultMembers = []string{"tools", "resources", "resourceTemplates", "prompts", "nextCursor", "_meta", "ttlMs", "cacheScope"}
