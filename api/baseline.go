package api

import "time"

// AgentBaseline is an agent's behaviour learned from the audit log.
type AgentBaseline struct {
	Agent string `json:"agent"`
	// Since, Until and Calls are the span and number of the calls learned
	// as habit: allowed, at a usual risk.
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	Calls int       `json:"calls"`
	// Tools counts allowed calls by resource, and DeniedTools denied ones:
	// what an agent tried and was refused is not what it usually does.
	Tools       map[string]int `json:"tools"`
	DeniedTools map[string]int `json:"denied_tools,omitempty"`
	// Shapes counts the shapes of the arguments of each resource's allowed
	// calls (e.g. "path=path:/srv/docs;q=str:16"); "*" marks a resource
	// called with too many shapes to judge by.
	Shapes map[string]map[string]int `json:"shapes,omitempty"`
	// Hours and Weekdays count calls by UTC hour of day and weekday.
	Hours    [24]int `json:"hours"`
	Weekdays [7]int  `json:"weekdays"`
	// PerHour is the mean number of calls in an hour the agent was
	// active; PeakPerHour the most in any hour.
	PerHour     float64 `json:"per_hour"`
	PeakPerHour int     `json:"peak_per_hour"`
	// RateEWMA is calls per active hour, exponentially weighted (α 0.2)
	// toward the most recent hours.
	RateEWMA float64 `json:"rate_ewma"`
	Denials  int     `json:"denials"`
	// Anomalous counts allowed calls not learned as habit: their risk
	// was 50 or more when they were made.
	Anomalous int `json:"anomalous"`
	// BytesPerCall is the mean size of each resource's answers;
	// MaxBytesPerTask and MeanBytesPerTask what the agent's tasks read in
	// all, at most and on average (from the gateways' usage records).
	BytesPerCall map[string]int64 `json:"bytes_per_call,omitempty"`
	// ItemsPerCall is the mean number of records in each resource's
	// answers (MCP content items, resource contents, prompt messages).
	ItemsPerCall     map[string]float64 `json:"items_per_call,omitempty"`
	MaxBytesPerTask  int64              `json:"max_bytes_per_task"`
	MeanBytesPerTask int64              `json:"mean_bytes_per_task"`
	// Learning says the baseline is not yet long or large enough to judge
	// by.
	Learning bool `json:"learning"`
	// Basis is empty for the agent's own baseline; for an agent still
	// learning its own, the baseline of its roles' agents it is judged by
	// instead ("roles reader: 12 agents").
	Basis string `json:"basis,omitempty"`
}
