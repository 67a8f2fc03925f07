// Package reach computes an agent's blast radius: every (action,
// resource) of the catalog it can reach, and how — at baseline, in some
// context (tainted, at a risk level, at another time of day), through an
// elevation its manifests allow (and who must approve it), through
// arguments a policy condition admits, or through a sub-agent. Every
// answer comes from asking the real PDP (a policy.Frozen), over the finite
// catalog; conditions on arguments, which have infinitely many values, are
// reported as the conditions themselves.
//
// Each reachable item is weighted by the resource's sensitivity and
// effects and by how it is reached, giving a score per agent and for the
// fleet; a diff of two fleets (live policies and a candidate) is the
// review gate for a policy change.
package reach

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Oracle is the PDP held still: *policy.Frozen.
type Oracle interface {
	Decide(req policy.Request, at time.Time) (policy.Decision, error)
	Applicable(req policy.Request) ([]policy.PolicyInfo, error)
	Class(agent cedar.EntityUID) string
	Agents() []cedar.EntityUID
	Resources() []policy.Resource
}

// Ways an item is reached.
const (
	ViaBaseline   = "baseline"   // what the agent's roles allow, now
	ViaContext    = "context"    // only in a context other than the baseline's
	ViaTime       = "time"       // only at another time: a forbid that waits out
	ViaElevation  = "elevation"  // only while a grant of a manifest's trigger is in force
	ViaArguments  = "arguments"  // only with arguments a permit's condition admits
	ViaDelegation = "delegation" // a sub-agent reaches it though the agent does not
)

// The reports are the API's types.
type (
	Way    = api.ReachWay
	Item   = api.ReachItem
	Report = api.ReachReport
)

// Options are what an analysis asks about.
type Options struct {
	// At is the time decisions are made at.
	At time.Time
	// Manifests are the task manifests; an agent's elevations are the
	// triggers of the manifests it may open tasks of.
	Manifests []elevation.Manifest
	// Unshared analyses every agent on its own, even agents the PDP must
	// decide alike: slower, and the same answers (which tests check).
	Unshared bool
}

// contexts are the contexts tried beside the baseline's.
var contexts = []struct {
	name string
	ctx  policy.Context
}{
	{"tainted", policy.Context{Tainted: true}},
	{"risk 50", policy.Context{Risk: 50}},
	{"risk 100", policy.Context{Risk: 100}},
	// Policies may ask where the caller's key lives: what an agent reaches
	// once its key is in a TPM, or as a sub-agent of one, counts too.
	{"key in a TPM", policy.Context{Attestation: attestation.Claims{Protection: attestation.TPM, Method: attestation.MethodEKPinned}}},
	{"lineage from a TPM", policy.Context{Attestation: attestation.Claims{Protection: attestation.Software, Method: attestation.MethodLineage, Depth: 1}}},
}

// timeProbes are the times, after At, tried for an item a forbid on time
// denies: every hour of the next week.
const timeProbes = 7 * 24

// analysisTask is the task id elevation contexts name.
const analysisTask = "blast-radius"

// Actions are the actions the gateway asks about each kind of resource:
// the ones tried on it.
func Actions(t cedar.EntityType) []string {
	switch t {
	case policy.TypeTool:
		return []string{policy.ActionCallTool}
	case policy.TypeRoute:
		return []string{"GET", "POST", "PUT", "PATCH", "DELETE"}
	case policy.TypeHost:
		return []string{policy.ActionConnect}
	}
	return nil
}

// analysis computes reports, sharing the work of agents the PDP must
// decide alike.
type analysis struct {
	o         Oracle
	opts      Options
	resources []policy.Resource
	// byClass holds the items of a class, computed for its first agent
	// over every manifest; agents then keep their manifests' ways.
	byClass  map[string]classResult
	computed int // analyses made
}

type classResult struct {
	items    []Item
	findings []string
}

func newAnalysis(o Oracle, opts Options) *analysis {
	if opts.At.IsZero() {
		opts.At = time.Now()
	}
	return &analysis{o: o, opts: opts, resources: o.Resources(), byClass: map[string]classResult{}}
}

// Agent computes one agent's blast radius.
func Agent(o Oracle, agent cedar.EntityUID, opts Options) (Report, error) {
	return newAnalysis(o, opts).agent(agent)
}

