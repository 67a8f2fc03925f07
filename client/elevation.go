package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/bulkhead-dev/bulkhead/api"
)

// Privilege scoping: manifests and the approval policy (operators), tasks
// and elevation requests (agents), approvals (operators, each with their
// own credential), and task state and grant use (gateways).

// ApplyManifest applies a task manifest (its YAML source).
func (c *Client) ApplyManifest(ctx context.Context, source []byte) (api.Manifest, error) {
	var m api.Manifest
	return m, c.do(ctx, http.MethodPost, "/v1/manifests", api.ManifestApplyRequest{Source: string(source)}, &m)
}

// Manifests lists manifests (latest versions).
func (c *Client) Manifests(ctx context.Context) ([]api.Manifest, error) {
	var out []api.Manifest
	return out, c.do(ctx, http.MethodGet, "/v1/manifests", nil, &out)
}

// Manifest shows a manifest with its source and compiled policies.
func (c *Client) Manifest(ctx context.Context, name string) (api.Manifest, error) {
	var m api.Manifest
	return m, c.do(ctx, http.MethodGet, "/v1/manifests/"+url.PathEscape(name), nil, &m)
}

// StartTask opens a task of manifest for this (agent) client.
func (c *Client) StartTask(ctx context.Context, manifest, description string) (api.Task, error) {
	var t api.Task
	return t, c.do(ctx, http.MethodPost, "/v1/tasks", api.TaskStartRequest{Manifest: manifest, Description: description}, &t)
}

// CompleteTask ends this agent's task: it returns to baseline, and every
// grant of the task stops at once.
func (c *Client) CompleteTask(ctx context.Context, id, reason string) (api.Task, error) {
	var t api.Task
	return t, c.do(ctx, http.MethodPost, "/v1/tasks/"+url.PathEscape(id)+"/complete", api.TaskEndRequest{Reason: reason}, &t)
}

// CancelTask abandons a task (an operator, or its agent).
func (c *Client) CancelTask(ctx context.Context, id, reason string) (api.Task, error) {
	var t api.Task
	return t, c.do(ctx, http.MethodPost, "/v1/tasks/"+url.PathEscape(id)+"/cancel", api.TaskEndRequest{Reason: reason}, &t)
}

// Task shows a task.
func (c *Client) Task(ctx context.Context, id string) (api.Task, error) {
	var t api.Task
	return t, c.do(ctx, http.MethodGet, "/v1/tasks/"+url.PathEscape(id), nil, &t)
}

