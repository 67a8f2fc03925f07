// Package assess says which tier of the ladder (Foundation, Enterprise,
// Advanced) each control surface — identity, service auth, permission
// model, privilege scoping, isolation — really reaches, from live state:
// the registered agents, the audit log (what gateways reported when they
// started, what was issued, renewed and revoked, what was decided), the
// live policies and catalog, the manifests and grants, and every agent's
// blast radius as the PDP answers it. Never from what the documentation
// claims: a criterion is met only with its evidence, and one that is not
// names the objects to fix.
//
// It also places the deployment on the migration path (stage 0, the
// keystone identity, to stage 3, hardware) and lints the controls that
// only throttle — they make an attack tedious, not impossible, and count
// toward no tier.
package assess

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/reach"
)

// Control surfaces, in the ladder's order.
const (
	Identity    = "identity"
	ServiceAuth = "service auth"
	Permission  = "permission model"
	Privilege   = "privilege scoping"
	Isolation   = "isolation"
)

// Surfaces are the control surfaces in order.
var Surfaces = []string{Identity, ServiceAuth, Permission, Privilege, Isolation}

var tiers = []string{api.TierFoundation, api.TierEnterprise, api.TierAdvanced}

// Rank orders tiers: none 0, foundation 1, enterprise 2, advanced 3; -1
// for an unknown name.
func Rank(tier string) int {
	if tier == api.TierNone {
		return 0
	}
	if i := slices.Index(tiers, tier); i >= 0 {
		return i + 1
	}
	return -1
}

// Agents lists the registered agents (*identity.Service).
type Agents interface {
	ListAgents(ctx context.Context) ([]identity.Agent, error)
}

// Grants says how many grants are in force (*elevation.Service).
type Grants interface {
	Standing(ctx context.Context) (elevation.Standing, error)
}

// Deps are where the evidence comes from.
type Deps struct {
	Agents    Agents
	Events    audit.Reader
	PDP       reach.Freezer
	Manifests reach.ManifestSource
	Grants    Grants
	// TokenTTL is the access token lifetime the control plane issues.
	TokenTTL time.Duration
}

// Limits the criteria hold deployments to.
const (
	// MaxSVIDTTL is the longest X.509-SVID lifetime Enterprise allows.
	MaxSVIDTTL = time.Hour
	// MaxTokenTTL is the longest "minutes-long" token Foundation allows.
	MaxTokenTTL = 15 * time.Minute
	// sampleDecisions is how many recent decisions attribution is checked
	// on.
	sampleDecisions = 1000
)

// evidence is everything read once, for every criterion.
type evidence struct {
	at        time.Time
	agents    []identity.Agent
	issued    map[string]time.Time // agent SPIFFE ID -> first SVID issued
	renewed   map[string]int       // agent SPIFFE ID -> renewals
	revoked   int
	decisions []audit.Event
	gateways  map[string]api.GatewayReport // by name, the latest report
	frozen    *policy.Frozen
	policies  []policy.PolicyInfo
	resources []policy.Resource
	manifests []elevation.Manifest
	standing  elevation.Standing
	fleet     reach.Fleet
	tokenTTL  time.Duration
}

// Assess reads the evidence and judges every criterion.
func Assess(ctx context.Context, d Deps, at time.Time) (api.Assessment, error) {
	ev, err := gather(ctx, d, at)
	if err != nil {
		return api.Assessment{}, err
	}
	return judge(ev), nil
}

// judge judges every criterion on the evidence.
func judge(ev *evidence) api.Assessment {
	out := api.Assessment{At: ev.at}
	for _, s := range Surfaces {
		crit := criteria(ev, s)
		st := api.SurfaceTier{Surface: s, Tier: api.TierNone, Criteria: crit}
		for _, t := range tiers {
			if !allMet(crit, t) {
				break
			}
			st.Tier = t
		}
		out.Surfaces = append(out.Surfaces, st)
	}
	out.Stage, out.Next = stage(out.Surfaces)
	out.Lint = lint(ev)
	return out
}

func allMet(crit []api.AssessCriterion, tier string) bool {
	for _, c := range crit {
		if c.Tier == tier && !c.Met {
			return false
		}
	}
	return true
}

