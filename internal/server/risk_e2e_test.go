package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/audit/ocsf"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/gateway"
	"github.com/bulkhead-dev/bulkhead/internal/server"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// seedHistory writes three days of an agent reading files, ten calls an
// hour around the clock, into the control plane's audit log: the
// baseline the gateway will learn.
func seedHistory(t *testing.T, e *gatewayEnv, agentID string) {
	t.Helper()
	l := audit.New(e.Server.Store(), clock.Real{}, storetest.Logger(t))
	now := time.Now()
	for at := now.Add(-72 * time.Hour); at.Before(now.Add(-time.Hour)); at = at.Add(6 * time.Minute) {
		ev := audit.Event{Time: at, Actor: audit.Actor{Kind: audit.ActorAgent, ID: agentID}, Action: "gateway.call_tool",
			Target: `Tool::"files/read_file"`, Decision: audit.Allow, Detail: map[string]string{"gateway": "default", "server": "files"}}
		if _, err := l.Record(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
}

// A trusted agent that has read files for three days is compromised: it
// probes /etc (denied by a guardrail), then writes with a tool it never
// used. The gateway scores the write against the baseline it learned from
// the audit log — a novel tool after three denials, risk 65 — and the
// shipped step-up guardrail refuses a risky write without a human's
// grant, although the agent's role allows writes. The refusal names the
// policy and the risk's reasons, the anomaly is recorded (an OCSF
// Detection Finding in exports), and the agent's usual reads still pass.
func TestCompromisedAgentsRiskyWriteNeedsAHuman(t *testing.T) {
	alerts := make(chan string, 16)
	siem := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		alerts <- string(b)
	}))
	defer siem.Close()
	e := startGateway(t, "", testenv.WithConfig(func(c *server.Config) { c.AlertWebhook = siem.URL }))
	ctx := context.Background()
	_, c := e.Agent(t, "ops1", "admin")
	id := "spiffe://bulkhead.local/agent/ops1"
	seedHistory(t, e, id)
	cs := e.MCP(t, e.AgentHTTP(c), "files")
	call := func(tool string, args map[string]any) (*mcp.CallToolResult, error) {
		return cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	}
	if res, err := call("read_file", map[string]any{"path": "/srv/a"}); err != nil || res.IsError {
		t.Fatalf("the usual read: %v %+v", err, res)
	}
	for range 3 {
		if _, err := call("read_file", map[string]any{"path": "/etc/shadow"}); err == nil {
			t.Fatal("a read of /etc was allowed")
		}
	}
	if _, err := call("write_file", map[string]any{"path": "/srv/out", "content": "exfil"}); err == nil {
		t.Fatal("a risky write without a grant was allowed")
	}
	if res, err := call("read_file", map[string]any{"path": "/srv/b"}); err != nil || res.IsError {
		t.Fatalf("the usual read after the refusal: %v %+v", err, res)
	}

	var write *audit.Event
	for _, ev := range events(t, e.Env.Env, "gateway.call_tool") {
		if ev.Target == `Tool::"files/write_file"` && ev.Actor.ID == id {
			write = &ev
		}
	}
	if write == nil || write.Decision != audit.Deny || !slices.Contains(write.Reasons, "step-up-risky-writes") ||
		write.Detail["risk"] != "65" || write.Detail["risk_reasons"] != "novel_tool denials" {
		t.Fatalf("the write's record: %+v", write)
	}
	anomalies := events(t, e.Env.Env, gateway.ActionAnomaly)
	if len(anomalies) != 1 || anomalies[0].Target != `Tool::"files/write_file"` || anomalies[0].Actor.ID != id ||
		!strings.Contains(strings.Join(anomalies[0].Reasons, "; "), "novel tool") {
		t.Fatalf("anomalies: %+v", anomalies)
	}

	// The alert webhook receives the anomaly alone, as an OCSF Detection
	// Finding.
	select {
	case body := <-alerts:
		var f ocsf.Event
		if strings.Count(body, "\n") != 1 || json.Unmarshal([]byte(strings.TrimSpace(body)), &f) != nil ||
			f.ClassUID != ocsf.ClassDetectionFinding || f.RiskScore == nil || *f.RiskScore != 65 {
			t.Fatalf("alert webhook received %s", body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no alert reached the webhook")
	}

	// A new admin has no baseline of its own: from its first call it is
	// judged by ops1's, its role's — a write no admin ever made is novel.
	_, c2 := e.Agent(t, "ops2", "admin")
	if _, err := e.MCP(t, e.AgentHTTP(c2), "files").CallTool(ctx, &mcp.CallToolParams{Name: "write_file", Arguments: map[string]any{"path": "/srv/new", "content": "x"}}); err != nil {
		t.Fatalf("a new admin's first write: %v", err)
	}
	var first *audit.Event
	for _, ev := range events(t, e.Env.Env, "gateway.call_tool") {
		if ev.Actor.ID == "spiffe://bulkhead.local/agent/ops2" {
			first = &ev
		}
	}
	if first == nil || first.Detail["risk"] != "35" || first.Detail["risk_reasons"] != "role_baseline novel_tool" {
		t.Fatalf("a new admin's first call: %+v", first)
	}

	// The baseline the gateway read: operators see it; an agent may not
	// read anyone's, its own included.
	b, err := e.Operator.AgentBaseline(ctx, "ops1")
	if err != nil || b.Learning || b.Tools[`Tool::"files/read_file"`] < 700 {
		t.Fatalf("baseline: %v %+v", err, b)
	}
	var ae *client.Error
	if _, err := c.Baseline(ctx, id); !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Fatalf("an agent read a baseline: %v", err)
	}
}
