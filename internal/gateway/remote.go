package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/baseline"
	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/sse"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// The remote adapters connect a standalone gateway (`bulkhead gateway`) to
// the control plane over mTLS, as the workload its SVID names.

// RemoteDecider asks the control plane's AuthZEN API.
type RemoteDecider struct{ Client *client.Client }

// Decide implements Decider.
func (d RemoteDecider) Decide(ctx context.Context, q Decision) (policy.Decision, error) {
	// The same context the in-process PDP sees: the risk, and the task's
	// manifest, taint and grants when the call is in a task.
	reasons := q.RiskReasons
	if reasons == nil {
		reasons = []string{}
	}
	c := map[string]any{"input": json.RawMessage(q.Input), "risk": q.Risk, "risk_reasons": reasons, "tainted": q.Tainted}
	if len(q.Input) == 0 {
		c["input"] = map[string]any{}
	}
	a := q.Attestation.Normal()
	c["attestation"] = map[string]any{"protection": a.Protection, "method": a.Method, "ek": a.EK, "lineage_depth": a.Depth}
	if q.Task != "" {
		c["task"] = q.Task
	}
	if q.Manifest != "" {
		c["manifest"] = q.Manifest
	}
	if len(q.Grants) > 0 {
		c["grants"] = q.Grants
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return policy.Decision{}, fmt.Errorf("gateway: encode decision context: %w", err)
	}
	resp, err := d.Client.Evaluate(ctx, api.AuthZENRequest{
		Subject:  &api.AuthZENEntity{Type: string(policy.TypeAgent), ID: q.Agent.String()},
		Action:   &api.AuthZENAction{Name: q.Action},
		Resource: &api.AuthZENEntity{Type: string(q.Resource.Type), ID: string(q.Resource.ID)},
		Context:  raw,
	})
	if err != nil {
		return policy.Decision{}, fmt.Errorf("gateway: remote decision: %w", err)
	}
	out := policy.Decision{Allowed: resp.Decision}
	if rc := resp.Context; rc != nil {
		out.ID, out.Version, out.Reasons, out.ReadOnly = rc.ID, rc.PolicyVersion, rc.Reasons, rc.ReadOnly && resp.Decision
		if resp.Decision {
			out.Sensitivity = rc.Sensitivity
		}
		if rc.Error != nil || len(rc.Errors) > 0 {
			out.Allowed = false
		}
	}
	return out, nil
}

// RemoteBaselines reads agents' baselines from the control plane.
type RemoteBaselines struct{ Client *client.Client }

// Baseline implements baseline.Source.
func (b RemoteBaselines) Baseline(ctx context.Context, agent string) (baseline.Baseline, error) {
	out, err := b.Client.Baseline(ctx, agent)
	if err != nil {
		return baseline.Baseline{}, fmt.Errorf("gateway: remote baseline: %w", err)
	}
	return out, nil
}

// RemoteEvents follows the control plane's event stream (GET /v1/events).
type RemoteEvents struct {
	// HTTP is an mTLS client without an overall timeout (the stream is
	// long-lived); Base is the control plane URL.
	HTTP *http.Client
	Base string
}

