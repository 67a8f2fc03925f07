package api

import "time"

// GatewayReport is what a gateway says about itself when it starts, in
// its gateway.start audit record (detail "config"): the evidence an
// assessment reads, never the configuration file itself.
type GatewayReport struct {
	Name     string                `json:"name"`
	Resource string                `json:"resource"`
	Servers  []GatewayServerReport `json:"servers"`
}

// GatewayServerReport describes one upstream of a gateway.
type GatewayServerReport struct {
	Name string `json:"name"`
	// Transport is mcp-http, mcp-stdio or http.
	Transport string   `json:"transport"`
	Callers   []string `json:"callers"`
	// Sandbox is, for a stdio server, "none" or the profile ("strict"
	// or a file); empty for servers that run elsewhere.
	Sandbox     string   `json:"sandbox,omitempty"`
	Egress      []string `json:"egress,omitempty"`
	Credentials []string `json:"credentials,omitempty"` // names of the secrets injected
	// BudgetCalls and BudgetBytes are the server's never-refilled
	// budgets; RatePerSecond its rate limit (which refills).
	BudgetCalls   int64   `json:"budget_calls,omitempty"`
	BudgetBytes   int64   `json:"budget_bytes,omitempty"`
	RatePerSecond float64 `json:"rate_per_second,omitempty"`
}

// Tiers of the ladder, in order.
const (
	TierNone       = "none"
	TierFoundation = "foundation"
	TierEnterprise = "enterprise"
	TierAdvanced   = "advanced"
)

// Assessment says which tier each control surface really reaches, from
// live state.
type Assessment struct {
	At       time.Time     `json:"at"`
	Surfaces []SurfaceTier `json:"surfaces"`
	Stage    int           `json:"stage"`
	// Next are the criteria between the stage reached and the next one.
	Next []AssessCriterion `json:"next,omitempty"`
	// Lint are controls that only throttle: they make a bad action
	// tedious, not impossible, and count toward no tier.
	Lint []string `json:"lint,omitempty"`
}

// SurfaceTier is one control surface's tier and the criteria behind it.
type SurfaceTier struct {
	Surface  string            `json:"surface"`
	Tier     string            `json:"tier"`
	Criteria []AssessCriterion `json:"criteria"`
}

// AssessCriterion is one criterion of a tier, met or not, with the
// evidence, and the objects to fix when it is not.
type AssessCriterion struct {
	Surface  string   `json:"surface"`
	Tier     string   `json:"tier"`
	Name     string   `json:"name"`
	Met      bool     `json:"met"`
	Evidence string   `json:"evidence"`
	Blockers []string `json:"blockers,omitempty"`
}

// Status is the one-screen summary an operator starts from.
type Status struct {
	At time.Time `json:"at"`
	// Replicas are the control plane replicas that started in the last
	// day (their listen addresses, from server.start records).
	Replicas []string `json:"replicas"`
	// Gateways are the gateways that have reported what they serve.
	Gateways []string `json:"gateways"`
	// Agents counts agents by status.
	Agents           map[string]int    `json:"agents"`
	PendingApprovals int64             `json:"pending_approvals"`
	ActiveGrants     int64             `json:"active_grants"`
	Tiers            map[string]string `json:"tiers"`
	Stage            int               `json:"stage"`
	// Checkpoint is the latest signed checkpoint of the audit log.
	CheckpointSize int64     `json:"checkpoint_size"`
	CheckpointAt   time.Time `json:"checkpoint_at"`
	// Alerts are what needs a look now.
	Alerts []string `json:"alerts,omitempty"`
}
