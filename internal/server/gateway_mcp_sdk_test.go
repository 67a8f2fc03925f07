package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// jsEnv is a gateway in front of the official TypeScript SDKs' servers: v2
// (MCP 2026-07-28, stateless) as "mcp26" and v1 (2025-11-25, sessions) as
// "mcp25", with policies that let readers use everything but secret_tool
// (high sensitivity) and docs://secret.
type jsEnv struct {
	*gatewayEnv
	v2, v1 *gatewaytest.NodeServer
}

func startJS(t *testing.T) *jsEnv {
	t.Helper()
	gatewaytest.NodeHarness(t)
	v2 := gatewaytest.StartNodeServer(t, "v2")
	v1 := gatewaytest.StartNodeServer(t, "v1")
	e := startGateway(t, fmt.Sprintf(`  - name: mcp26
    mcp: { url: %s }
    callers: ["spiffe://bulkhead.local/agent/*"]
  - name: mcp25
    mcp: { url: %s }
    callers: ["spiffe://bulkhead.local/agent/*"]
`, v2.URL, v1.URL))
	ctx := context.Background()
	catalogJS(t, e.Env.Env, "mcp26", "mcp25")
	live, err := e.Operator.PolicyVersion(ctx, "1")
	if err != nil {
		t.Fatal(err)
	}
	files := append(live.Files, api.PolicyFile{Name: "js.cedar", Content: `@id("js-tools")
permit (principal in Role::"reader", action == Action::"call_tool", resource in ToolGroup::"js");
@id("js-prompts")
permit (principal in Role::"reader", action == Action::"get_prompt", resource in ToolGroup::"js");
@id("js-readme")
permit (principal in Role::"reader", action == Action::"read_resource", resource in ToolGroup::"js")
when { context.input has uri && context.input.uri == "docs://readme" };`})
	if _, err := e.Operator.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: files}); err != nil {
		t.Fatal(err)
	}
	return &jsEnv{gatewayEnv: e, v2: v2, v1: v1}
}

// script runs every feature once; steps names them by index.
const sdkScript = `discover; list-tools; call echo {"text":"hi"}; call secret_tool; list-prompts; get-prompt greet {"name":"Ann"};
	list-resources; read-resource docs://readme; read-resource docs://secret; confirm deploy; progress 2;
	call region_echo {"region":"Zürich","text":"t"}; task j1; listen 1 add_tool`

var sdkStep = map[string]int{"discover": 0, "list-tools": 1, "echo": 2, "secret_tool": 3, "list-prompts": 4, "get-prompt": 5,
	"list-resources": 6, "readme": 7, "secret": 8, "confirm": 9, "progress": 10, "region": 11, "task": 12, "listen": 13}

