package cli_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
)

// An operator given the decision id of a refusal finds its records and
// replays it against the policy version it was made with and the live one.
func TestExplainARecordedDecision(t *testing.T) {
	ctx := context.Background()
	e := gatewaytest.Start(t, "")
	_, delta := e.Agent(t, "delta", "") // no role: denied by default
	cs := e.MCP(t, e.AgentHTTP(delta), "files")
	_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "/srv/x"}})
	var rpcErr *jsonrpc.Error
	var data struct {
		DecisionID string `json:"decision_id"`
	}
	if !errors.As(err, &rpcErr) || json.Unmarshal(rpcErr.Data, &data) != nil || data.DecisionID == "" {
		t.Fatalf("denied call without a decision id: %v", err)
	}
	env := map[string]string{"BULKHEAD_SERVER": e.URL, "BULKHEAD_CREDENTIALS": e.Server.OperatorDir()}
	must := mustRun(t, env)
	if out := must("audit", "search", "--decision-id", data.DecisionID); !strings.Contains(out, "gateway.call_tool") || !strings.Contains(out, data.DecisionID) {
		t.Fatalf("audit search --decision-id:\n%s", out)
	}
	// The policy changes: delta may read the docs tools now.
	files := append(gatewaytest.PolicyFiles(t), api.PolicyFile{Name: "delta.cedar", Content: `@id("delta-docs")
permit (principal == Agent::"spiffe://bulkhead.local/agent/delta", action == Action::"call_tool", resource in ToolGroup::"docs");`})
	if _, err := e.Operator.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: files}); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run(t, env, "policy", "explain", "--decision", data.DecisionID)
	if code != 0 {
		t.Fatalf("explain --decision: exit %d\n%s", code, errs)
	}
	for _, want := range []string{"replayed with version 1", "no policy matched: denied by default", "replayed with the live version 2",
		"permit delta-docs", "the outcome changed: DENY then, ALLOW now"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain --decision lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errs, "recorded as a digest only") {
		t.Errorf("no warning about the missing arguments:\n%s", errs)
	}
	// Unknown principals and actions are warned of.
	_, _, errs = run(t, env, "policy", "explain", "--principal", "ghost", "--action", "call_tol", "--resource", `Tool::"files/read_file"`)
	for _, want := range []string{`no agent "ghost" is registered`, `no gateway asks about action "call_tol"`} {
		if !strings.Contains(errs, want) {
			t.Errorf("explain lacks the warning %q:\n%s", want, errs)
		}
	}
	if code, _, errs := run(t, env, "policy", "explain", "--decision", "no-such-decision"); code == 0 || !strings.Contains(errs, "no gateway decision") {
		t.Fatalf("an unknown decision: exit %d %s", code, errs)
	}
}
