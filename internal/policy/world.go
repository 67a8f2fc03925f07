package policy

import (
	"fmt"
	"strings"

	"github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/canonpath"
)

// node is an entity with its ancestors (transitive parents), computed once.
type node struct {
	entity    cedar.Entity
	ancestors []cedar.EntityUID
}

// ancestry is an EntityGetter that also lists an entity's ancestors, as
// cedar-go's "in" would find them, and the index buckets of a principal.
type ancestry interface {
	cedar.EntityGetter
	ancestors(uid cedar.EntityUID) []cedar.EntityUID
	// principalBuckets returns the entries and buckets a principal looks
	// up in ix (see index.link).
	principalBuckets(ix *index, uid cedar.EntityUID) (own []entry, buckets []*bucket)
}

// AgentRoles is an active registered agent and the roles it holds.
type AgentRoles struct {
	Name     string
	SPIFFEID string
	Roles    []string
}

// world is the entities Bulkhead's store defines: agents with their roles,
// and the tool catalog. It is immutable once built.
type world struct {
	td spiffeid.TrustDomain
	// agents and others hold the entities: apart, so that looking up one
	// of a few hundred tools does not wander through a table the size of
	// the fleet.
	agents map[cedar.EntityUID]*node
	others map[cedar.EntityUID]*node
	// links are, for the index linkedTo (the live set's), what each of
	// the world's entities looks up as a principal.
	linkedTo *index
	links    map[cedar.EntityUID]link
	// pathArgs are the tools' arguments that must be canonical paths.
	pathArgs map[cedar.EntityUID][]string
	// readOnly are the tools and routes declared effects: read.
	readOnly map[cedar.EntityUID]bool
	// sensitivity is every tool's, route's and host's sensitivity.
	sensitivity map[cedar.EntityUID]string
}

func newWorld(td spiffeid.TrustDomain, agents []AgentRoles, cat Catalog) *world {
	w := &world{td: td, agents: map[cedar.EntityUID]*node{}, others: map[cedar.EntityUID]*node{}, pathArgs: cat.pathArgs(), readOnly: cat.readOnly(),
		sensitivity: cat.sensitivities()}
	ents := cedar.EntityMap{}
	add := func(e cedar.Entity) { ents[e.UID] = e }
	for _, a := range agents {
		p, ok := parseAgentID(a.SPIFFEID)
		if !ok {
			continue
		}
		parents := make([]cedar.EntityUID, 0, len(a.Roles))
		for _, r := range a.Roles {
			parents = append(parents, Role(r))
			add(cedar.Entity{UID: Role(r)})
		}
		add(agentEntity(p, parents))
	}
	for _, e := range cat.entities() {
		add(e)
	}
	for uid, e := range ents {
		w.add(&node{entity: e, ancestors: closure(ents, uid)})
	}
	return w
}

func (w *world) add(n *node) {
	if n.entity.UID.Type == TypeAgent {
		w.agents[n.entity.UID] = n
	} else {
		w.others[n.entity.UID] = n
	}
}

func (w *world) node(uid cedar.EntityUID) *node {
	if uid.Type == TypeAgent {
		return w.agents[uid]
	}
	return w.others[uid]
}

// all calls fn for every entity.
func (w *world) all(fn func(cedar.EntityUID, *node)) {
	for _, m := range []map[cedar.EntityUID]*node{w.agents, w.others} {
		for uid, n := range m {
			fn(uid, n)
		}
	}
}

// link computes what each of the world's entities looks up as a principal
// in ix. The world must not be in use yet: it is immutable once a snapshot
// is published.
func (w *world) link(ix *index) {
	w.links = make(map[cedar.EntityUID]link, len(w.agents)+len(w.others))
	// Keys named by policies first, so that the map's key is the very
	// string the policy compares with: looking a principal up then reads
	// the memory its policy evaluation reads anyway, which in a large
	// fleet saves a cache and TLB miss per decision.
	for _, m := range []map[cedar.EntityUID]*bucket{ix.eq, ix.in} {
		for uid := range m {
			if _, done := w.links[uid]; done {
				continue
			}
			if n := w.node(uid); n != nil && !isActionType(uid.Type) {
				w.links[uid] = ix.link(uid, n.ancestors)
			}
		}
	}
	w.all(func(uid cedar.EntityUID, n *node) {
		if _, done := w.links[uid]; !done && !isActionType(uid.Type) {
			w.links[uid] = ix.link(uid, n.ancestors)
		}
	})
	w.linkedTo = ix
}

