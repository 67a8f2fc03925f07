package api

// BudgetCounter is one shared budget counter: what it counts and its limit.
type BudgetCounter struct {
	Key   string `json:"key"`
	Limit int64  `json:"limit"`
}

// BudgetSpend spends N of every counter in one transaction (POST
// /v1/budgets/spend, gateways only). With All it is N or nothing;
// without, the largest amount up to N that every limit allows.
type BudgetSpend struct {
	Counters []BudgetCounter `json:"counters"`
	N        int64           `json:"n"`
	All      bool            `json:"all,omitempty"`
}

// BudgetSpent is what a spend granted. Exhausted names the counter that
// refused when nothing (or, with All, not all) could be spent.
type BudgetSpent struct {
	Granted   int64          `json:"granted"`
	Exhausted *BudgetCounter `json:"exhausted,omitempty"`
}

// BudgetRelease gives N back to each counter (POST /v1/budgets/release,
// gateways only): a call not forwarded, response bytes reserved and not
// sent.
type BudgetRelease struct {
	Keys []string `json:"keys"`
	N    int64    `json:"n"`
}
