package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/sse"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/rpcmsg"
	"github.com/bulkhead-dev/bulkhead/internal/strictjson"
)

// serveMCP serves /mcp/NAME in either MCP revision (see mcpversion.go):
// parse strictly, check the mirrored headers, classify, check what the
// revision's stateful parts require (a task's owner, a listen filter, an
// MRTR round, a tool's mirrored arguments), authorize, and forward the
// canonical encoding of what was decided.
func (g *Gateway) serveMCP(w http.ResponseWriter, r *http.Request, c *caller, rt *runtime) {
	s := rt.cfg
	target := policy.ToolServer(s.Name).String()
	rev, verr := requestRevision(r.Header, nil, g.mcp.upstreamVersions(s.Name))
	refuseRevision := func(id []byte) {
		_, body := requestRevision(r.Header, id, g.mcp.upstreamVersions(s.Name))
		g.recordRefusal(r.Context(), c, "gateway.mcp", target, "unsupported MCP-Protocol-Version", map[string]string{"server": s.Name})
		writeRPC(w, http.StatusBadRequest, body)
	}
	if verr != nil && r.Method != http.MethodPost {
		refuseRevision(nil)
		return
	}
	sid := ""
	if !rev.modern && verr == nil {
		// 2026-07-28 has no sessions: a session id it carries is ignored,
		// never forwarded.
		sid = r.Header.Get("Mcp-Session-Id")
		if sid != "" && !g.sessions.check(s.Name, sid, c.id.String()) {
			// Unknown, expired, or another agent's session: the spec's
			// answer for a session the server does not know.
			g.fail(w, r, fmt.Errorf("%w: unknown MCP session; initialize a new one", fault.NotFound))
			return
		}
	}
	switch r.Method {
	case http.MethodGet, http.MethodDelete:
		if rev.modern {
			w.Header().Set("Allow", "POST")
			g.fail(w, r, fmt.Errorf("%w: MCP %s has no GET stream or sessions; use subscriptions/listen", fault.MethodNotAllowed, revisionModern))
			return
		}
		if r.Method == http.MethodGet && sid == "" {
			g.fail(w, r, fmt.Errorf("%w: a GET stream needs an Mcp-Session-Id", fault.Invalid))
			return
		}
		var ex *exchange
		out := outbound{method: r.Method, target: rt.target}
		if r.Method == http.MethodGet {
			// The stream's messages are checked like any answer's, and
			// the stream itself lives under a decision to read the
			// server, as subscriptions/listen does.
			ex = &exchange{rev: rev, session: sid}
			call := listenCall(s.Name)
			auth, rf := g.authorize(r.Context(), c, action{server: s, name: call.action, resource: call.resource, input: call.input,
				detail: map[string]string{"method": "GET stream"}})
			if rf != nil {
				g.fail(w, r, decisionError(rf))
				return
			}
			out.recorded = auth.record
			out.standing = standing{server: s.Name, action: call.action, resource: call.resource, input: call.input, decisionID: auth.decisionID, grants: auth.granted}
		}
		g.forward(w, r, c, rt, out, ex)
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
	if verr != nil {
		// Refused after the body is read, so that the error answers its id.
		refuseRevision(msg.IDJSON())
		return
	}
	detail := map[string]string{"server": s.Name, "method": msg.Method}
	if msg.Method == "initialize" && sid != "" {
		writeRPC(w, http.StatusBadRequest, rpcError(msg.IDJSON(), rpcmsg.CodeInvalidRequest, "initialize starts a session; send it without Mcp-Session-Id"))
		return
	}
	if rev.modern && msg.IsRequest() || !rev.modern && msg.Params.Get("_meta").Get(metaProtocolVersion).Exists() {
		// An intermediary or the upstream may act on the mirrored headers;
		// the policy decides on the body: they must agree. A body that
		// names a revision its headers do not is refused too: an upstream
		// could read it as 2026-07-28 while the gateway checked it as
		// legacy.
		if err := checkMirrored(r.Header, rev, msg); err != nil {
			g.recordRefusal(r.Context(), c, "gateway.mcp", target, err.Error(), detail)
			writeRPC(w, http.StatusBadRequest, rpcError(msg.IDJSON(), mirrorCode(err), err.Error()))
			return
		}
	}
	call, rerr := classify(s.Name, msg, rev)
	if rerr != nil {
		g.recordRefusal(r.Context(), c, "gateway.mcp", target, rerr.Message, detail)
		status := http.StatusOK
		if rev.modern && rerr.Code == rpcmsg.CodeMethodNotFound {
			status = http.StatusNotFound
		}
		writeRPC(w, status, rpcError(msg.IDJSON(), rerr.Code, rerr.Message))
		return
	}
	agent := c.id.String()
	out, ex := msg, &exchange{msg: msg, call: call, rev: rev, session: sid}
	header := http.Header{}
	switch {
	case call.task != "":
		// A task is its creator's: another agent, or another session of a
		// legacy revision, learns nothing of it, not even that it exists.
		if !g.mcp.ownsTask(s.Name, call.task, agent, sid) {
			g.recordRefusal(r.Context(), c, "gateway.task_access", target, fmt.Sprintf("task %.64q is not the caller's", call.task), detail)
			writeRPC(w, http.StatusOK, rpcError(msg.IDJSON(), rpcmsg.CodeInvalidParams, "no such task"))
			return
		}
	case msg.Method == "subscriptions/listen":
		var rf *refusal
		if out, rf = g.narrowListen(r.Context(), c, s, msg, sid); rf != nil {
			g.failRPC(w, r, msg.IDJSON(), rf)
			return
		}
	case call.rounds:
		state, _ := msg.Params.Get("requestState").Str()
		ex.roundArgs = call.input
		if state != "" || msg.Params.Get("inputResponses").Exists() {
			if rd, ok := g.mcp.takeRound(roundKey(s.Name, agent, call.resource.String(), []byte(state), call.input)); ok {
				ex.cont = &rd
			}
		}
	}
	if rev.modern && msg.Method == "tools/call" {
		ph, err := g.toolParamHeaders(r.Context(), c, rt, rev, r.Header, msg)
		if err != nil {
			g.recordRefusal(r.Context(), c, "gateway.mcp", target, err.Error(), detail)
			writeRPC(w, http.StatusBadRequest, rpcError(msg.IDJSON(), codeHeaderMismatch, err.Error()))
			return
		}
		header = ph
	}
	auth, rf := g.authorize(r.Context(), c, action{server: s, name: call.action, resource: call.resource, input: call.input,
		metered: call.metered, detail: map[string]string{"method": msg.Method}, cont: ex.cont})
	if rf != nil {
		g.failRPC(w, r, msg.IDJSON(), rf)
		return
	}
	ex.auth = auth
	if rev.modern {
		// Mirrored from the body the gateway forwards, so they agree by
		// construction.
		header.Set("Mcp-Method", out.Method)
		if src, ok := nameSource[out.Method]; ok {
			name, _ := out.Params.Get(src).Str()
			header.Set("Mcp-Name", encodeHeaderValue(name))
		}
	}
	// The canonical encoding of what was decided, never the bytes that
	// arrived.
	ob := outbound{method: http.MethodPost, target: rt.target, body: out.Encode(), contentType: "application/json",
		header: header, modern: rev.modern, recorded: auth.record, spend: auth.spend}
	if call.action != "" {
		ob.standing = standing{server: s.Name, action: call.action, resource: call.resource, input: call.input, decisionID: auth.decisionID, grants: auth.granted}
	}
	g.forward(w, r, c, rt, ob, ex)
}

// narrowListen keeps, of a subscriptions/listen request's notification
// filter, only what the caller may see: resource subscriptions for
// resources it may read, tasks it created. The upstream acknowledges the
// narrowed filter, so the agent sees what it got. The subscription is
// recorded; notifications are decided again as they arrive.
func (g *Gateway) narrowListen(ctx context.Context, c *caller, s *Server, msg *rpcmsg.Message, sid string) (*rpcmsg.Message, *refusal) {
	filter := msg.Params.Get("notifications")
	if filter.Exists() && filter.Kind() != strictjson.Object {
		return nil, refuse(fault.Invalid, "", "notifications must be an object")
	}
	if err := rpcmsg.KnownMembers(filter, listenMembers...); err != nil {
		return nil, refuse(fault.Invalid, "", "notifications: %v", err)
	}
	strs := func(key string) ([]string, error) {
		v := filter.Get(key)
		if !v.Exists() {
			return nil, nil
		}
		if v.Kind() != strictjson.Array {
			return nil, fmt.Errorf("notifications.%s must be a list of strings", key)
		}
		out := make([]string, 0, len(v.Items()))
		for _, it := range v.Items() {
			str, ok := it.Str()
			if !ok {
				return nil, fmt.Errorf("notifications.%s must be a list of strings", key)
			}
			out = append(out, str)
		}
		return out, nil
	}
	uris, err := strs("resourceSubscriptions")
	if err != nil {
		return nil, refuse(fault.Invalid, "", "%v", err)
	}
	tasks, err := strs("taskIds")
	if err != nil {
		return nil, refuse(fault.Invalid, "", "%v", err)
	}
	var kept, refused []string
	keptURIs := []strictjson.Value{}
	for _, u := range uris {
		if d, _, err := g.decide(ctx, c, policy.ActionReadResource, policy.ToolServer(s.Name), object("uri", u)); err == nil && d.Allowed {
			keptURIs = append(keptURIs, strictjson.MakeString(u))
			kept = append(kept, u)
		} else {
			refused = append(refused, u)
		}
	}
	keptTasks := []strictjson.Value{}
	for _, id := range tasks {
		if g.mcp.ownsTask(s.Name, id, c.id.String(), sid) {
			keptTasks = append(keptTasks, strictjson.MakeString(id))
		} else {
			refused = append(refused, "task:"+id)
		}
	}
	if uris != nil {
		filter = filter.With("resourceSubscriptions", strictjson.MakeArray(keptURIs...))
	}
	if tasks != nil {
		filter = filter.With("taskIds", strictjson.MakeArray(keptTasks...))
	}
	decision := audit.Allow
	reasons := []string{fmt.Sprintf("%d subscription(s) kept", len(kept))}
	for _, u := range refused {
		reasons = append(reasons, "refused: "+truncate(u, 256))
	}
	ev := audit.Event{Actor: c.actor(), Action: "gateway.subscriptions_listen", Target: policy.ToolServer(s.Name).String(),
		Decision: decision, Reasons: reasons, Task: c.claims.Task, Detail: map[string]string{"gateway": g.cfg.Name, "server": s.Name}}
	if _, err := g.deps.Audit.Record(ctx, ev); err != nil {
		return nil, refuse(fault.Unavailable, "", "refused: the audit log is unavailable")
	}
	if filter.Exists() {
		return msg.WithParams(msg.Params.With("notifications", filter)), nil
	}
	return msg, nil
}

// toolParamHeaders checks a 2026-07-28 tools/call's Mcp-Param-* headers
// against its arguments (see paramHeaders) and returns those to forward.
// The tool's annotations come from the upstream's tools/list; if the
// gateway does not know the tool and has not asked lately, it asks the
// upstream (a call that omits a header its tool requires is refused here,
// not first discovered by the upstream).
func (g *Gateway) toolParamHeaders(ctx context.Context, c *caller, rt *runtime, rev revision, in http.Header, msg *rpcmsg.Message) (http.Header, error) {
	name, _ := msg.Params.Get("name").Str()
	args := msg.Params.Get("arguments")
	hs, known := g.mcp.toolHeaders(rt.cfg.Name, name)
	if !known {
		if age := g.mcp.schemaAge(rt.cfg.Name); age < 0 || age >= schemaRefreshWait {
			g.learnUpstreamTools(ctx, rt, rev)
			hs, _ = g.mcp.toolHeaders(rt.cfg.Name, name)
		}
	}
	return paramHeaders(in, hs, args)
}

// maxToolPages bounds the pages of tools/list the gateway reads itself.
const maxToolPages = 16

// learnUpstreamTools asks the upstream for its tools (2026-07-28 is
// stateless, so the gateway can), to learn their mirrored arguments.
func (g *Gateway) learnUpstreamTools(ctx context.Context, rt *runtime, rev revision) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Limits.UpstreamTimeout)
	defer cancel()
	cursor := ""
	for page := 0; page < maxToolPages; page++ {
		meta := strictjson.MakeObject().With(metaProtocolVersion, strictjson.MakeString(rev.version)).
			With("io.modelcontextprotocol/clientCapabilities", strictjson.MakeObject()).
			With("io.modelcontextprotocol/clientInfo", strictjson.MakeObject().With("name", strictjson.MakeString("bulkhead-gateway")).With("version", strictjson.MakeString("1")))
		params := strictjson.MakeObject().With("_meta", meta)
		if cursor != "" {
			params = params.With("cursor", strictjson.MakeString(cursor))
		}
		body := strictjson.MakeObject().With("jsonrpc", strictjson.MakeString("2.0")).With("id", strictjson.MakeString("bulkhead-tools")).
			With("method", strictjson.MakeString("tools/list")).With("params", params).Encode()
		req, err := g.outbound(ctx, rt.cfg, outbound{method: http.MethodPost, target: rt.target, body: body, contentType: "application/json",
			header: http.Header{"Mcp-Method": {"tools/list"}, "Mcp-Protocol-Version": {rev.version}, "Accept": {"application/json, text/event-stream"}}, modern: true}, nil)
		if err != nil {
			return
		}
		resp, err := rt.up.RoundTrip(req)
		if err != nil {
			return
		}
		result, ok := readResult(resp, g.cfg.Limits.MaxResponse)
		if !ok {
			return
		}
		g.mcp.learnTools(rt.cfg.Name, result.Get("tools").Items(), page > 0)
		if cursor, _ = result.Get("nextCursor").Str(); cursor == "" {
			return
		}
	}
}

// readResult reads the result of a response the gateway asked for itself,
// as JSON or as the last message of an event stream.
func readResult(resp *http.Response, limit int64) (strictjson.Value, bool) {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil || int64(len(b)) > limit || resp.StatusCode != http.StatusOK {
		return strictjson.Value{}, false
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "text/event-stream" {
		var last []byte
		_ = sse.Transform(io.Discard, bytes.NewReader(b), maxEvent, func(ev sse.Event) (sse.Event, bool, error) {
			if ev.IsMessage() {
				last = []byte(ev.Data)
			}
			return ev, false, nil
		})
		b = last
	}
	m, rerr := rpcmsg.Parse(b, maxDepth)
	if rerr != nil || !m.Result.Exists() {
		return strictjson.Value{}, false
	}
	return m.Result, true
}
