package client

import (
	"context"
	"net/http"

	"github.com/bulkhead-dev/bulkhead/api"
)

// SpendBudget spends shared budget counters at the control plane
// (gateways only).
func (c *Client) SpendBudget(ctx context.Context, req api.BudgetSpend) (api.BudgetSpent, error) {
	var out api.BudgetSpent
	return out, c.do(ctx, http.MethodPost, "/v1/budgets/spend", req, &out)
}

// ReleaseBudget gives back shared budget counters (gateways only).
func (c *Client) ReleaseBudget(ctx context.Context, req api.BudgetRelease) error {
	return c.do(ctx, http.MethodPost, "/v1/budgets/release", req, nil)
}
