package server_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
)

// The assessment reads what the running gateway reported when it
// started: its stdio server run with sandbox: none keeps isolation below
// Enterprise, named; its mTLS gives service auth Enterprise; the calls an
// agent made are the per-call decisions the permission model's criteria
// count, each attributed to the agent.
func TestAssessmentReadsWhatTheGatewayReported(t *testing.T) {
	cmd, env := gatewaytest.StdioCommand()
	e := startGateway(t, fmt.Sprintf(`  - name: notes
    mcp: { command: [%q, %q], env: [%q, %q], sandbox: none }
    callers: ["spiffe://bulkhead.local/agent/alpha"]
`, cmd[0], cmd[1], env[0], env[1]))
	ctx := context.Background()
	hc, _ := e.agentHTTP(t, "alpha", "reader")
	cs := e.mcpSession(t, hc)
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/docs/guide.md"}}); err != nil {
		t.Fatal(err)
	}
	a, err := e.Operator.Assess(ctx)
	if err != nil {
		t.Fatal(err)
	}
	crit := map[string]api.AssessCriterion{}
	tier := map[string]string{}
	for _, s := range a.Surfaces {
		tier[s.Surface] = s.Tier
		for _, c := range s.Criteria {
			crit[c.Name] = c
		}
	}
	sandboxed := crit["sandboxed execution of tool servers"]
	if sandboxed.Met || !slices.ContainsFunc(sandboxed.Blockers, func(b string) bool { return strings.Contains(b, "server notes: sandbox: none") }) {
		t.Fatalf("isolation: %+v", sandboxed)
	}
	if tier["isolation"] != "foundation" || !crit["mutual TLS with certificate pinning"].Met || !crit["cryptographically-rooted per-agent IDs in all logs"].Met {
		t.Fatalf("tiers %v, criteria %+v", tier, crit)
	}
	if c := crit["continuous authorization per action"]; !strings.Contains(c.Evidence, "recent per-call decisions") || strings.HasPrefix(c.Evidence, "0 ") {
		t.Fatalf("the agent's call is not among the decisions: %+v", c)
	}
	// The agent's baseline is learned from the same records.
	bl, err := e.Operator.AgentBaseline(ctx, "alpha")
	if err != nil || bl.Calls != 1 || bl.Tools[`Tool::"files/read_file"`] != 1 || !bl.Learning {
		t.Fatalf("baseline %+v %v", bl, err)
	}
	// The blast radius knows the secret the gateway injects for alpha.
	br, err := e.Operator.BlastRadius(ctx, api.BlastRadiusRequest{Agent: "alpha"})
	if err != nil || len(br.Fleet.Agents) != 1 {
		t.Fatal(err)
	}
	if s := br.Fleet.Agents[0].Secrets; len(s) != 1 || !strings.Contains(s[0], "injected by gateway") || !strings.Contains(s[0], "into server files") {
		t.Fatalf("secrets alpha uses: %q", s)
	}
}