// Every official TypeScript SDK client works through the gateway, in both
// revisions, with policy applied: lists filtered, a forbidden tool and
// resource denied, MRTR and elicitation, progress, mirrored headers,
// tasks, list-changed notifications — and a 2026 client falls back to a
// 2025 server.
func TestOfficialSDKsThroughTheGateway(t *testing.T) {
	e := startJS(t)
	dir, _ := e.Agent(t, "alpha", "reader")
	side := e.Sidecar(t, dir)
	for _, tt := range []struct {
		name, sdk, server, era string
		args                   []string
	}{
		{"v2 client, 2026-07-28 server", "v2", "mcp26", "modern", []string{"--negotiation", "auto"}},
		{"v2 client falls back to a 2025-11-25 server", "v2", "mcp25", "legacy", []string{"--negotiation", "auto"}},
		{"v1 client, 2025-11-25 server", "v1", "mcp25", "legacy", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			run := gatewaytest.NodeClient{SDK: tt.sdk, URL: side + "/mcp/" + tt.server, Script: sdkScript, Args: tt.args}.Run(t)
			if !run.Connect.Connected || run.Connect.Era != tt.era {
				t.Fatalf("connect: %+v; stderr:\n%s", run.Connect, run.Stderr)
			}
			step := func(name string) gatewaytest.ClientStep { return run.Step(t, sdkStep[name]) }
			for _, name := range []string{"list-tools", "echo", "list-prompts", "get-prompt", "list-resources", "readme", "confirm", "progress", "region", "task", "listen"} {
				if s := step(name); !s.OK {
					t.Errorf("%s failed: %+v", name, s.Error)
				}
			}
			if s := step("list-tools"); strings.Contains(string(s.Result), "secret_tool") || !strings.Contains(string(s.Result), "region_echo") {
				t.Errorf("tools/list not filtered: %s", s.Result)
			}
			if s := step("secret_tool"); s.OK || s.Error.RPCCode() != -32001 {
				t.Errorf("secret_tool: %+v", s)
			}
			if s := step("secret"); s.OK || s.Error.RPCCode() != -32001 {
				t.Errorf("docs://secret: %+v", s)
			}
			if s := step("list-resources"); strings.Contains(string(s.Result), "docs://secret") {
				t.Errorf("resources/list not filtered: %s", s.Result)
			}
			if s := step("listen"); !strings.Contains(string(s.Result), `"notifications":[`) {
				t.Errorf("listen: %s", s.Result)
			}
		})
	}
	// The 2026 upstream saw only requests whose mirrored headers agree
	// with their bodies (it refuses others), never a session.
	for _, r := range e.v2.Requests() {
		method, id := r.RPC()
		if id != nil && (r.Header("mcp-method") != method || r.Header("mcp-session-id") != "") {
			t.Errorf("2026 upstream got %s with Mcp-Method %q session %q", method, r.Header("mcp-method"), r.Header("mcp-session-id"))
		}
		if method == "tools/call" && strings.Contains(string(r.Body), `"region_echo"`) && r.Header("mcp-param-region") != "=?base64?WsO8cmljaA==?=" {
			t.Errorf("region_echo reached the upstream with Mcp-Param-Region %q", r.Header("mcp-param-region"))
		}
	}
	// MRTR: the confirm call's two rounds are one logical call: the
	// second round is decided again and recorded with the first's id.
	var rounds []audit.Event
	for _, ev := range events(t, e.Env.Env, "gateway.call_tool") {
		if ev.Target == `Tool::"mcp26/confirm"` {
			rounds = append(rounds, ev)
		}
	}
	if len(rounds) != 2 || rounds[1].Detail["round"] != "2" || rounds[1].Detail["call"] != rounds[0].Detail["decision_id"] {
		t.Fatalf("confirm's rounds were recorded as %+v", rounds)
	}
}

// listenAck opens a subscriptions/listen stream through the gateway and
// returns its first event (the acknowledgement), then closes it.
func listenAck(t *testing.T, hc *http.Client, url, params string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	body := `{"jsonrpc":"2.0","id":"listen-1","method":"subscriptions/listen","params":` + params + `}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "subscriptions/listen")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			return data
		}
	}
	t.Fatalf("listen: %d, no event (%v)", resp.StatusCode, sc.Err())
	return ""
}

// modernPost sends one 2026-07-28 request through the gateway with hc.
func modernPost(t *testing.T, hc *http.Client, url, method, name, params string) (int, string) {
	t.Helper()
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":%q,"params":%s}`, method, params)
	hdr := map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": method}
	if name != "" {
		hdr["Mcp-Name"] = name
	}
	status, resp, _ := rawMCP(t, hc, url, "", body, hdr)
	return status, resp
}

