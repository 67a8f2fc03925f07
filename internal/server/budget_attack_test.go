package server_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// A compromised gateway tries to refund a task's budget that another
// gateway spent, so that the agent gets more calls everywhere: refused,
// recorded, and the counter unchanged. An agent cannot reach the budget
// API at all.
func TestACompromisedGatewayCannotRefundAnotherGatewaysSpend(t *testing.T) {
	ctx := context.Background()
	env := testenv.Start(t)
	gw := func(name string) *client.Client {
		dir := filepath.Join(t.TempDir(), name)
		if _, err := env.Operator.IssueComponentSVID(ctx, "gateway", name, dir); err != nil {
			t.Fatal(err)
		}
		return env.Client(dir)
	}
	honest, rogue := gw("edge"), gw("rogue")
	spend := api.BudgetSpend{Counters: []api.BudgetCounter{{Key: "task|t-1|calls", Limit: 4}}, N: 1, All: true}
	for range 4 {
		if got, err := honest.SpendBudget(ctx, spend); err != nil || got.Granted != 1 {
			t.Fatalf("honest spend: %+v, %v", got, err)
		}
	}
	if got, err := honest.SpendBudget(ctx, spend); err != nil || got.Exhausted == nil {
		t.Fatalf("a fifth call: %+v, %v", got, err)
	}
	err := rogue.ReleaseBudget(ctx, api.BudgetRelease{Keys: []string{"task|t-1|calls"}, N: 4})
	if !client.IsCode(err, "forbidden") {
		t.Fatalf("the rogue gateway's refund: %v", err)
	}
	if got, err := honest.SpendBudget(ctx, spend); err != nil || got.Exhausted == nil {
		t.Fatalf("after the refused refund the budget is not spent: %+v, %v", got, err)
	}
	ev := lastEvent(t, env, budget.ActionRelease)
	if ev.Decision != audit.Deny || ev.Actor.ID != "spiffe://bulkhead.local/bulkhead/gateway/rogue" || !strings.Contains(ev.Detail["keys"], "task|t-1|calls") {
		t.Fatalf("refused refund recorded as %+v", ev)
	}
	// The honest gateway gives back a call it did not forward.
	if err := honest.ReleaseBudget(ctx, api.BudgetRelease{Keys: []string{"task|t-1|calls"}, N: 1}); err != nil {
		t.Fatal(err)
	}
	// An agent is not a gateway.
	agent := env.Client(env.Enroll("alpha"))
	if _, err := agent.SpendBudget(ctx, spend); !client.IsCode(err, "forbidden") {
		t.Fatalf("an agent spending budgets: %v", err)
	}
}
