package policy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// A gateway asks the PDP about each tool call through the Decider
// interface, in process.
func ExamplePDP_Decide() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "pdp-example")
	defer os.RemoveAll(dir)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := store.Open(ctx, "", dir, logger)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	clk := clock.Real{}
	td := spiffeid.RequireTrustDomainFromString("bulkhead.local")
	svc, err := policy.New(ctx, policy.Config{Store: db, Audit: audit.New(db, clk, logger), TrustDomain: td, Clock: clk, Logger: logger})
	if err != nil {
		fmt.Println(err)
		return
	}
	op := audit.Actor{Kind: audit.ActorOperator, ID: "spiffe://bulkhead.local/operator/admin"}

	// The operator's side: an agent in role reader, a catalog, policies.
	alpha := spiffeid.RequireFromPath(td, "/agent/alpha")
	_ = db.CreateAgent(ctx, identity.Agent{Name: "alpha", SPIFFEID: alpha.String(), Status: identity.StatusActive,
		SVIDTTL: time.Hour, CreatedAt: time.Now(), CreatedBy: op.ID, UpdatedAt: time.Now()})
	_, _ = svc.AddRole(ctx, op, "alpha", "reader")
	cat, _ := policy.ParseCatalog("tools.yaml", []byte("servers:\n  - name: docs\n    sensitivity: low\n    groups: [docs]\n    tools: [{name: search}]\n"))
	_, _ = svc.ApplyCatalog(ctx, op, cat)
	_, err = svc.Apply(ctx, op, []policy.File{{Name: "reader.cedar", Content: `
@id("reader-docs")
permit (principal in Role::"reader", action == Action::"call_tool", resource in ToolGroup::"docs");

@id("forbid-etc")
forbid (principal, action == Action::"call_tool", resource)
when { context.input has path && context.input.path like "/etc/*" };`}}, false, "readers use the docs")
	if err != nil {
		fmt.Println(err)
		return
	}

	// The gateway's side: one Decide per tool call.
	var pdp policy.Decider = svc
	for _, args := range []string{`{"query": "install"}`, `{"path": "/etc/passwd"}`} {
		input, err := policy.InputFromJSON([]byte(args))
		if err != nil {
			fmt.Println(err)
			return
		}
		d, err := pdp.Decide(ctx, policy.Request{
			Principal: policy.Agent(alpha),
			Action:    policy.Action(policy.ActionCallTool),
			Resource:  policy.Tool("docs", "search"),
			Context:   policy.Context{Risk: 10, Input: input},
		})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s: allowed=%v by %v (policy version %d)\n", args, d.Allowed, d.Reasons, d.Version)
	}
	// Output:
	// {"query": "install"}: allowed=true by [reader-docs] (policy version 1)
	// {"path": "/etc/passwd"}: allowed=false by [forbid-etc] (policy version 1)
}