const modernMeta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}}}`

// A compromised agent tries to read, update and cancel another agent's
// task, to steer a tool call with headers that disagree with the body, to
// subscribe to resources it may not read, and to charge an MRTR retry's
// cost to nobody by replaying a request state it made up.
func TestModernProtocolAttacks(t *testing.T) {
	e := startJS(t)
	alice, _ := e.agentHTTP(t, "alice", "reader")
	mallory, _ := e.agentHTTP(t, "mallory", "reader")
	url := e.GatewayURL + "/mcp/mcp26"

	// Alice starts a task.
	status, body := modernPost(t, alice, url, "tools/call", "long_job", `{"name":"long_job","arguments":{"text":"j","mode":"hold"},`+modernMeta+`}`)
	var created struct {
		Result struct {
			ResultType, TaskID string
		}
	}
	if err := json.Unmarshal([]byte(body), &created); err != nil || status != 200 || created.Result.ResultType != "task" {
		t.Fatalf("task not created: %d %s", status, body)
	}
	id := created.Result.TaskID
	before := len(e.v2.Requests())
	for _, m := range []string{"tasks/get", "tasks/update", "tasks/cancel"} {
		params := fmt.Sprintf(`{"taskId":%q,%s}`, id, modernMeta)
		if m == "tasks/update" {
			params = fmt.Sprintf(`{"taskId":%q,"inputResponses":{},%s}`, id, modernMeta)
		}
		_, body := modernPost(t, mallory, url, m, id, params)
		if code, msg := rpcErr(body); code != -32602 || msg != "no such task" {
			t.Errorf("mallory's %s: %s", m, body)
		}
	}
	if len(e.v2.Requests()) != before {
		t.Fatal("another agent's task request reached the upstream")
	}
	if n := denials(t, e.gatewayEnv, "gateway.task_access", id); n != 3 {
		t.Fatalf("%d task-access refusals recorded, want 3", n)
	}
	if _, body := modernPost(t, alice, url, "tasks/get", id, fmt.Sprintf(`{"taskId":%q,%s}`, id, modernMeta)); !strings.Contains(body, `"status":"working"`) {
		t.Fatalf("alice's own tasks/get: %s", body)
	}

	// Headers that disagree with the body are refused before any decision.
	for _, c := range []struct{ method, name, params string }{
		{"tools/call", "echo", `{"name":"secret_tool","arguments":{},` + modernMeta + `}`},
		{"tools/list", "", `{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25","io.modelcontextprotocol/clientCapabilities":{}}}`},
		{"resources/read", "docs://readme", `{"uri":"docs://secret",` + modernMeta + `}`},
		{"tools/call", "region_echo", `{"name":"region_echo","arguments":{"region":"eu","text":"t"},` + modernMeta + `}`},
	} {
		before := len(e.v2.Requests())
		status, body := modernPost(t, mallory, url, c.method, c.name, c.params)
		if code, _ := rpcErr(body); status != 400 || code != -32020 {
			t.Errorf("%s %s: %d %s, want 400 -32020", c.method, c.name, status, body)
		}
		if len(e.v2.Requests()) != before {
			t.Errorf("%s %s reached the upstream", c.method, c.name)
		}
	}
	// A body that says 2026-07-28 under no revision header would be read
	// as modern by the upstream and checked as legacy by the gateway.
	if status, body, _ := rawMCP(t, mallory, url, "", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"secret_tool",`+modernMeta+`}}`,
		map[string]string{"Mcp-Protocol-Version": ""}); status != 400 || !strings.Contains(body, `"code":-32020`) {
		t.Errorf("a modern body without the header: %d %s", status, body)
	}
	// An unknown revision, and a method the revision removed.
	if status, body, _ := rawMCP(t, mallory, url, "", `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}`,
		map[string]string{"Mcp-Protocol-Version": "2099-01-01"}); status != 400 || !strings.Contains(body, `"code":-32022`) || !strings.Contains(body, `"supported":["2026-07-28"`) {
		t.Errorf("unknown revision: %d %s", status, body)
	}
	if status, body := modernPost(t, mallory, url, "ping", "", `{`+modernMeta+`}`); status != 404 || !strings.Contains(body, `"code":-32601`) {
		t.Errorf("ping in 2026-07-28: %d %s", status, body)
	}

	// Subscriptions: only resources mallory may read reach the upstream.
	ack := listenAck(t, mallory, url, `{"notifications":{"toolsListChanged":true,"resourceSubscriptions":["docs://readme","docs://secret"],"taskIds":[`+fmt.Sprintf("%q", id)+`]},`+modernMeta+`}`)
	if strings.Contains(ack, "docs://secret") || strings.Contains(ack, id) {
		t.Fatalf("the acknowledgement grants more than the agent may see: %s", ack)
	}
	last := e.v2.Requests()
	for i := len(last) - 1; i >= 0; i-- {
		if m, _ := last[i].RPC(); m == "subscriptions/listen" {
			if b := string(last[i].Body); strings.Contains(b, "docs://secret") || strings.Contains(b, id) || !strings.Contains(b, "docs://readme") {
				t.Fatalf("the upstream got the filter %s", b)
			}
			break
		}
	}

	// MRTR: a retry with a request state the upstream never gave out is a
	// new call, charged as one (not free as a continuation).
	calls := len(events(t, e.Env.Env, "gateway.call_tool"))
	_, body = modernPost(t, mallory, url, "tools/call", "confirm", `{"name":"confirm","arguments":{"action":"x"},"requestState":"confirm:x","inputResponses":{"confirm":{"action":"accept","content":{"ok":true}}},`+modernMeta+`}`)
	evs := events(t, e.Env.Env, "gateway.call_tool")
	if len(evs) != calls+1 || evs[len(evs)-1].Detail["round"] != "" {
		t.Fatalf("a forged continuation was recorded as %+v (%s)", evs[len(evs)-1], body)
	}
}

// A subscriptions/listen stream is not one call's answer: the upstream
// timeout does not cut it, the token that opened it does.
func TestListenStreamLivesUntilItsToken(t *testing.T) {
	gatewaytest.NodeHarness(t)
	fake := clock.NewFake(time.Now())
	v2 := gatewaytest.StartNodeServer(t, "v2")
	e := startGateway(t, fmt.Sprintf(`  - name: mcp26
    mcp: { url: %s }
    callers: ["spiffe://bulkhead.local/agent/*"]
limits: { upstream_timeout: 200ms }
`, v2.URL), testenv.WithClock(fake))
	hc, _ := e.agentHTTP(t, "alpha", "reader")
	tok, err := hc.Transport.(*client.GatewayTransport).Token()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A listen stream is opened, and kept, under a decision to read the
	// server's lists: the server must be in the catalog.
	catalogJS(t, e.Env.Env, "mcp26")
	body := `{"jsonrpc":"2.0","id":"l1","method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true},` + modernMeta + `}}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.GatewayURL+"/mcp/mcp26", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "subscriptions/listen")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan string, 8)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				events <- data
			}
		}
	}()
	next := func(what string) string {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended before %s", what)
			}
			return ev
		case <-ctx.Done():
			t.Fatalf("no %s", what)
		}
		return ""
	}
	if ev := next("the acknowledgement"); !strings.Contains(ev, "subscriptions/acknowledged") {
		t.Fatalf("first event %s", ev)
	}
	// Well past the upstream timeout (real time: that timeout is a real
	// timer), a change upstream still reaches the agent.
	<-time.After(time.Second)
	add := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add_tool","arguments":{"name":"x"},` + modernMeta + `}}`
	areq, _ := http.NewRequestWithContext(ctx, http.MethodPost, v2.URL, strings.NewReader(add))
	for k, v := range map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
		"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "add_tool"} {
		areq.Header.Set(k, v)
	}
	aresp, err := http.DefaultClient.Do(areq)
	if err != nil {
		t.Fatal(err)
	}
	aresp.Body.Close()
	if ev := next("the list-changed notification"); !strings.Contains(ev, "notifications/tools/list_changed") {
		t.Fatalf("event %s", ev)
	}
	// The token's expiry ends it (on the gateway's clock, which real time
	// spent above did not move).
	fake.Advance(tok.Expiry.Sub(fake.Now()) + time.Second)
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		case <-ctx.Done():
			t.Fatal("the stream outlived its token")
		}
	}
}