func (a *analysis) agent(agent cedar.EntityUID) (Report, error) {
	class := ""
	if !a.opts.Unshared {
		class = a.o.Class(agent)
	}
	cr, ok := a.byClass[class]
	if !ok || class == "" {
		var err error
		if cr, err = a.compute(agent); err != nil {
			return Report{}, err
		}
		if class != "" {
			a.byClass[class] = cr
		}
	}
	rep := Report{Agent: string(agent.ID), At: a.opts.At, Findings: cr.findings}
	allowed := map[string]bool{}
	for _, m := range a.opts.Manifests {
		if m.AllowsAgent(string(agent.ID)) {
			allowed[m.Name] = true
		}
	}
	for _, it := range cr.items {
		// Only the elevations of manifests this agent may open tasks of.
		ways := slices.DeleteFunc(slices.Clone(it.Ways), func(w Way) bool { return w.Via == ViaElevation && !allowed[w.Manifest] })
		if len(ways) == 0 {
			continue
		}
		it.Ways = ways
		it.Weight = weight(it.Sensitivity, it.Effects, ways)
		rep.Items = append(rep.Items, it)
		rep.Score += it.Weight
	}
	return rep, nil
}

// compute asks the PDP about every resource for agent, with every
// manifest's triggers.
func (a *analysis) compute(agent cedar.EntityUID) (classResult, error) {
	a.computed++
	var out classResult
	sub := cedar.NewEntityUID(policy.TypeAgent, cedar.String(string(agent.ID)+"/sub/blast-radius"))
	for _, r := range a.resources {
		for _, action := range Actions(r.UID.Type) {
			it, reached, err := a.item(agent, action, r)
			if err != nil {
				return out, err
			}
			// Delegation: a sub-agent is bounded by its parent.
			d, err := a.o.Decide(policy.Request{Principal: sub, Action: policy.Action(action), Resource: r.UID}, a.opts.At)
			if err != nil {
				return out, err
			}
			atBaseline := slices.ContainsFunc(it.Ways, func(w Way) bool { return w.Via == ViaBaseline })
			if d.Allowed && !atBaseline {
				out.findings = append(out.findings, fmt.Sprintf("a sub-agent reaches %s %s, which its parent does not at baseline (policies %s)",
					action, r.UID, strings.Join(d.Reasons, ", ")))
				it.Ways = append(it.Ways, Way{Via: ViaDelegation, Context: "as a sub-agent", Policies: d.Reasons})
				reached = true
			}
			if reached {
				out.items = append(out.items, it)
			}
		}
	}
	return out, nil
}

// item finds the ways agent reaches action on r.
func (a *analysis) item(agent cedar.EntityUID, action string, r policy.Resource) (Item, bool, error) {
	it := Item{Action: action, Resource: r.UID.String(), Server: r.Server, Sensitivity: r.Sensitivity, Effects: r.Effects}
	req := policy.Request{Principal: agent, Action: policy.Action(action), Resource: r.UID}
	base, err := a.o.Decide(req, a.opts.At)
	if err != nil {
		return it, false, err
	}
	if base.Allowed {
		it.Ways = append(it.Ways, Way{Via: ViaBaseline, Context: "untainted, risk 0", Policies: base.Reasons})
	}
	for _, c := range contexts {
		q := req
		q.Context = c.ctx
		d, err := a.o.Decide(q, a.opts.At)
		if err != nil {
			return it, false, err
		}
		switch {
		case base.Allowed && !d.Allowed:
			it.Unless = append(it.Unless, c.name)
		case !base.Allowed && d.Allowed:
			it.Ways = append(it.Ways, Way{Via: ViaContext, Context: c.name, Policies: d.Reasons})
		}
	}
	if !base.Allowed {
		if err := a.other(req, base, &it); err != nil {
			return it, false, err
		}
	}
	for _, m := range a.opts.Manifests {
		for _, t := range m.EscalationTriggers {
			q := req
			q.Context = policy.Context{Task: analysisTask, Manifest: m.Name, Grants: []string{elevation.GrantName(m.Name, t.Name)}}
			d, err := a.o.Decide(q, a.opts.At)
			if err != nil {
				return it, false, err
			}
			switch {
			case d.Allowed && !base.Allowed:
				it.Ways = append(it.Ways, Way{Via: ViaElevation, Context: "with grant " + elevation.GrantName(m.Name, t.Name),
					Manifest: m.Name, Trigger: t.Name, Approval: t.Approval, Policies: d.Reasons})
			case !base.Allowed:
				// A grant whose permit reads the arguments allows for some
				// of them ("paths under /reports"): still what approving
				// it adds.
				w, err := a.conditionalGrant(q, m.Name, t)
				if err != nil {
					return it, false, err
				}
				if w != nil {
					it.Ways = append(it.Ways, *w)
				}
			}
		}
	}
	if len(it.Ways) == 0 {
		return it, false, nil
	}
	// Forbids that did not fire, but would for some arguments or at some
	// time: the conditions of the reach.
	app, err := a.o.Applicable(req)
	if err != nil {
		return it, false, err
	}
	for _, p := range app {
		if p.Effect == "forbid" && (strings.Contains(p.Text, "context.input") || strings.Contains(p.Text, "context.time")) &&
			!slices.Contains(base.Reasons, p.ID) {
			it.Unless = append(it.Unless, "forbid "+p.ID+": "+condition(p.Text))
		}
	}
	return it, true, nil
}