// agentEntity builds the Agent entity for a parsed SPIFFE ID. Its parents
// are its roles and, for a sub-agent, the agent that spawned it, so that a
// sub-agent is "in" its parent and, through it, in its parent's roles.
func agentEntity(p agentPath, roles []cedar.EntityUID) cedar.Entity {
	uid := Agent(p.id)
	root := uid
	parents := roles
	chain := make([]cedar.Value, 0, len(p.chain))
	attrs := cedar.RecordMap{
		"name":         cedar.String(p.name),
		"trust_domain": cedar.String(p.id.TrustDomain().Name()),
		"depth":        cedar.Long(len(p.chain)),
	}
	if len(p.chain) > 0 {
		parent := Agent(p.chain[0])
		parents = append(parents[:len(parents):len(parents)], parent)
		attrs["parent"] = parent
		for _, c := range p.chain {
			chain = append(chain, Agent(c))
		}
		root = Agent(p.chain[len(p.chain)-1])
	}
	attrs["chain"] = cedar.NewSet(chain...)
	attrs["root"] = root
	return cedar.Entity{UID: uid, Parents: cedar.NewEntityUIDSet(parents...), Attributes: cedar.NewRecord(attrs)}
}

// closure returns uid's ancestors: every parent, and the parents of every
// parent that exists, as cedar-go's "in" walks them (cycles included).
func closure(g cedar.EntityGetter, uid cedar.EntityUID) []cedar.EntityUID {
	e, ok := g.Get(uid)
	if !ok || e.Parents.Len() == 0 {
		return nil
	}
	var out []cedar.EntityUID
	seen := map[cedar.EntityUID]bool{uid: true}
	todo := []cedar.EntityUID{uid}
	for len(todo) > 0 {
		cur := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		ce, ok := g.Get(cur)
		if !ok {
			continue
		}
		for p := range ce.Parents.All() {
			if seen[p] {
				continue
			}
			seen[p] = true
			out = append(out, p)
			todo = append(todo, p)
		}
	}
	return out
}

func isActionType(t cedar.EntityType) bool {
	return t == TypeAction || strings.HasSuffix(string(t), "::Action")
}

// view is the entities one evaluation sees: the world, the policy set's
// action entities, and entities the request brings (a sub-agent, or
// entities of operator-defined types). Request entities never replace the
// store's: Bulkhead's own types are refused at the edge (see request).
type view struct {
	w       *world
	actions map[cedar.EntityUID]*node
	extra   []*node
	// recent remembers the last lookups: one evaluation asks for the
	// request's principal and resource several times, and in a large
	// world each map lookup is a cache miss.
	recent [4]*node
	next   int
	own    []entry // buffer for principalBuckets
	// The last link looked up (see linked).
	link    link
	linkUID cedar.EntityUID
	hasLink bool
}

var _ ancestry = (*view)(nil)

func (v *view) node(uid cedar.EntityUID) *node {
	for _, n := range v.recent {
		if n != nil && n.entity.UID == uid {
			return n
		}
	}
	n := v.lookup(uid)
	if n != nil {
		v.recent[v.next] = n
		v.next = (v.next + 1) % len(v.recent)
	}
	return n
}

func (v *view) lookup(uid cedar.EntityUID) *node {
	for _, n := range v.extra {
		if n.entity.UID == uid {
			return n
		}
	}
	if isActionType(uid.Type) {
		return v.actions[uid]
	}
	if v.w == nil {
		return nil
	}
	return v.w.node(uid)
}