// Follow implements EventSource.
func (s RemoteEvents) Follow(ctx context.Context, after int64, actions []string, apply func(audit.Event), caughtUp func()) error {
	q := url.Values{"action": {strings.Join(actions, ",")}, "after": {strconv.FormatInt(after, 10)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(s.Base, "/")+"/v1/events?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("gateway: events: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("gateway: events: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("gateway: events: status %d", resp.StatusCode)
	}
	r := sse.NewReader(resp.Body, 1<<20)
	for {
		ev, err := r.Next()
		if err != nil {
			return fmt.Errorf("gateway: events: %w", err)
		}
		if ev.Type == "caught-up" {
			caughtUp()
			continue
		}
		var e audit.Event
		if err := json.Unmarshal([]byte(ev.Data), &e); err != nil {
			return fmt.Errorf("gateway: events: bad event %q: %w", ev.ID, err)
		}
		apply(e)
	}
}

// RemoteSecrets reveals upstream credentials through the control plane.
type RemoteSecrets struct{ Client *client.Client }

// Reveal implements SecretSource.
func (s RemoteSecrets) Reveal(ctx context.Context, name string) ([]byte, error) {
	v, err := s.Client.RevealSecret(ctx, name)
	if err != nil {
		return nil, err
	}
	return v.Value, nil
}

// RemoteAudit is an audit.Store that appends to the control plane's log:
// wrapped in audit.New, the gateway group-commits its records over the
// network, and a record is acknowledged only once the control plane has
// committed it durably.
type RemoteAudit struct{ Client *client.Client }

// AppendEvents implements audit.Store.
func (a RemoteAudit) AppendEvents(ctx context.Context, rows []audit.Row) (int64, error) {
	evs := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		evs[i] = r.Body
	}
	first, err := a.Client.IngestAudit(ctx, evs)
	if err != nil {
		return 0, fmt.Errorf("gateway: remote audit: %w", err)
	}
	if first < 0 {
		return 0, errors.New("gateway: remote audit: no sequence returned")
	}
	return first, nil
}

// RemoteTasks reads task state, reports output and spends grants through
// the control plane's API. TaskState calls are bounded by the gateway's
// cache (one per task per TaskStateMaxAge); grant uses are one call per
// call a grant allows, by design: a use is atomic at the control plane.
type RemoteTasks struct{ Client *client.Client }

var _ TaskSource = RemoteTasks{}

// TaskState implements TaskSource.
func (t RemoteTasks) TaskState(ctx context.Context, id string) (TaskState, error) {
	st, err := t.Client.TaskState(ctx, id)
	if err != nil {
		return TaskState{}, fmt.Errorf("gateway: task state: %w", err)
	}
	out := TaskState{ID: st.Task.ID, Agent: st.Task.Agent, Manifest: st.Task.Manifest, Open: st.Open, Tainted: st.Task.Tainted,
		Limits: TaskLimits{Calls: st.Limits.Calls, ResponseBytes: st.Limits.ResponseBytes}, Status: st.Task.Status, EndedAt: st.Task.EndedAt}
	for _, g := range st.Grants {
		out.Grants = append(out.Grants, TaskGrant{Elevation: g.Elevation, Name: g.Name, ExpiresAt: g.ExpiresAt, MaxUses: g.MaxUses, Uses: g.Uses})
	}
	return out, nil
}

// ReportOutput implements TaskSource.
func (t RemoteTasks) ReportOutput(ctx context.Context, task, agent string, resource cedar.EntityUID, suspect string) (bool, bool, error) {
	r, err := t.Client.ReportSuspectOutput(ctx, task, agent, resource.String(), suspect)
	if err != nil {
		return false, false, fmt.Errorf("gateway: report output: %w", err)
	}
	return r.Untrusted, r.Tainted, nil
}

// UseGrant implements TaskSource.
func (t RemoteTasks) UseGrant(ctx context.Context, grant string, u GrantUse) error {
	_, err := t.Client.UseGrant(ctx, grant, api.ElevationUse{Task: u.Task, Agent: u.Agent, Resource: u.Resource, DecisionID: u.DecisionID})
	if err != nil {
		return fmt.Errorf("gateway: use grant: %w", err)
	}
	return nil
}

// RemoteBudgets spends the shared budget counters at the control plane:
// one call per spend, so N gateways never exceed a budget together.
type RemoteBudgets struct{ Client *client.Client }

var _ budget.Store = RemoteBudgets{}

// SpendBudget implements budget.Store.
func (b RemoteBudgets) SpendBudget(ctx context.Context, counters []budget.Counter, n int64, all bool) (int64, error) {
	req := api.BudgetSpend{N: n, All: all}
	for _, c := range counters {
		req.Counters = append(req.Counters, api.BudgetCounter{Key: c.Key, Limit: c.Limit})
	}
	out, err := b.Client.SpendBudget(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("gateway: spend budget: %w", err)
	}
	if out.Exhausted != nil {
		return 0, &budget.ExhaustedError{Key: out.Exhausted.Key, Limit: out.Exhausted.Limit}
	}
	return out.Granted, nil
}

// ReleaseBudget implements budget.Store.
func (b RemoteBudgets) ReleaseBudget(ctx context.Context, keys []string, n int64) error {
	if err := b.Client.ReleaseBudget(ctx, api.BudgetRelease{Keys: keys, N: n}); err != nil {
		return fmt.Errorf("gateway: release budget: %w", err)
	}
	return nil
}