// conditionalGrant is the way a grant of trigger t reaches req under a
// condition of its permit: for some arguments (it reads context.input),
// or for a caller whose key is in a TPM or descends from one (it reads
// context.attestation).
func (a *analysis) conditionalGrant(q policy.Request, manifest string, t elevation.Trigger) (*Way, error) {
	app, err := a.o.Applicable(q)
	if err != nil {
		return nil, err
	}
	id := elevation.TriggerPolicyID(manifest, t.Name)
	way := func(when string, policies []string) *Way {
		return &Way{Via: ViaElevation, Context: "with grant " + elevation.GrantName(manifest, t.Name) + ", " + when,
			Manifest: manifest, Trigger: t.Name, Approval: t.Approval, Policies: policies}
	}
	for _, p := range app {
		if p.Effect != "permit" || p.ID != id {
			continue
		}
		if strings.Contains(p.Text, "context.input") {
			return way("when "+condition(p.Text), []string{p.ID}), nil
		}
		if !strings.Contains(p.Text, "context.attestation") {
			continue
		}
		for _, c := range contexts {
			if c.ctx.Attestation == (attestation.Claims{}) {
				continue
			}
			aq := q
			aq.Context.Attestation = c.ctx.Attestation
			d, err := a.o.Decide(aq, a.opts.At)
			if err != nil {
				return nil, err
			}
			if d.Allowed {
				return way("with the "+c.name, d.Reasons), nil
			}
		}
	}
	return nil, nil
}

// other finds what a denied baseline leaves open: another time, when a
// forbid on time denied it; arguments, when a permit's condition reads
// them.
func (a *analysis) other(req policy.Request, base policy.Decision, it *Item) error {
	timed := false
	for _, id := range base.Reasons {
		if p := a.policy(id); strings.Contains(p.Text, "context.time") {
			timed = true
		}
	}
	if timed {
		start := a.opts.At.Truncate(time.Hour)
		for h := 1; h <= timeProbes; h++ {
			at := start.Add(time.Duration(h) * time.Hour)
			d, err := a.o.Decide(req, at)
			if err != nil {
				return err
			}
			if d.Allowed {
				it.Ways = append(it.Ways, Way{Via: ViaTime, Context: "at " + at.UTC().Format(time.RFC3339) + " (the forbids " +
					strings.Join(base.Reasons, ", ") + " only throttle)", Policies: d.Reasons})
				return nil
			}
		}
	}
	app, err := a.o.Applicable(req)
	if err != nil {
		return err
	}
	for _, p := range app {
		if p.Effect == "permit" && strings.Contains(p.Text, "context.input") {
			it.Ways = append(it.Ways, Way{Via: ViaArguments, Context: "when " + condition(p.Text), Policies: []string{p.ID}})
		}
	}
	return nil
}

// policy describes a policy by id (operator's or managed).
func (a *analysis) policy(id string) policy.PolicyInfo {
	if f, ok := a.o.(interface {
		Policy(manifest, id string) policy.PolicyInfo
	}); ok {
		return f.Policy("", id)
	}
	return policy.PolicyInfo{ID: id}
}

// condition is a policy's when/unless clauses, on one line.
func condition(text string) string {
	for _, kw := range []string{"\nwhen", "\nunless", " when ", " unless "} {
		if i := strings.Index(text, kw); i >= 0 {
			text = text[i:]
			break
		}
	}
	return strings.TrimSuffix(strings.Join(strings.Fields(text), " "), ";")
}

// Weights of sensitivity and of how an item is reached.
var sensitivityWeight = map[string]float64{policy.SensitivityLow: 1, policy.SensitivityMedium: 3, policy.SensitivityHigh: 9}

// approvalFactor discounts an elevation by who must approve it: an agent
// can get one the approval policy grants alone at once; one that needs
// two people is far from a compromised agent's reach.
var approvalFactor = map[string]float64{elevation.ApprovalPolicy: 1, elevation.ApprovalHuman: 0.5, elevation.ApprovalTwoHumans: 0.25}

// weight is an item's sensitivity (×2 for a write) times the easiest way
// to it.
func weight(sensitivity, effects string, ways []Way) float64 {
	w, ok := sensitivityWeight[sensitivity]
	if !ok {
		w = sensitivityWeight[policy.SensitivityMedium]
	}
	if effects != policy.EffectsRead {
		w *= 2
	}
	best := 0.0
	for _, way := range ways {
		f := 1.0
		if way.Via == ViaElevation {
			if f = approvalFactor[way.Approval]; f == 0 {
				f = approvalFactor[elevation.ApprovalHuman]
			}
		}
		best = max(best, f)
	}
	return w * best
}
