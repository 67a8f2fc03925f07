package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Frozen is what the PDP decides with at one moment — the world of agents
// and catalog, the live set (or a candidate in its place) and the
// manifests' managed sets — held still, for analyses that ask the PDP many
// questions and must get the PDP's answers (blast radius, assessments):
// its decisions take the very evaluation Decide takes, at a time the
// analysis chooses, and are neither observed nor recorded.
type Frozen struct {
	snap *snapshot
	set  *compiledSet
	// principalRead says some policy's condition reads the principal, so
	// agents that share roles may still be decided differently.
	principalRead bool
}

// Freeze returns the PDP's current state, with candidate (if not nil) in
// place of the live set and each of managed in place of the manifest of
// its name (or beside the others, for a new one): what the fleet could do
// if they were applied.
func (p *PDP) Freeze(candidate *Set, managed ...ManagedSet) (*Frozen, error) {
	snap, _, err := p.current()
	if err != nil {
		return nil, err
	}
	set := snap.live
	if candidate != nil {
		set = newCompiledSet(candidate)
	}
	if len(managed) > 0 {
		// A snapshot of its own: the PDP's is shared and never changes.
		own := &snapshot{generation: snap.generation, live: snap.live, shadow: snap.shadow, world: snap.world,
			managed: make(map[string]*managedEntry, len(snap.managed)+len(managed))}
		for name, e := range snap.managed {
			own.managed[name] = e
		}
		schema := set
		if schema == nil {
			schema = &compiledSet{}
		}
		for _, m := range managed {
			cs, err := compileManaged(schema.Set, m)
			if err != nil {
				return nil, fmt.Errorf("policy: manifest %s: %w", m.Name, err)
			}
			own.managed[m.Name] = &managedEntry{set: cs}
		}
		snap = own
	}
	return freeze(snap, set), nil
}

func freeze(snap *snapshot, set *compiledSet) *Frozen {
	f := &Frozen{snap: snap, set: set}
	var sets []*Set
	if set != nil {
		sets = append(sets, set.Set)
	}
	for _, e := range snap.managed {
		if e.set != nil {
			sets = append(sets, e.set.Set)
		}
	}
	for _, s := range sets {
		for _, p := range s.policies {
			if readsPrincipal(p) {
				f.principalRead = true
			}
		}
	}
	return f
}

// principalWord finds the principal variable in a policy's text.
var principalWord = regexp.MustCompile(`\bprincipal\b`)

// readsPrincipal reports whether p's conditions (not only its scope)
// mention the principal. The scope's own mention is the first; a string
// that happens to hold the word errs on the safe side.
func readsPrincipal(p *cedar.Policy) bool {
	return len(principalWord.FindAllIndex(p.MarshalCedar(), 2)) > 1
}

// Version is the number of the set decisions use (0 for a candidate).
func (f *Frozen) Version() int64 {
	if f.set == nil {
		return 0
	}
	return f.set.version
}

// Decide decides req as the PDP would at time at.
func (f *Frozen) Decide(req Request, at time.Time) (Decision, error) {
	pr, err := req.prepare()
	if err != nil {
		return Decision{}, err
	}
	r := pr.build(at)
	var d Decision
	if err := f.snap.world.checkPathArgs(r.Action, r.Resource, pr.ctx[ctxInput]); err != nil {
		d.Reasons = []string{PathArgsReason + ": " + err.Error()}
		return d, nil
	}
	res := f.snap.evaluateWith(f.set, &pr.view, pr, r)
	d.Version = f.Version()
	d.Allowed, d.Reasons, d.Errors = conclude(res)
	d.ReadOnly = d.Allowed && f.snap.world.readOnly[r.Resource]
	if d.Allowed {
		d.Sensitivity = f.snap.world.sensitivity[r.Resource]
	}
	return d, nil
}

// Policy describes a policy of the frozen sets by id, looking in the
// manifest's managed set first when one is named.
func (f *Frozen) Policy(manifest, id string) PolicyInfo {
	if pi, ok := f.snap.managedInfo(manifest, id); manifest != "" && ok {
		return pi
	}
	if f.set == nil {
		return PolicyInfo{ID: id}
	}
	return f.set.info(id)
}