// Tasks lists tasks (operators); open keeps open ones.
func (c *Client) Tasks(ctx context.Context, open bool) ([]api.Task, error) {
	var out []api.Task
	path := "/v1/tasks"
	if open {
		path += "?open=true"
	}
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// RequestElevation asks for a trigger of this agent's task, with a
// justification; it returns the elevation (active if the approval policy
// approved it alone, else pending).
func (c *Client) RequestElevation(ctx context.Context, task, trigger, justification string) (api.Elevation, error) {
	var e api.Elevation
	return e, c.do(ctx, http.MethodPost, "/v1/elevations", api.ElevationRequest{Task: task, Trigger: trigger, Justification: justification}, &e)
}

// Elevation shows an elevation with its provenance.
func (c *Client) Elevation(ctx context.Context, id string) (api.Elevation, error) {
	var e api.Elevation
	return e, c.do(ctx, http.MethodGet, "/v1/elevations/"+url.PathEscape(id), nil, &e)
}

// ElevationFilter selects elevations to list.
type ElevationFilter struct {
	Task string
	// Statuses, e.g. pending; empty means all.
	Statuses []string
	// Active keeps grants in force now.
	Active bool
}

// Elevations lists elevations (operators).
func (c *Client) Elevations(ctx context.Context, f ElevationFilter) ([]api.Elevation, error) {
	q := url.Values{}
	if f.Task != "" {
		q.Set("task", f.Task)
	}
	if len(f.Statuses) > 0 {
		q.Set("status", strings.Join(f.Statuses, ","))
	}
	if f.Active {
		q.Set("active", "true")
	}
	path := "/v1/elevations"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []api.Elevation
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// ApproveElevation approves elevation id of task with a reason, as this
// (operator) client's human. The approval is bound to both: it is refused
// if they do not match what the control plane holds.
func (c *Client) ApproveElevation(ctx context.Context, id, task, reason string) (api.Elevation, error) {
	var e api.Elevation
	return e, c.do(ctx, http.MethodPost, "/v1/elevations/"+url.PathEscape(id)+"/approve",
		api.ElevationDecision{Elevation: id, Task: task, Reason: reason}, &e)
}

// DecideElevation posts a decision as given (approve true or deny) to
// elevation id; ApproveElevation and DenyElevation bind it to id
// themselves.
func (c *Client) DecideElevation(ctx context.Context, id string, approve bool, d api.ElevationDecision) (api.Elevation, error) {
	verb := "deny"
	if approve {
		verb = "approve"
	}
	var e api.Elevation
	return e, c.do(ctx, http.MethodPost, "/v1/elevations/"+url.PathEscape(id)+"/"+verb, d, &e)
}

// DenyElevation refuses a pending elevation.
func (c *Client) DenyElevation(ctx context.Context, id, task, reason string) (api.Elevation, error) {
	return c.DecideElevation(ctx, id, false, api.ElevationDecision{Elevation: id, Task: task, Reason: reason})
}

// RevokeElevation ends a pending or active elevation at once.
func (c *Client) RevokeElevation(ctx context.Context, id, reason string) (api.Elevation, error) {
	var e api.Elevation
	return e, c.do(ctx, http.MethodPost, "/v1/elevations/"+url.PathEscape(id)+"/revoke", api.RevokeRequest{Reason: reason}, &e)
}

// Standing measures standing privilege (operators, gateways).
func (c *Client) Standing(ctx context.Context) (api.Standing, error) {
	var s api.Standing
	return s, c.do(ctx, http.MethodGet, "/v1/elevations/standing", nil, &s)
}

// ApprovalPolicy shows the approval policy set in force and its schema.
func (c *Client) ApprovalPolicy(ctx context.Context) (api.ApprovalPolicy, error) {
	var p api.ApprovalPolicy
	return p, c.do(ctx, http.MethodGet, "/v1/elevations/approval-policy", nil, &p)
}

// ApplyApprovalPolicy replaces the approval policy set.
func (c *Client) ApplyApprovalPolicy(ctx context.Context, files []api.PolicyFile) (api.ApprovalPolicy, error) {
	var p api.ApprovalPolicy
	return p, c.do(ctx, http.MethodPut, "/v1/elevations/approval-policy", api.ApprovalPolicyApplyRequest{Files: files}, &p)
}

// TaskState reads a task's live state (gateways).
func (c *Client) TaskState(ctx context.Context, id string) (api.TaskState, error) {
	var st api.TaskState
	return st, c.do(ctx, http.MethodGet, "/v1/tasks/"+url.PathEscape(id)+"/state", nil, &st)
}

// ReportOutput tells the control plane that agent, in task, receives
// output from resource (a Cedar entity); an untrusted one taints the task
// (gateways).
func (c *Client) ReportOutput(ctx context.Context, task, agent, resource string) (api.TaskOutputResult, error) {
	return c.ReportSuspectOutput(ctx, task, agent, resource, "")
}

// ReportSuspectOutput is ReportOutput for a resource whose output is
// untrusted whatever the catalog says, for the reason suspect (e.g. its
// sandbox refused a system call); it taints the task (gateways).
func (c *Client) ReportSuspectOutput(ctx context.Context, task, agent, resource, suspect string) (api.TaskOutputResult, error) {
	var r api.TaskOutputResult
	return r, c.do(ctx, http.MethodPost, "/v1/tasks/"+url.PathEscape(task)+"/output", api.TaskOutputRequest{Agent: agent, Resource: resource, Suspect: suspect}, &r)
}

// UseGrant spends one use of grant id for a call about to be forwarded
// (gateways); the call must not be forwarded if this fails.
func (c *Client) UseGrant(ctx context.Context, id string, u api.ElevationUse) (api.Elevation, error) {
	var e api.Elevation
	return e, c.do(ctx, http.MethodPost, "/v1/elevations/"+url.PathEscape(id)+"/use", u, &e)
}

// IssueOperatorSVID obtains, with this (operator) client, a credential
// for another human operator, spiffe://TD/operator/NAME, and writes it to
// dir. The key is generated here and sent nowhere; hand dir to that person
// (or run this where they are). ttl zero means the server's default.
func (c *Client) IssueOperatorSVID(ctx context.Context, name, dir string, ttl time.Duration) (*x509svid.SVID, error) {
	td := c.src.ID().TrustDomain()
	want, err := spiffeid.FromSegments(td, "operator", name)
	if err != nil {
		return nil, fmt.Errorf("client: operator %s: %w", name, err)
	}
	key, csrPEM, err := newKeyAndCSR(want)
	if err != nil {
		return nil, err
	}
	req := api.ComponentSVIDRequest{CSR: string(csrPEM)}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	var resp api.SVID
	if err := c.do(ctx, http.MethodPost, "/v1/operators/"+url.PathEscape(name)+"/svid", req, &resp); err != nil {
		return nil, err
	}
	bundle, err := c.src.GetX509BundleForTrustDomain(td)
	if err != nil {
		return nil, fmt.Errorf("client: trust bundle: %w", err)
	}
	return acceptSVID(resp, key, bundle, want, dir)
}

// RevokeOperator revokes every certificate of operator NAME.
func (c *Client) RevokeOperator(ctx context.Context, name, reason string) (api.RevokeResult, error) {
	var r api.RevokeResult
	return r, c.do(ctx, http.MethodPost, "/v1/operators/"+url.PathEscape(name)+"/revoke", api.RevokeRequest{Reason: reason}, &r)
}
