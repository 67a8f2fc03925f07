package gateway

import (
	"context"
	"strconv"
	"strings"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/baseline"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// ActionAnomaly records a call whose risk reached the alert threshold.
const ActionAnomaly = "gateway.anomaly"

// Risk: every decision carries the caller's risk score for the request
// (context.risk, 0–100) and the codes of its reasons
// (context.risk_reasons), computed from the agent's baseline and its last
// hour as this gateway saw it (internal/baseline). Both are in memory: the
// baseline is read once per agent and refreshed in the background. A call
// whose risk reaches the threshold is recorded as an anomaly, and any
// change of an agent's risk re-decides its open streams.

// riskOf scores the caller's request for resource with input, and keeps
// the shape of input (for its record, which the baseline learns from).
func (g *Gateway) riskOf(ctx context.Context, c *caller, resource cedar.EntityUID, input []byte) baseline.Risk {
	c.shape = ""
	if g.risk == nil {
		return baseline.Risk{}
	}
	if resource.Type == policy.TypeTool || resource.Type == policy.TypeRoute {
		c.shape = baseline.Shape(input)
	}
	return g.risk.Score(ctx, riskKey(c), c.claims.Task, resource.String(), c.shape, c.task != nil && c.task.Tainted)
}

// observeRisk adds a decided request to the agent's recent activity,
// records an anomaly when its risk reached the threshold (before the
// request is answered), and re-decides the agent's streams when its risk
// changed.
func (g *Gateway) observeRisk(ctx context.Context, c *caller, server, action string, resource cedar.EntityUID, decisionID string, denied bool, r baseline.Risk) {
	if g.risk == nil {
		return
	}
	alert, changed := g.risk.Observe(riskKey(c), resource.String(), denied, r)
	if alert {
		decision := audit.Allow
		if denied {
			decision = audit.Deny
		}
		detail := map[string]string{"gateway": g.cfg.Name, "server": server, "action": action, "decision_id": decisionID}
		riskDetail(detail, r)
		ev := audit.Event{Actor: c.actor(), Action: ActionAnomaly, Target: resource.String(), Decision: decision,
			Reasons: r.Why, Task: c.claims.Task, Detail: detail}
		if _, err := g.deps.Audit.Record(ctx, ev); err != nil {
			g.logger.Error("could not record an anomaly", "agent", c.id, "err", err)
		}
	}
	if changed {
		// The root's risk is its whole tree's.
		root := riskKey(c)
		g.streams.redecideIf(func(agent string, _ *openStream) bool { return identity.Root(agent) == root })
	}
}

// riskKey is whose risk a caller's is: its delegation root's. A sub-agent
// is judged by its root's baseline and adds to its root's last hour, so
// delegating to a fresh sub-agent does not reset a risk.
func riskKey(c *caller) string { return identity.Root(c.id.String()) }

// riskDetail adds a risk to a record's detail.
func riskDetail(detail map[string]string, r baseline.Risk) {
	detail["risk"] = strconv.Itoa(r.Score)
	if len(r.Reasons) > 0 {
		detail["risk_reasons"] = strings.Join(r.Reasons, " ")
		detail["risk_why"] = strings.Join(r.Why, "; ")
	}
}
