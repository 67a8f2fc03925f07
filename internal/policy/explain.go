package policy

import (
	"context"
	"fmt"
	"slices"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Explanation is a decision with what made it: the determining policies
// and the ones that failed, with their text and place.
type Explanation struct {
	Decision
	// Request is the Cedar request as evaluated (with the PDP's time).
	Principal, Action, Resource string
	Context                     string // Cedar record syntax
	// Considered is how many policies the index selected for evaluation,
	// out of Total.
	Considered, Total int
	Determining       []PolicyInfo
	Failed            []PolicyInfo
}

// PolicyInfo describes one policy of a set.
type PolicyInfo struct {
	ID     string
	Effect string // "permit" or "forbid"
	File   string
	Line   int
	Column int
	Text   string
	Error  string // for a failed policy
}

// Explain decides a request without enforcing or recording it, against the
// live version (version 0), the shadow version (-1) or any stored version.
func (s *Service) Explain(ctx context.Context, req Request, version int64) (Explanation, error) {
	pr, err := req.prepare()
	if err != nil {
		return Explanation{}, err
	}
	return s.explain(ctx, pr, version)
}

func (s *Service) explain(ctx context.Context, pr *prepared, version int64) (Explanation, error) {
	snap, now, err := s.current()
	if err != nil {
		return Explanation{}, err
	}
	set := snap.live
	switch {
	case version == -1:
		if set = snap.shadow; set == nil {
			return Explanation{}, fmt.Errorf("%w: no shadow version is being evaluated", fault.NotFound)
		}
	case version > 0 && version != snap.live.number():
		if set, err = s.loadSet(ctx, version, snap); err != nil {
			return Explanation{}, err
		}
	}
	req := pr.build(now)
	ex := Explanation{Decision: Decision{ID: s.newID()}, Principal: req.Principal.String(), Action: req.Action.String(),
		Resource: req.Resource.String(), Context: req.Context.String()}
	if set == nil {
		return ex, nil
	}
	res := snap.evaluateWith(set, &view{}, pr, req)
	manifest, scoped := pr.requestManifest()
	ex.Version = set.version
	ex.Allowed, ex.Reasons, ex.Errors = conclude(res)
	if err := snap.world.checkPathArgs(req.Action, req.Resource, pr.ctx[ctxInput]); err != nil {
		// As Decide: refused whatever the policies say.
		ex.Allowed, ex.Reasons = false, []string{PathArgsReason + ": " + err.Error()}
	}
	ex.Considered, ex.Total = res.considered, set.Len()
	info := func(id string) PolicyInfo {
		if pi, ok := snap.managedInfo(manifest, id); scoped && ok {
			return pi
		}
		return set.info(id)
	}
	for _, id := range ex.Reasons {
		ex.Determining = append(ex.Determining, info(id))
	}
	for _, e := range ex.Errors {
		pi := info(e.PolicyID)
		pi.Error = e.Message
		ex.Failed = append(ex.Failed, pi)
	}
	return ex, nil
}

func (s *Set) info(id string) PolicyInfo {
	if pi, ok := s.infos.Load(id); ok {
		return pi.(PolicyInfo)
	}
	p, ok := s.Policy(id)
	if !ok {
		return PolicyInfo{ID: id}
	}
	pi := s.describe(id, p)
	s.infos.Store(id, pi)
	return pi
}

func (s *Set) describe(id string, p *cedar.Policy) PolicyInfo {
	pos := p.Position()
	effect := "permit"
	if p.Effect() == cedar.Forbid {
		effect = "forbid"
	}
	return PolicyInfo{ID: id, Effect: effect, File: pos.Filename, Line: pos.Line, Column: pos.Column, Text: string(p.MarshalCedar())}
}

// Policies lists a set's policies in file order.
func (s *Set) Policies() []PolicyInfo {
	out := make([]PolicyInfo, len(s.ids))
	for i, id := range s.ids {
		out[i] = s.info(string(id))
	}
	slices.SortStableFunc(out, func(a, b PolicyInfo) int {
		if a.File != b.File {
			return compareStrings(a.File, b.File)
		}
		return a.Line - b.Line
	})
	return out
}