// catalogJS adds the JS test servers' tools to the catalog, in group js.
func catalogJS(t *testing.T, e *testenv.Env, servers ...string) {
	t.Helper()
	ctx := context.Background()
	cat, err := e.Operator.Tools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var tools []api.ToolEntry
	for _, name := range []string{"echo", "region_echo", "add", "progress", "confirm", "long_job", "add_tool"} {
		tools = append(tools, api.ToolEntry{Name: name})
	}
	tools = append(tools, api.ToolEntry{Name: "secret_tool", Sensitivity: "high"})
	for _, name := range servers {
		cat.Servers = append(cat.Servers, api.ToolServer{Name: name, Sensitivity: "low", Groups: []string{"js"}, Tools: tools})
	}
	if _, err := e.Operator.ApplyTools(ctx, cat); err != nil {
		t.Fatal(err)
	}
}

// A stdio server behind the gateway is served in the legacy revision (a
// process per session): a 2026-07-28 client's probe gets a plain 400 and
// falls back, and works.
func TestModernClientFallsBackToAStdioServer(t *testing.T) {
	gatewaytest.NodeHarness(t)
	cmd, env := gatewaytest.StdioCommand()
	e := startGateway(t, fmt.Sprintf(`  - name: notes
    mcp: { command: [%q, %q], env: [%q, %q], sandbox: none }
    callers: ["spiffe://bulkhead.local/agent/*"]
`, cmd[0], cmd[1], env[0], env[1]))
	ctx := context.Background()
	cat, err := e.Operator.Tools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cat.Servers = append(cat.Servers, api.ToolServer{Name: "notes", Sensitivity: "low", Tools: []api.ToolEntry{{Name: "note"}, {Name: "whoami"}}})
	if _, err := e.Operator.ApplyTools(ctx, cat); err != nil {
		t.Fatal(err)
	}
	live, err := e.Operator.PolicyVersion(ctx, "1")
	if err != nil {
		t.Fatal(err)
	}
	files := append(live.Files, api.PolicyFile{Name: "notes.cedar", Content: `@id("reader-notes")
permit (principal in Role::"reader", action == Action::"call_tool", resource == Tool::"notes/note");`})
	if _, err := e.Operator.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: files}); err != nil {
		t.Fatal(err)
	}
	dir, _ := e.Agent(t, "alpha", "reader")
	run := gatewaytest.NodeClient{SDK: "v2", URL: e.Sidecar(t, dir) + "/mcp/notes", Script: `list-tools; call note {"query":"x"}; call whoami`,
		Args: []string{"--negotiation", "auto"}}.Run(t)
	if !run.Connect.Connected || run.Connect.Era != "legacy" {
		t.Fatalf("connect: %+v; stderr:\n%s", run.Connect, run.Stderr)
	}
	if s := run.Step(t, 0); !s.OK || strings.Contains(string(s.Result), "whoami") {
		t.Errorf("tools/list: %+v %s", s.Error, s.Result)
	}
	if s := run.Step(t, 1); !s.OK || !strings.Contains(string(s.Result), "noted: x") {
		t.Errorf("note: %+v %s", s.Error, s.Result)
	}
	if s := run.Step(t, 2); s.OK || s.Error.RPCCode() != -32001 {
		t.Errorf("whoami: %+v", s)
	}
}