// stage places the deployment on the migration path: the stage it is
// working through — 0 until the keystone (Foundation identity and service
// auth) holds, 1 until every surface is at Foundation, 2 until every
// surface is at Enterprise, 3 until every surface is Advanced — and the
// unmet criteria that stage still needs (none once everything is
// Advanced).
func stage(surfaces []api.SurfaceTier) (int, []api.AssessCriterion) {
	at := map[string]int{}
	for _, s := range surfaces {
		at[s.Surface] = Rank(s.Tier)
	}
	steps := []struct {
		surfaces []string
		tier     string
	}{
		{[]string{Identity, ServiceAuth}, api.TierFoundation},
		{Surfaces, api.TierFoundation},
		{Surfaces, api.TierEnterprise},
		{Surfaces, api.TierAdvanced},
	}
	for i, step := range steps {
		var missing []api.AssessCriterion
		for _, s := range surfaces {
			if !slices.Contains(step.surfaces, s.Surface) || at[s.Surface] >= Rank(step.tier) {
				continue
			}
			for _, c := range s.Criteria {
				if !c.Met && Rank(c.Tier) <= Rank(step.tier) {
					missing = append(missing, c)
				}
			}
		}
		if len(missing) > 0 {
			return i, missing
		}
	}
	return len(steps) - 1, nil
}

// gather reads the evidence.
func gather(ctx context.Context, d Deps, at time.Time) (*evidence, error) {
	ev := &evidence{at: at, issued: map[string]time.Time{}, renewed: map[string]int{}, gateways: map[string]api.GatewayReport{}, tokenTTL: d.TokenTTL}
	var err error
	if ev.agents, err = d.Agents.ListAgents(ctx); err != nil {
		return nil, fmt.Errorf("assess: agents: %w", err)
	}
	rows, err := d.Events.Events(ctx, audit.Query{AfterSeq: -1, Decision: audit.Allow,
		Actions: []string{audit.ActionSVIDIssue, audit.ActionSVIDRenew, audit.ActionSVIDRevoke, audit.ActionAgentRevoke}})
	if err != nil {
		return nil, fmt.Errorf("assess: audit log: %w", err)
	}
	for _, r := range rows {
		e, err := audit.EventFromRow(r)
		if err != nil {
			return nil, fmt.Errorf("assess: audit log: %w", err)
		}
		switch e.Action {
		case audit.ActionSVIDIssue:
			if _, ok := ev.issued[e.Target]; !ok {
				ev.issued[e.Target] = e.Time
			}
		case audit.ActionSVIDRenew:
			ev.renewed[e.Target]++
		case audit.ActionSVIDRevoke, audit.ActionAgentRevoke:
			ev.revoked++
		}
	}
	if ev.gateways, err = reach.GatewayReports(ctx, d.Events); err != nil {
		return nil, fmt.Errorf("assess: %w", err)
	}
	rows, err = d.Events.Events(ctx, audit.Query{AfterSeq: -1, Actions: []string{"gateway.call_tool", "gateway.connect"}, Limit: sampleDecisions, Newest: true})
	if err != nil {
		return nil, fmt.Errorf("assess: audit log: %w", err)
	}
	for _, r := range rows {
		if e, err := audit.EventFromRow(r); err == nil {
			ev.decisions = append(ev.decisions, e)
		}
	}
	if ev.frozen, err = d.PDP.Freeze(nil); err != nil {
		return nil, fmt.Errorf("assess: policies: %w", err)
	}
	ev.policies, ev.resources = ev.frozen.Policies(), ev.frozen.Resources()
	stored, err := d.Manifests.Manifests(ctx)
	if err != nil {
		return nil, fmt.Errorf("assess: manifests: %w", err)
	}
	for _, m := range stored {
		ev.manifests = append(ev.manifests, m.Manifest)
	}
	if ev.standing, err = d.Grants.Standing(ctx); err != nil {
		return nil, fmt.Errorf("assess: grants: %w", err)
	}
	if ev.fleet, err = reach.All(ev.frozen, reach.Options{At: at, Manifests: ev.manifests}); err != nil {
		return nil, fmt.Errorf("assess: blast radius: %w", err)
	}
	return ev, nil
}

// active are the agents that may act.
func (ev *evidence) active() []identity.Agent {
	return slices.DeleteFunc(slices.Clone(ev.agents), func(a identity.Agent) bool { return a.Status != identity.StatusActive })
}