// Applicable lists the policies whose scope matches req (principal,
// action and resource, through the index, as the PDP selects them before
// evaluating their conditions), with the manifest's when req names one:
// the conditions that could change req's answer.
func (f *Frozen) Applicable(req Request) ([]PolicyInfo, error) {
	pr, err := req.prepare()
	if err != nil {
		return nil, err
	}
	r := pr.build(time.Time{})
	v := &pr.view
	var out []PolicyInfo
	collect := func(set *compiledSet, manifest string) {
		if set == nil {
			return
		}
		v.reset(f.snap.world)
		v.addAgent(r.Principal)
		v.useActions(set.actions)
		a := set.index.actions.requestKeys(nil, r.Action, v.ancestors(r.Action))
		res := set.index.res.requestKeys(nil, r.Resource, v.ancestors(r.Resource))
		own, buckets := v.principalBuckets(set.index, r.Principal)
		for _, e := range candidates(nil, own, buckets, a, res) {
			out = append(out, f.Policy(manifest, string(e.id)))
		}
	}
	collect(f.set, "")
	if manifest, ok := pr.requestManifest(); ok {
		if e := f.snap.managed[manifest]; e != nil {
			collect(e.set, manifest)
		}
	}
	slices.SortFunc(out, func(a, b PolicyInfo) int { return strings.Compare(a.ID, b.ID) })
	return slices.CompactFunc(out, func(a, b PolicyInfo) bool { return a.ID == b.ID }), nil
}

// Class returns a key shared by agents the frozen sets must decide alike
// for every action, resource and context: agents with the same ancestors
// (roles, and a sub-agent's parents) that no policy names in its scope,
// when no condition reads the principal. "" means the agent must be
// decided on its own.
func (f *Frozen) Class(agent cedar.EntityUID) string {
	if f.principalRead || f.set == nil {
		return ""
	}
	n := f.snap.world.node(agent)
	if n == nil {
		return ""
	}
	ix := f.set.index
	if _, named := ix.eq[agent]; named {
		return ""
	}
	if _, named := ix.in[agent]; named {
		return ""
	}
	for _, e := range f.snap.managed {
		if e.set != nil {
			if _, named := e.set.index.eq[agent]; named {
				return ""
			}
			if _, named := e.set.index.in[agent]; named {
				return ""
			}
		}
	}
	anc := make([]string, len(n.ancestors))
	for i, a := range n.ancestors {
		anc[i] = a.String()
	}
	slices.Sort(anc)
	return strings.Join(anc, ",")
}

// Agents lists the world's agents, sorted.
func (f *Frozen) Agents() []cedar.EntityUID {
	out := make([]cedar.EntityUID, 0, len(f.snap.world.agents))
	for uid := range f.snap.world.agents {
		out = append(out, uid)
	}
	slices.SortFunc(out, func(a, b cedar.EntityUID) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}

// Resource is a catalog entry as the PDP holds it.
type Resource struct {
	UID             cedar.EntityUID
	Server          string
	Name            string
	Sensitivity     string
	Effects         string
	UntrustedOutput bool
}

// Resources lists the catalog's tools, routes and hosts, sorted.
func (f *Frozen) Resources() []Resource {
	var out []Resource
	for uid, n := range f.snap.world.others {
		if uid.Type != TypeTool && uid.Type != TypeRoute && uid.Type != TypeHost {
			continue
		}
		attr := func(name string) cedar.Value {
			v, _ := n.entity.Attributes.Get(cedar.String(name))
			return v
		}
		str := func(name string) string {
			s, _ := attr(name).(cedar.String)
			return string(s)
		}
		server, name, _ := strings.Cut(string(uid.ID), "/")
		untrusted, _ := attr("untrusted_output").(cedar.Boolean)
		out = append(out, Resource{UID: uid, Server: server, Name: name, Sensitivity: str("sensitivity"),
			Effects: str("effects"), UntrustedOutput: bool(untrusted)})
	}
	slices.SortFunc(out, func(a, b Resource) int { return strings.Compare(a.UID.String(), b.UID.String()) })
	return out
}

// CompileCandidate compiles a candidate policy set for Freeze, checking
// it as Apply would.
func CompileCandidate(files []File) (*Set, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: a candidate policy set needs at least one file", fault.Invalid)
	}
	return Compile(files)
}

// FreezeWorld builds a Frozen PDP from parts rather than from a store:
// set (nil: nothing applied), the agents with their roles, the catalog
// and the manifests' managed sets. An analysis of files on disk, and
// tests whose worlds are built by construction, use it.
func FreezeWorld(td spiffeid.TrustDomain, set *Set, agents []AgentRoles, cat Catalog, managed []ManagedSet) (*Frozen, error) {
	snap := &snapshot{world: newWorld(td, agents, cat), managed: map[string]*managedEntry{}}
	if set != nil {
		snap.live = newCompiledSet(set)
		snap.world.link(snap.live.index)
	}
	for _, m := range managed {
		cs, err := compileManaged(set, m)
		if err != nil {
			return nil, fmt.Errorf("policy: manifest %s: %w", m.Name, err)
		}
		snap.managed[m.Name] = &managedEntry{set: cs}
	}
	return freeze(snap, snap.live), nil
}

// Policies lists the frozen set's policies (the operator's, not the
// manifests'), in file order.
func (f *Frozen) Policies() []PolicyInfo {
	if f.set == nil {
		return nil
	}
	return f.set.Policies()
}