// In 2025-11-25 a task is its creator's and its session's: neither another
// agent nor another session of the same agent may read or cancel it.
func TestLegacyTasksAreTheirCreators(t *testing.T) {
	e := startJS(t)
	alice, _ := e.agentHTTP(t, "alice", "reader")
	mallory, _ := e.agentHTTP(t, "mallory", "reader")
	url := e.GatewayURL + "/mcp/mcp25"
	sid := initMCP(t, alice, url)
	_, body, _ := rawMCP(t, alice, url, sid, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"long_job","arguments":{"text":"j","mode":"hold"},"task":{"ttl":60000}}}`, nil)
	_, after, ok := strings.Cut(body, `"taskId":"`)
	if !ok {
		t.Fatalf("no task created: %s", body)
	}
	id, _, _ := strings.Cut(after, `"`)
	get := func(hc *http.Client, sid string) string {
		_, body, _ := rawMCP(t, hc, url, sid, fmt.Sprintf(`{"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{"taskId":%q}}`, id), nil)
		return body
	}
	if body := get(alice, sid); !strings.Contains(body, `"status":"working"`) {
		t.Fatalf("alice's own tasks/get: %s", body)
	}
	for name, who := range map[string]struct {
		hc  *http.Client
		sid string
	}{"another agent": {mallory, initMCP(t, mallory, url)}, "another session of the same agent": {alice, initMCP(t, alice, url)}} {
		if code, msg := rpcErr(get(who.hc, who.sid)); code != -32602 || msg != "no such task" {
			t.Errorf("%s: tasks/get answered %d %q", name, code, msg)
		}
	}
	if n := denials(t, e.gatewayEnv, "gateway.task_access", id); n != 2 {
		t.Fatalf("%d task-access refusals recorded, want 2", n)
	}
}
