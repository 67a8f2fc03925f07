package gatewaytest

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// fullScript runs every step client.mjs knows; stepIndex names them.
const fullScript = `discover; list-tools; call echo {"text":"hi"}; call add {"a":2,"b":3}; call secret_tool;
	list-prompts; get-prompt greet {"name":"Ann"}; list-resources; read-resource docs://readme;
	confirm deploy; progress 3; task j1; listen 2; fallback`

var stepIndex = map[string]int{
	"discover": 0, "list-tools": 1, "echo": 2, "add": 3, "secret_tool": 4,
	"list-prompts": 5, "get-prompt": 6, "list-resources": 7, "read-resource": 8,
	"confirm": 9, "progress": 10, "task": 11, "listen": 12, "fallback": 13,
}

// TestNodeHarnessDirect proves the Node harness without a gateway: each
// official SDK client against each server, every step, and what reached the
// server on the wire.
func TestNodeHarnessDirect(t *testing.T) {
	NodeHarness(t)
	tests := []struct {
		name, client, server string
		era, version         string
		// failing lists the steps expected to fail; all others must succeed.
		failing []string
		wire    func(t *testing.T, reqs []ServerRecord)
	}{
		{
			name: "v2 client, v2 server", client: "v2", server: "v2",
			era: "modern", version: "2026-07-28",
			wire: func(t *testing.T, reqs []ServerRecord) {
				for _, r := range reqs {
					method, id := r.RPC()
					if r.Method != "POST" || method == "initialize" || r.Header("mcp-session-id") != "" {
						t.Errorf("2026-07-28 traffic has %s %s (rpc %q, session %q)", r.Method, r.Path, method, r.Header("mcp-session-id"))
					}
					if id == nil {
						// Closing a listen subscription also POSTs
						// notifications/cancelled: MCP-Protocol-Version but no
						// Mcp-Method (the revision defines no notification headers).
						if method != "notifications/cancelled" || r.Header("mcp-method") != "" {
							t.Errorf("unexpected notification POST %s", r.Line)
						}
						continue
					}
					if r.Header("mcp-protocol-version") != "2026-07-28" || r.Header("mcp-method") != method {
						t.Errorf("%s: MCP-Protocol-Version %q, Mcp-Method %q", method, r.Header("mcp-protocol-version"), r.Header("mcp-method"))
					}
					var p struct {
						Params struct {
							Name, URI, TaskID string
						}
					}
					_ = json.Unmarshal(r.Body, &p)
					want := map[string]string{"tools/call": p.Params.Name, "prompts/get": p.Params.Name,
						"resources/read": p.Params.URI, "tasks/get": p.Params.TaskID, "tasks/update": p.Params.TaskID,
						"tasks/cancel": p.Params.TaskID}[method]
					if got := r.Header("mcp-name"); got != want {
						t.Errorf("%s: Mcp-Name %q, want %q", method, got, want)
					}
				}
				if m, _ := reqs[0].RPC(); m != "server/discover" {
					t.Errorf("first request %q, want server/discover", m)
				}
			},
		},
		{
			name: "v1 client, v1 server", client: "v1", server: "v1",
			era: "legacy", version: "2025-11-25",
			wire: func(t *testing.T, reqs []ServerRecord) {
				if m, _ := reqs[0].RPC(); m != "initialize" {
					t.Errorf("first request %q, want initialize", m)
				}
				get := slices.IndexFunc(reqs, func(r ServerRecord) bool { return r.Method == "GET" })
				if get < 0 || reqs[get].Header("mcp-session-id") == "" {
					t.Errorf("no GET stream with a session id reached the server")
				}
				for _, r := range reqs[1:] {
					if r.Header("mcp-session-id") == "" || r.Header("mcp-method") != "" {
						t.Errorf("%s %s: Mcp-Session-Id %q, Mcp-Method %q", r.Method, r.Path, r.Header("mcp-session-id"), r.Header("mcp-method"))
					}
				}
			},
		},
		{
			name: "v2 client falls back to v1 server", client: "v2", server: "v1",
			era: "legacy", version: "2025-11-25",
			wire: func(t *testing.T, reqs []ServerRecord) {
				if m, _ := reqs[0].RPC(); m != "server/discover" || reqs[0].Header("mcp-method") != "server/discover" {
					t.Errorf("first request %q (Mcp-Method %q), want the server/discover probe", m, reqs[0].Header("mcp-method"))
				}
				if m, _ := reqs[1].RPC(); m != "initialize" || reqs[1].Header("mcp-method") != "" {
					t.Errorf("second request %q (Mcp-Method %q), want a plain initialize", m, reqs[1].Header("mcp-method"))
				}
			},
		},
		{
			// SDK v2 serves 2025-era clients statelessly: no session, no
			// GET stream, no server-to-client requests, no SEP-1686 tasks.
			name: "v1 client, v2 server (stateless legacy)", client: "v1", server: "v2",
			era: "legacy", version: "2025-11-25",
			failing: []string{"task", "listen"},
			wire: func(t *testing.T, reqs []ServerRecord) {
				for _, r := range reqs {
					if r.Header("mcp-session-id") != "" {
						t.Errorf("a session id reached the stateless server: %s", r.Line)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := StartNodeServer(t, tt.server)
			run := NodeClient{SDK: tt.client, URL: srv.URL, Script: fullScript}.Run(t)
			if c := run.Connect; !c.Connected || c.Era != tt.era || c.ProtocolVersion != tt.version {
				t.Fatalf("connect = %+v, want era %s version %s; stderr:\n%s", c, tt.era, tt.version, run.Stderr)
			}
			if !run.Done || len(run.Steps) != len(stepIndex) {
				t.Fatalf("ran %d steps (done %v), want %d", len(run.Steps), run.Done, len(stepIndex))
			}
			for name, i := range stepIndex {
				s := run.Step(t, i)
				if want := !slices.Contains(tt.failing, name); s.OK != want {
					t.Errorf("step %s: ok %v, want %v: %s %+v", name, s.OK, want, s.Result, s.Error)
				}
			}
			step := func(name string) ClientStep { return run.Step(t, stepIndex[name]) }
			checkResults(t, tt.client, tt.server, step)
			tt.wire(t, srv.Requests())
		})
	}
}

// checkResults asserts the results every combination shares, and the
// era-specific ones.
func checkResults(t *testing.T, client, server string, step func(string) ClientStep) {
	t.Helper()
	var tools struct{ Names []string }
	decode(t, step("list-tools").Result, &tools)
	for _, want := range []string{"echo", "add", "secret_tool", "progress", "confirm", "long_job", "add_tool"} {
		if !slices.Contains(tools.Names, want) {
			t.Errorf("tools/list = %v, missing %s", tools.Names, want)
		}
	}
	if got := text(t, step("echo").Result); got != "hi" {
		t.Errorf("echo = %q", got)
	}
	var add struct{ StructuredContent struct{ Sum int } }
	decode(t, step("add").Result, &add)
	if add.StructuredContent.Sum != 5 {
		t.Errorf("add = %s", step("add").Result)
	}
	if got := text(t, step("secret_tool").Result); got != "secret tool ran" {
		t.Errorf("secret_tool = %q", got)
	}
	var prompt struct {
		Messages []struct{ Content struct{ Text string } }
	}
	decode(t, step("get-prompt").Result, &prompt)
	if len(prompt.Messages) != 1 || prompt.Messages[0].Content.Text != "Hello, Ann!" {
		t.Errorf("prompts/get = %s", step("get-prompt").Result)
	}
	var res struct{ URIs []string }
	decode(t, step("list-resources").Result, &res)
	if !slices.Equal(res.URIs, []string{"docs://readme", "docs://secret"}) {
		t.Errorf("resources/list = %v", res.URIs)
	}
	var read struct{ Contents []struct{ Text string } }
	decode(t, step("read-resource").Result, &read)
	if len(read.Contents) != 1 || !strings.Contains(read.Contents[0].Text, "docs://readme is public") {
		t.Errorf("resources/read = %s", step("read-resource").Result)
	}
	var progress struct {
		Progress []struct{ Progress, Total int }
		Result   json.RawMessage
	}
	decode(t, step("progress").Result, &progress)
	if len(progress.Progress) != 3 || progress.Progress[2].Progress != 3 || text(t, progress.Result) != "done 3 steps" {
		t.Errorf("progress = %s", step("progress").Result)
	}

	var confirm struct {
		Elicitations []json.RawMessage
		Result       json.RawMessage
	}
	decode(t, step("confirm").Result, &confirm)
	var fb struct{ Era string }
	decode(t, step("fallback").Result, &fb)
	if client == "v1" && server == "v2" {
		// The stateless legacy path cannot send elicitation/create.
		if len(confirm.Elicitations) != 0 || !strings.Contains(text(t, confirm.Result), "Cannot request input") {
			t.Errorf("confirm over stateless legacy = %s", step("confirm").Result)
		}
		if e := step("listen").Error; e == nil || !strings.Contains(e.Message, "405") {
			t.Errorf("listen over stateless legacy: %+v, want the GET refused with 405", e)
		}
		if e := step("task").Error; e.RPCCode() != -32601 {
			t.Errorf("task over stateless legacy: %+v, want -32601", e)
		}
		return
	}
	if len(confirm.Elicitations) != 1 || text(t, confirm.Result) != "confirmed deploy" {
		t.Errorf("confirm = %s", step("confirm").Result)
	}

	var listen struct {
		Via           string
		Notifications []struct{ Method string }
	}
	decode(t, step("listen").Result, &listen)
	wantVia := map[string]string{"modern": "subscriptions/listen", "legacy": "GET stream"}[fb.Era]
	if listen.Via != wantVia || len(listen.Notifications) != 2 || listen.Notifications[0].Method != "notifications/tools/list_changed" {
		t.Errorf("listen = %s", step("listen").Result)
	}

	var task struct {
		Flavor      string
		Polls       []struct{ Status string }
		Get         struct{ Status string }
		Result      json.RawMessage
		AfterCancel struct {
			Status string
		}
	}
	decode(t, step("task").Result, &task)
	if task.AfterCancel.Status != "cancelled" {
		t.Errorf("task: held job after tasks/cancel is %q", task.AfterCancel.Status)
	}
	switch fb.Era {
	case "modern": // the io.modelcontextprotocol/tasks extension
		if task.Flavor != "tasks-extension-raw" || len(task.Polls) != 2 ||
			task.Polls[0].Status != "input_required" || task.Polls[1].Status != "completed" {
			t.Errorf("task = %s", step("task").Result)
		}
	default: // SEP-1686
		if !strings.HasPrefix(task.Flavor, "sep-1686") || task.Get.Status != "completed" || text(t, task.Result) != "job j1 done" {
			t.Errorf("task = %s", step("task").Result)
		}
	}
}

func decode(t *testing.T, raw json.RawMessage, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
}

// text returns the first text content of a tool result.
func text(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var r struct {
		Content []struct{ Text string }
	}
	decode(t, raw, &r)
	if len(r.Content) == 0 {
		return ""
	}
	return r.Content[0].Text
}

// TestNodeServerRecordsExchanges shows a test can wait for and read what the
// upstream received and answered.
func TestNodeServerRecordsExchanges(t *testing.T) {
	srv := StartNodeServer(t, "v2")
	run := NodeClient{SDK: "v2", URL: srv.URL, Script: `call echo {"text":"wire"}`, Timeout: 30 * time.Second}.Run(t)
	if !run.Connect.Connected || !run.Step(t, 0).OK {
		t.Fatalf("run = %+v", run)
	}
	req := srv.WaitFor(t, 10*time.Second, func(r ServerRecord) bool {
		m, _ := r.RPC()
		return r.Kind == "request" && m == "tools/call"
	})
	if req.Header("Mcp-Name") != "echo" || req.Header("Accept") != "application/json, text/event-stream" {
		t.Errorf("tools/call headers = %v", req.Headers)
	}
	srv.WaitFor(t, 10*time.Second, func(r ServerRecord) bool { return r.Kind == "end" && r.Seq == req.Seq })
	ex := srv.Exchange(req.Seq)
	if len(ex) < 3 || ex[1].Kind != "response" || ex[1].Status != 200 {
		t.Fatalf("exchange = %+v", ex)
	}
	if !strings.Contains(string(ex[2].Body), `"resultType":"complete"`) {
		t.Errorf("tools/call answer = %s", ex[2].Line)
	}
}
