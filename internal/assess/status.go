package assess

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// Checkpoints reads the audit log's latest signed checkpoint (*store.DB).
type Checkpoints interface {
	LatestCheckpoint(ctx context.Context) (audit.StoredCheckpoint, bool, error)
}

// Thresholds of the status's alerts.
const (
	// recent is the window alerts and replicas look back over.
	recent = 24 * time.Hour
	// staleCheckpoint is the age past which the log's latest signed
	// checkpoint is an alert: new entries are not yet covered by a
	// signature a witness could hold.
	staleCheckpoint = time.Hour
)

// Status summarizes the deployment on one screen: replicas, gateways,
// agents, approvals waiting, the tier of each surface, the latest
// checkpoint, and alerts.
func Status(ctx context.Context, d Deps, cps Checkpoints, at time.Time) (api.Status, error) {
	ev, err := gather(ctx, d, at)
	if err != nil {
		return api.Status{}, err
	}
	a := judge(ev)
	st := api.Status{At: at, Agents: map[string]int{}, Tiers: map[string]string{}, Stage: a.Stage,
		PendingApprovals: ev.standing.Pending, ActiveGrants: ev.standing.Active, Gateways: ev.gatewayNames()}
	for _, ag := range ev.agents {
		st.Agents[string(ag.Status)]++
	}
	for _, s := range a.Surfaces {
		st.Tiers[s.Surface] = s.Tier
	}
	rows, err := d.Events.Events(ctx, audit.Query{AfterSeq: -1, Since: at.Add(-recent),
		Actions: []string{audit.ActionServerStart, "sandbox.violation", "gateway.resolve"}})
	if err != nil {
		return api.Status{}, fmt.Errorf("assess: audit log: %w", err)
	}
	counts := map[string]int{}
	for _, r := range rows {
		e, err := audit.EventFromRow(r)
		if err != nil {
			return api.Status{}, fmt.Errorf("assess: audit log: %w", err)
		}
		counts[e.Action]++
		if e.Action == audit.ActionServerStart && !slices.Contains(st.Replicas, e.Detail["listen"]) {
			st.Replicas = append(st.Replicas, e.Detail["listen"])
		}
	}
	if n := counts["sandbox.violation"]; n > 0 {
		st.Alerts = append(st.Alerts, fmt.Sprintf("%d system calls refused by sandboxes in the last day (audit search --action sandbox.violation)", n))
	}
	if n := counts["gateway.resolve"]; n > 0 {
		st.Alerts = append(st.Alerts, fmt.Sprintf("%d names refused by sandboxes' DNS stubs in the last day (audit search --action gateway.resolve)", n))
	}
	if ev.standing.Standing > 0 {
		st.Alerts = append(st.Alerts, fmt.Sprintf("%d grants in force outside an open task", ev.standing.Standing))
	}
	for _, r := range ev.fleet.Agents {
		for _, f := range r.Findings {
			st.Alerts = append(st.Alerts, r.Agent+": "+f)
		}
	}
	if cps != nil {
		cp, ok, err := cps.LatestCheckpoint(ctx)
		if err != nil {
			return api.Status{}, fmt.Errorf("assess: checkpoint: %w", err)
		}
		if ok {
			st.CheckpointSize, st.CheckpointAt = cp.Size, cp.IssuedAt
		}
		if !ok || at.Sub(cp.IssuedAt) > staleCheckpoint {
			st.Alerts = append(st.Alerts, "the audit log has no signed checkpoint from the last hour")
		}
	}
	if len(a.Lint) > 0 {
		st.Alerts = append(st.Alerts, fmt.Sprintf("%d controls only throttle (bulkhead assess)", len(a.Lint)))
	}
	return st, nil
}
