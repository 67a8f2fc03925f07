package server_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
	"github.com/bulkhead-dev/bulkhead/internal/reach"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// A standalone gateway (`bulkhead gateway`) bootstraps its own SVID with the
// operator credential and then reaches the control plane only as itself:
// AuthZEN for decisions, the event stream for revocations, the secrets API
// for credentials, and the ingest API for its records.
func TestStandaloneGateway(t *testing.T) {
	e := gatewaytest.Start(t, "") // reuses the control plane, policies and upstream
	ctx := context.Background()
	url, stop := standalone(t, e, func(sa *server.StandaloneGateway) { sa.Operator = e.Operator })
	_, c := e.Agent(t, "alpha", "reader")
	cs := connectRetrying(t, url+"/mcp/files", gatewaytest.AgentHTTPFor(c, "https://edge.bulkhead.test"))
	list, err := cs.ListTools(ctx, nil)
	if err != nil || len(list.Tools) != 1 || list.Tools[0].Name != "read_file" {
		t.Fatalf("tools/list: %v %+v", err, list)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/x"}})
	if err != nil || gatewaytest.Text(res) != "contents of /srv/x" {
		t.Fatalf("allowed call: %v", err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/etc/passwd"}}); err == nil || !strings.Contains(err.Error(), "denied by policy") {
		t.Fatalf("/etc call: %v", err)
	}
	// Its records reached the control plane's log, stamped with the
	// gateway's identity.
	var recorded int
	for _, ev := range events(t, e.Env, "gateway.call_tool") {
		if ev.Detail["gateway"] == "edge" {
			recorded++
			if ev.Detail["recorded_by"] != "spiffe://bulkhead.local/bulkhead/gateway/edge" || ev.Actor.ID != "spiffe://bulkhead.local/agent/alpha" {
				t.Fatalf("ingested record = %+v", ev)
			}
		}
	}
	if recorded != 2 {
		t.Fatalf("%d records from the standalone gateway, want 2", recorded)
	}
	// Each call was scored against the baseline it read from the control
	// plane as itself (a new agent: learning, and no failed read).
	for _, ev := range events(t, e.Env, "gateway.call_tool") {
		if ev.Detail["gateway"] == "edge" && ev.Detail["risk_reasons"] != "learning" && ev.Detail["risk_reasons"] != "learning denials" {
			t.Fatalf("a call scored without its baseline: %v", ev.Detail)
		}
	}
	// What it serves reached the control plane as its own start record.
	reports, err := reach.GatewayReports(ctx, e.Server.Store())
	if err != nil || len(reports["edge"].Servers) != 1 || reports["edge"].Servers[0].Credentials[0] != "files-token" {
		t.Fatalf("the standalone gateway's report: %v %+v", err, reports)
	}
	// Revocation reaches it through the event stream.
	start := time.Now()
	if _, err := e.Operator.RevokeAgent(ctx, "alpha", "test"); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/x"}}); err != nil {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatal("standalone gateway still serves a revoked agent after 1s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("standalone gateway refused the revoked agent after %s", time.Since(start))
	stop()
}

// standalone runs a standalone gateway "edge" in front of e's files server
// until the test ends, bootstrapped as boot sets it up; stop stops it and
// fails the test if it does not stop cleanly.
func standalone(t *testing.T, e *gatewaytest.Env, boot func(*server.StandaloneGateway)) (url string, stop func()) {
	t.Helper()
	return startStandalone(t, "edge", e.URL, `
servers:
  - name: files
    mcp: { url: `+e.Files.URL+` }
    callers: ["spiffe://bulkhead.local/agent/*"]
    credentials: { header: Authorization, secret: files-token }
`, boot)
}

// startStandalone runs standalone gateway name, for the resource
// https://edge.bulkhead.test, with the servers of yaml, fed by the control
// plane replicas serverURL lists.
func startStandalone(t *testing.T, name, serverURL, yaml string, boot func(*server.StandaloneGateway)) (url string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg, err := gateway.ParseConfig([]byte("listen: 127.0.0.1:0\nname: "+name+"\nresource: https://edge.bulkhead.test\n"+yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	sa := &server.StandaloneGateway{Config: cfg, ServerURL: serverURL, Dir: filepath.Join(t.TempDir(), name),
		Clock: clock.Real{}, Logger: storetest.Logger(t), Ready: func(a string) { addr <- a }}
	boot(sa)
	done := make(chan error, 1)
	go func() { done <- sa.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("standalone gateway exited: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("standalone gateway did not stop")
		}
	}
	t.Cleanup(stop)
	select {
	case a := <-addr:
		return "https://" + a, stop
	case err := <-done:
		stopped = true
		t.Fatalf("standalone gateway: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("standalone gateway not ready")
	}
	return "", stop
}

// connectRetrying opens an MCP session, retrying while the gateway loads
// its revocation backlog (it answers 503 until then).
func connectRetrying(t *testing.T, endpoint string, hc *http.Client) *mcp.ClientSession {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		cl := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "test"}, nil)
		cs, err := cl.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: hc, MaxRetries: -1}, nil)
		if err == nil {
			t.Cleanup(func() { cs.Close() })
			return cs
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect through the standalone gateway: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
