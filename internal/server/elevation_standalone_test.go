package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/oauth2"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/server"
)

// A standalone gateway reads task state, reports taint and spends grants
// over the control plane's API, and decides with the task's context over
// AuthZEN: the same story as in process.
func TestStandaloneGatewayEnforcesGrants(t *testing.T) {
	e := startElevation(t)
	ctx := context.Background()
	url, stop := standalone(t, e.Env, func(sa *server.StandaloneGateway) { sa.Operator = e.Operator })
	_, alpha := e.Agent(t, "alpha", "reader")
	task := e.start(alpha)
	base := client.NewHTTPClient(alpha.Source(), client.AuthorizeGateways(spiffeid.RequireTrustDomainFromString("bulkhead.local"), ""))
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &oauth2.Transport{Source: alpha.TaskTokenSource("https://edge.bulkhead.test", task.ID), Base: base.Transport}}
	cs := connectRetrying(t, url+"/mcp/files", hc)

	_, err := write(cs, "/reports/w.md")
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
	stop()
}
