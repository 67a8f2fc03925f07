package reach

import (
	"slices"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
)

// Fleet, Change and Diff are the API's types.
type (
	Fleet  = api.ReachFleet
	Change = api.ReachChange
	Diff   = api.ReachDiff
)

// All computes the blast radius of every agent the oracle knows.
func All(o Oracle, opts Options) (Fleet, error) {
	a := newAnalysis(o, opts)
	var f Fleet
	for _, agent := range o.Agents() {
		r, err := a.agent(agent)
		if err != nil {
			return Fleet{}, err
		}
		f.Agents = append(f.Agents, r)
		f.Score += r.Score
	}
	f.Analyses = a.computed
	return f, nil
}

// Compare returns what after adds to and removes from before, per agent.
// An item reached both ways but more easily (a new way, e.g. baseline
// where an elevation was needed) counts as added with its new weight
// minus its old.
func Compare(before, after Fleet) Diff {
	d := Diff{Before: before.Score, After: after.Score}
	old := map[string]Report{}
	for _, r := range before.Agents {
		old[r.Agent] = r
	}
	seen := map[string]bool{}
	for _, r := range after.Agents {
		seen[r.Agent] = true
		if c := compareReports(old[r.Agent], r); len(c.Added)+len(c.Removed) > 0 {
			d.Changes = append(d.Changes, c)
		}
	}
	for _, r := range before.Agents {
		if !seen[r.Agent] {
			d.Changes = append(d.Changes, Change{Agent: r.Agent, Removed: r.Items, Before: r.Score})
		}
	}
	slices.SortFunc(d.Changes, func(a, b Change) int { return strings.Compare(a.Agent, b.Agent) })
	return d
}

func compareReports(before, after Report) Change {
	c := Change{Agent: after.Agent, Before: before.Score, After: after.Score}
	old := map[string]Item{}
	for _, it := range before.Items {
		old[it.Key()] = it
	}
	for _, it := range after.Items {
		prev, ok := old[it.Key()]
		delete(old, it.Key())
		switch {
		case !ok:
			c.Added = append(c.Added, it)
		case it.Weight > prev.Weight:
			grown := it
			grown.Weight = it.Weight - prev.Weight
			c.Added = append(c.Added, grown)
		case lostConditions(prev.Unless, it.Unless):
			// The same reach with fewer conditions against it (a guardrail
			// removed) is a loosening: it counts in full.
			c.Added = append(c.Added, it)
		}
	}
	for _, it := range before.Items {
		if _, gone := old[it.Key()]; gone {
			c.Removed = append(c.Removed, it)
		}
	}
	return c
}

// lostConditions reports whether a condition of before is gone in after.
func lostConditions(before, after []string) bool {
	for _, u := range before {
		if !slices.Contains(after, u) {
			return true
		}
	}
	return false
}