// reset empties the view for another request over w.
func (v *view) reset(w *world) {
	clear(v.own)
	clear(v.extra) // the pool must not keep a request's entities alive
	v.w, v.actions, v.extra, v.recent, v.next, v.own = w, nil, v.extra[:0], [4]*node{}, 0, v.own[:0]
	v.link, v.linkUID, v.hasLink = link{}, cedar.EntityUID{}, false
}

// useActions switches the view to another policy set's actions.
func (v *view) useActions(a map[cedar.EntityUID]*node) {
	v.actions = a
	for i, n := range v.recent {
		if n != nil && isActionType(n.entity.UID.Type) {
			v.recent[i] = nil
		}
	}
}

// Get implements cedar.EntityGetter.
func (v *view) Get(uid cedar.EntityUID) (cedar.Entity, bool) {
	if n := v.node(uid); n != nil {
		return n.entity, true
	}
	return cedar.Entity{}, false
}

func (v *view) ancestors(uid cedar.EntityUID) []cedar.EntityUID {
	n := v.node(uid)
	if n == nil {
		return nil
	}
	if n.ancestors == nil && n.entity.Parents.Len() > 0 {
		n.ancestors = closure(v, uid)
	}
	return n.ancestors
}

func (v *view) principalBuckets(ix *index, uid cedar.EntityUID) ([]entry, []*bucket) {
	if v.linked(ix, uid) {
		l := &v.link
		v.own = append(append(v.own[:0], l.own[:l.nOwn]...), l.more...)
		return v.own, l.shared
	}
	return nil, ix.principalBuckets(uid, v.ancestors(uid))
}

// linked reports whether the world knows uid and has linked it to ix
// (then it needs no entity synthesized for it), keeping the link.
func (v *view) linked(ix *index, uid cedar.EntityUID) bool {
	if v.w == nil || v.w.linkedTo != ix {
		return false
	}
	if v.hasLink && v.linkUID == uid {
		return true
	}
	l, ok := v.w.links[uid]
	v.link, v.linkUID, v.hasLink = l, uid, ok
	return ok
}

// addAgent adds the entity of an agent SPIFFE ID the world does not hold:
// a sub-agent (and any ancestors the world lacks), or a registered agent
// that has no roles yet. It is a no-op for anything else.
func (v *view) addAgent(uid cedar.EntityUID) {
	if uid.Type != TypeAgent || v.node(uid) != nil {
		return
	}
	p, ok := parseAgentID(string(uid.ID))
	if !ok {
		return
	}
	v.extra = append(v.extra, &node{entity: agentEntity(p, nil)})
	if len(p.chain) > 0 {
		v.addAgent(Agent(p.chain[0]))
	}
}

func actionNodes(s *Schema) map[cedar.EntityUID]*node {
	ents := cedar.EntityMap{}
	for uid, e := range s.actions {
		ents[uid] = e
	}
	out := make(map[cedar.EntityUID]*node, len(ents))
	for uid, e := range ents {
		out[uid] = &node{entity: e, ancestors: closure(ents, uid)}
	}
	return out
}

// checkPathArgs refuses a call to a tool whose path arguments (a string,
// or a set of strings) are not canonical: the tool would act on another
// path than the one policy compared.
func (w *world) checkPathArgs(action, resource cedar.EntityUID, input cedar.Value) error {
	names := w.pathArgs[resource]
	if len(names) == 0 || action != Action(ActionCallTool) {
		return nil
	}
	rec, _ := input.(cedar.Record)
	for _, name := range names {
		v, ok := rec.Get(cedar.String(name))
		if !ok {
			continue
		}
		var vals []cedar.Value
		switch t := v.(type) {
		case cedar.String:
			vals = []cedar.Value{t}
		case cedar.Set:
			for e := range t.All() {
				vals = append(vals, e)
			}
		default:
			return fmt.Errorf("argument %q is a path and must be a string or a list of strings", name)
		}
		for _, e := range vals {
			s, ok := e.(cedar.String)
			if !ok {
				return fmt.Errorf("argument %q is a path and must be a string or a list of strings", name)
			}
			if err := canonpath.Arg(string(s)); err != nil {
				return fmt.Errorf("argument %q: %w", name, err)
			}
		}
	}
	return nil
}
