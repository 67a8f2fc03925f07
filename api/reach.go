package api

import "time"

// BlastRadiusRequest asks what agents can reach: one agent (a name or
// SPIFFE ID) or, without Agent, the whole fleet; with Candidate (and/or
// CandidateManifests), also what they would add and remove if they were
// applied.
type BlastRadiusRequest struct {
	Agent     string       `json:"agent,omitempty"`
	Candidate []PolicyFile `json:"candidate,omitempty"`
	// CandidateManifests are task manifests (YAML) to analyse in place of
	// the stored ones of the same names (or beside them, for new names).
	CandidateManifests []string `json:"candidate_manifests,omitempty"`
	// At is the time decisions are made at; default now.
	At *time.Time `json:"at,omitempty"`
}

// BlastRadius answers a BlastRadiusRequest.
type BlastRadius struct {
	// Version is the live policy version analysed.
	Version int64      `json:"version"`
	At      time.Time  `json:"at"`
	Fleet   ReachFleet `json:"fleet"`
	Diff    *ReachDiff `json:"diff,omitempty"`
}

// ReachWay is one way an item is reached: Via is baseline, context,
// time, elevation, arguments or delegation.
type ReachWay struct {
	Via string `json:"via"`
	// Context says in which context the PDP allowed it: "untainted,
	// risk 0", "tainted", "at 2026-12-06T22:00:00Z", the grant, or the
	// condition on arguments.
	Context string `json:"context"`
	// Manifest, Trigger and Approval name an elevation.
	Manifest string `json:"manifest,omitempty"`
	Trigger  string `json:"trigger,omitempty"`
	Approval string `json:"approval,omitempty"`
	// Policies are the permits that allowed it.
	Policies []string `json:"policies,omitempty"`
}

// ReachItem is one (action, resource) an agent can reach.
type ReachItem struct {
	Action      string     `json:"action"`
	Resource    string     `json:"resource"`
	Server      string     `json:"server"`
	Sensitivity string     `json:"sensitivity"`
	Effects     string     `json:"effects"`
	Weight      float64    `json:"weight"`
	Ways        []ReachWay `json:"ways"`
	// Unless are the conditions under which it is denied after all: a
	// context the PDP denies it in ("tainted", "risk 100"), or a forbid
	// whose condition reads the arguments or the time.
	Unless []string `json:"unless,omitempty"`
}

// Key identifies an item across reports.
func (it ReachItem) Key() string { return it.Action + " " + it.Resource }

// ReachReport is one agent's blast radius.
type ReachReport struct {
	Agent string      `json:"agent"`
	At    time.Time   `json:"at"`
	Items []ReachItem `json:"items"`
	Score float64     `json:"score"`
	// Findings are what should not be: a sub-agent reaching more than its
	// parent.
	Findings []string `json:"findings,omitempty"`
	// Secrets are the secrets gateways inject into the servers it
	// reaches, and Egress the destinations those servers' sandboxes may
	// reach: what it uses without holding.
	Secrets []string `json:"secrets,omitempty"`
	Egress  []string `json:"egress,omitempty"`
}

// Count returns how many items are reached first by via.
func (r ReachReport) Count(via string) int {
	n := 0
	for _, it := range r.Items {
		if len(it.Ways) > 0 && it.Ways[0].Via == via {
			n++
		}
	}
	return n
}

// ReachFleet is the blast radius of every agent asked about.
type ReachFleet struct {
	Agents []ReachReport `json:"agents"`
	Score  float64       `json:"score"`
	// Analyses is how many agents the PDP had to be asked about: agents
	// with the same roles that no policy names share one analysis.
	Analyses int `json:"analyses"`
}

// ReachChange is what a candidate adds to or removes from one agent's
// reach.
type ReachChange struct {
	Agent   string      `json:"agent"`
	Added   []ReachItem `json:"added,omitempty"`
	Removed []ReachItem `json:"removed,omitempty"`
	Before  float64     `json:"score_before"`
	After   float64     `json:"score_after"`
}

// ReachDiff is what a candidate policy set changes in the fleet's reach.
type ReachDiff struct {
	Changes []ReachChange `json:"changes"`
	Before  float64       `json:"score_before"`
	After   float64       `json:"score_after"`
}

// Grew is the weight a candidate adds across the fleet (what the review
// gate compares with its threshold): the sum of added items' weights, so
// that removing one agent's reach never hides adding another's.
func (d ReachDiff) Grew() float64 {
	var w float64
	for _, c := range d.Changes {
		for _, it := range c.Added {
			w += it.Weight
		}
	}
	return w
}
