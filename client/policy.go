package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/bulkhead-dev/bulkhead/api"
)

// ApplyPolicy stores a policy set as a new version: live, or with shadow
// the candidate evaluated beside the live set. An invalid set is refused
// with every problem located in the error message.
func (c *Client) ApplyPolicy(ctx context.Context, req api.PolicyApplyRequest) (api.PolicyVersion, error) {
	var v api.PolicyVersion
	return v, c.do(ctx, http.MethodPost, "/v1/policy/versions", req, &v)
}

// PolicyVersions lists stored versions and which are in force.
func (c *Client) PolicyVersions(ctx context.Context) (api.PolicyVersions, error) {
	var out api.PolicyVersions
	return out, c.do(ctx, http.MethodGet, "/v1/policy/versions", nil, &out)
}

// PolicyVersion returns a version with its files: "live", "shadow" or a
// number.
func (c *Client) PolicyVersion(ctx context.Context, version string) (api.PolicyVersion, error) {
	var v api.PolicyVersion
	return v, c.do(ctx, http.MethodGet, "/v1/policy/versions/"+url.PathEscape(version), nil, &v)
}

// RollbackPolicy makes a stored version live.
func (c *Client) RollbackPolicy(ctx context.Context, version int64) (api.PolicyState, error) {
	var st api.PolicyState
	return st, c.do(ctx, http.MethodPost, "/v1/policy/rollback", api.PolicyRollbackRequest{Version: version}, &st)
}

// PromotePolicy makes the shadow version live.
func (c *Client) PromotePolicy(ctx context.Context) (api.PolicyState, error) {
	var st api.PolicyState
	return st, c.do(ctx, http.MethodPost, "/v1/policy/promote", nil, &st)
}

// StopShadow ends shadow evaluation.
func (c *Client) StopShadow(ctx context.Context) (api.PolicyState, error) {
	var st api.PolicyState
	return st, c.do(ctx, http.MethodPost, "/v1/policy/shadow/stop", nil, &st)
}

// ShadowReport returns what shadow evaluation found: version 0 is the
// current shadow version; limit 0 returns every difference.
func (c *Client) ShadowReport(ctx context.Context, version int64, limit int) (api.ShadowReport, error) {
	q := url.Values{}
	if version > 0 {
		q.Set("version", fmt.Sprint(version))
	}
	q.Set("limit", fmt.Sprint(limit))
	var r api.ShadowReport
	return r, c.do(ctx, http.MethodGet, "/v1/policy/shadow/report?"+q.Encode(), nil, &r)
}

// ExplainPolicy decides a request without enforcing or recording it and
// returns the policies that made the decision.
func (c *Client) ExplainPolicy(ctx context.Context, req api.PolicyExplainRequest) (api.PolicyExplanation, error) {
	var ex api.PolicyExplanation
	return ex, c.do(ctx, http.MethodPost, "/v1/policy/explain", req, &ex)
}

// Evaluate asks the PDP for one decision (AuthZEN Access Evaluation).
func (c *Client) Evaluate(ctx context.Context, req api.AuthZENRequest) (api.AuthZENDecision, error) {
	var d api.AuthZENDecision
	return d, c.do(ctx, http.MethodPost, "/access/v1/evaluation", req, &d)
}

// EvaluateBatch asks the PDP for several decisions (AuthZEN Access
// Evaluations).
func (c *Client) EvaluateBatch(ctx context.Context, req api.AuthZENRequest) (api.AuthZENEvaluations, error) {
	var out api.AuthZENEvaluations
	return out, c.do(ctx, http.MethodPost, "/access/v1/evaluations", req, &out)
}

// AddAgentRole assigns a role to an agent.
func (c *Client) AddAgentRole(ctx context.Context, agent, role string) (api.RoleAssignment, error) {
	var a api.RoleAssignment
	return a, c.do(ctx, http.MethodPut, "/v1/agents/"+url.PathEscape(agent)+"/roles/"+url.PathEscape(role), nil, &a)
}

// RemoveAgentRole takes a role from an agent.
func (c *Client) RemoveAgentRole(ctx context.Context, agent, role string) error {
	return c.do(ctx, http.MethodDelete, "/v1/agents/"+url.PathEscape(agent)+"/roles/"+url.PathEscape(role), nil, nil)
}

// AgentRoles lists role assignments; agent "" lists all.
func (c *Client) AgentRoles(ctx context.Context, agent string) ([]api.RoleAssignment, error) {
	path := "/v1/roles"
	if agent != "" {
		path += "?agent=" + url.QueryEscape(agent)
	}
	var out []api.RoleAssignment
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// ApplyTools replaces the tool catalog.
func (c *Client) ApplyTools(ctx context.Context, cat api.ToolCatalog) (api.ToolCatalog, error) {
	var out api.ToolCatalog
	return out, c.do(ctx, http.MethodPut, "/v1/tools", cat, &out)
}

// Tools returns the tool catalog.
func (c *Client) Tools(ctx context.Context) (api.ToolCatalog, error) {
	var out api.ToolCatalog
	return out, c.do(ctx, http.MethodGet, "/v1/tools", nil, &out)
}

// BlastRadius asks what agents can reach (see api.BlastRadiusRequest).
func (c *Client) BlastRadius(ctx context.Context, req api.BlastRadiusRequest) (api.BlastRadius, error) {
	var out api.BlastRadius
	return out, c.do(ctx, http.MethodPost, "/v1/blast-radius", req, &out)
}

// Assess asks which tier each control surface reaches.
func (c *Client) Assess(ctx context.Context) (api.Assessment, error) {
	var out api.Assessment
	return out, c.do(ctx, http.MethodGet, "/v1/assess", nil, &out)
}

// Status fetches the one-screen summary.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var out api.Status
	return out, c.do(ctx, http.MethodGet, "/v1/status", nil, &out)
}

// AgentBaseline fetches an agent's behaviour learned from the audit log.
func (c *Client) AgentBaseline(ctx context.Context, name string) (api.AgentBaseline, error) {
	var out api.AgentBaseline
	return out, c.do(ctx, http.MethodGet, "/v1/agents/"+url.PathEscape(name)+"/baseline", nil, &out)
}

// Baseline fetches the baseline of the agent with this SPIFFE ID (for
// operators and gateways).
func (c *Client) Baseline(ctx context.Context, agent string) (api.AgentBaseline, error) {
	var out api.AgentBaseline
	return out, c.do(ctx, http.MethodGet, "/v1/baselines?agent="+url.QueryEscape(agent), nil, &out)
}
