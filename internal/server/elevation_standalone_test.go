package server_test

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/oauth2"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// A standalone gateway reads task state, reports taint and spends grants
// over the control plane's API, and decides with the task's context over
// AuthZEN: the same story as in process.
func TestStandaloneGatewayEnforcesGrants(t *testing.T) {
	e := startElevation(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg, err := gateway.ParseConfig([]byte(`listen: 127.0.0.1:0
name: edge
resource: https://edge.bulkhead.test
servers:
  - name: files
    mcp: { url: `+e.Files.URL+` }
    callers: ["spiffe://bulkhead.local/agent/*"]
    credentials: { header: Authorization, secret: files-token }
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	sa := &gateway.Standalone{Config: cfg, ServerURL: e.URL, Dir: filepath.Join(t.TempDir(), "edge"), Operator: e.Operator,
		Clock: clock.Real{}, Logger: storetest.Logger(t), Ready: func(a string) { addr <- a }}
	done := make(chan error, 1)
	go func() { done <- sa.Run(ctx) }()
	var url string
	select {
	case a := <-addr:
		url = "https://" + a
	case err := <-done:
		t.Fatalf("standalone gateway: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("standalone gateway not ready")
	}
	_, alpha := e.Agent(t, "alpha", "reader")
	task := e.start(alpha)
	base := client.NewHTTPClient(alpha.Source(), client.AuthorizeGateways(spiffeid.RequireTrustDomainFromString("bulkhead.local"), ""))
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &oauth2.Transport{Source: alpha.TaskTokenSource("https://edge.bulkhead.test", task.ID), Base: base.Transport}}
	var cs *mcp.ClientSession
	for deadline := time.Now().Add(10 * time.Second); ; {
		cl := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "test"}, nil)
		cs, err = cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url + "/mcp/files", HTTPClient: hc, MaxRetries: -1}, nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect through the standalone gateway: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer cs.Close()

	_, err = write(cs, "/reports/w.md")
	wantDenied(t, err)
	el := e.request(alpha, task.ID, "write-report")
	if _, err := e.Operator.ApproveElevation(ctx, el.ID, task.ID, "ok"); err != nil {
		t.Fatal(err)
	}
	if _, err := write(cs, "/reports/w.md"); err != nil {
		t.Fatalf("elevated call through the standalone gateway: %v", err)
	}
	use := e.lastRecord(elevation.ActionUse, task.ID)
	if use.Decision != audit.Allow || use.Actor.ID != "spiffe://bulkhead.local/bulkhead/gateway/edge" {
		t.Fatalf("use record = %+v", use)
	}
	if ev := e.lastRecord(elevation.ActionTaskTaint, task.ID); ev.Actor.ID != "spiffe://bulkhead.local/bulkhead/gateway/edge" {
		t.Fatalf("taint record = %+v", ev)
	}
	if _, err := alpha.CompleteTask(ctx, task.ID, "done"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = write(cs, "/reports/w.md")
	wantDenied(t, err)
	if time.Since(start) > time.Second {
		t.Fatalf("the denial took %s", time.Since(start))
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("standalone gateway did not stop")
	}
}
