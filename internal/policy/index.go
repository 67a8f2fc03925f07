package policy

import (
	"slices"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/ast"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// The index files each policy under the keys of its principal, action and
// resource scopes, so that a request evaluates only the policies whose scope
// can match it instead of the whole set.
//
// A scope constrains a request entity in one of four ways, and each gives a
// key the request can look up:
//
//	principal                       any
//	principal == E, principal in E  E: the request entity is E or has E as an ancestor
//	principal is T                  the type T
//	principal is T in E             E (the type is checked when the policy runs)
//
// A request looks up "any", its entity's type, the entity itself and each
// of its ancestors, in each dimension. Every policy whose scope matches is
// found (the index may also return a few that do not match, e.g. == E when E
// is only an ancestor); each candidate is then evaluated in full by cedar-go,
// scope and conditions, so the index decides nothing by itself. A policy
// whose scope does not match cannot produce an error either: cedar-go
// checks the scope first and skips the conditions.
//
// The index is exact, not merely a filter: "== E" and "in E" are filed
// apart, so a request looks "== E" up for its own entity only and "in E"
// for itself and its ancestors, and every candidate found has a matching
// scope (the one exception is "is T in E", whose type the policy checks).
// That lets policies that differ only in their scope share one compiled
// body: a fleet's per-agent grants are mostly one template with different
// entities, and evaluating a shared body that stays in cache, instead of
// each agent's own copy, is what keeps a decision's cost flat as the fleet
// grows. cedar-go evaluates the shared body under the policy's own id, so
// its reasons and errors are the policy's.
//
// The principal level is keyed by the entity itself (a fleet of agents
// makes it the largest); the action and resource levels use small interned
// integer keys, so a request hashes each of its actions and resources once,
// skips those no policy names, and walks the rest with integer lookups.
// With a fleet of agents most of a decision's time is cache misses, so an
// entry carries its policy (no second array to visit) and the PDP links
// each known principal to its entries ahead of time (see world.link).

// key is an interned action or resource key: keyAny, or an interned id
// shifted left by two, the low bits telling which scope names it.
type key uint32

const keyAny key = 0

// Kinds of key, in its low two bits.
const (
	kindIn   key = 0 // "in E": matches E and its descendants
	kindType key = 1 // "is T"
	kindEq   key = 2 // "== E": matches E only
)

// named is an entity some scope names, and how.
type named struct {
	id     uint32
	eq, in bool
}

// interner assigns keys to the entities and types one dimension's scopes
// name.
type interner struct {
	entities map[cedar.EntityUID]named
	types    map[cedar.EntityType]key
}

func newInterner() interner {
	return interner{entities: map[cedar.EntityUID]named{}, types: map[cedar.EntityType]key{}}
}

func (in interner) nextID() uint32 { return uint32(len(in.entities) + len(in.types) + 1) }

// entityKey returns the key of "== uid" (eq) or "in uid".
func (in interner) entityKey(uid cedar.EntityUID, eq bool) key {
	n, ok := in.entities[uid]
	if !ok {
		n.id = in.nextID()
	}
	if eq {
		n.eq = true
	} else {
		n.in = true
	}
	in.entities[uid] = n
	return n.key(eq)
}

func (n named) key(eq bool) key {
	if eq {
		return key(n.id)<<2 | kindEq
	}
	return key(n.id)<<2 | kindIn
}

func (in interner) typeKey(t cedar.EntityType) key {
	k, ok := in.types[t]
	if !ok {
		k = key(in.nextID())<<2 | kindType
		in.types[t] = k
	}
	return k
}

// keys returns the keys a scope is filed under. An empty set ("action in
// []") matches nothing and gets no key.
func (in interner) keys(s xast.IsScopeNode) []key {
	switch t := s.(type) {
	case xast.ScopeTypeAll:
		return []key{keyAny}
	case xast.ScopeTypeEq:
		return []key{in.entityKey(t.Entity, true)}
	case xast.ScopeTypeIn:
		return []key{in.entityKey(t.Entity, false)}
	case xast.ScopeTypeIs:
		return []key{in.typeKey(t.Type)}
	case xast.ScopeTypeIsIn:
		return []key{in.entityKey(t.Entity, false)}
	case xast.ScopeTypeInSet:
		out := make([]key, 0, len(t.Entities))
		for _, e := range t.Entities {
			if k := in.entityKey(e, false); !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
		return out
	}
	// An unknown scope kind (a newer cedar-go) is filed under "any": always
	// a candidate, never missed (and never shares its body: see exact).
	return []key{keyAny}
}

// requestKeys appends the keys a request entity looks up: any, its type,
// "== itself", "in itself" and "in" each of its ancestors, leaving out
// those no policy names.
func (in interner) requestKeys(dst []key, uid cedar.EntityUID, ancestors []cedar.EntityUID) []key {
	dst = append(dst, keyAny)
	if k, ok := in.types[uid.Type]; ok {
		dst = append(dst, k)
	}
	if n, ok := in.entities[uid]; ok {
		if n.eq {
			dst = append(dst, n.key(true))
		}
		if n.in {
			dst = append(dst, n.key(false))
		}
	}
	for _, a := range ancestors {
		if n, ok := in.entities[a]; ok && n.in && a != uid && !slices.Contains(dst, n.key(false)) {
			dst = append(dst, n.key(false))
		}
	}
	return dst
}

// entry is one filing of a policy.
type entry struct {
	action, resource key
	// pos is the policy's position in its set; multi says it is filed
	// more than once (action in [A, B]), so a request may find it twice.
	pos   int32
	multi bool
	id    cedar.PolicyID
	// eval is what cedar-go evaluates for the policy: its shared body
	// when the index checks its scope exactly, else the policy itself.
	eval *cedar.Policy
}

// bucket holds the policies of one principal key. Most buckets are small
// (one agent's few policies), and a short list scanned in place costs
// fewer cache misses than maps; a large one (a popular role) is a map of
// action key → resource key → entries.
type bucket struct {
	small []entry
	large map[key]map[key][]entry
}

// smallBucket is the size past which a bucket becomes maps.
const smallBucket = 16

func (b *bucket) add(e entry) {
	if b.large == nil && len(b.small) < smallBucket {
		b.small = append(b.small, e)
		return
	}
	if b.large == nil {
		b.large = map[key]map[key][]entry{}
		for _, old := range b.small {
			b.addLarge(old)
		}
		b.small = nil
	}
	b.addLarge(e)
}

func (b *bucket) addLarge(e entry) {
	m := b.large[e.action]
	if m == nil {
		m = map[key][]entry{}
		b.large[e.action] = m
	}
	m[e.resource] = append(m[e.resource], e)
}

// match appends the entries filed under any of the action keys a and
// resource keys r.
func (b *bucket) match(dst []entry, a, r []key) []entry {
	if b.large == nil {
		return matchEntries(dst, b.small, a, r)
	}
	for _, ka := range a {
		m := b.large[ka]
		if m == nil {
			continue
		}
		for _, kr := range r {
			dst = append(dst, m[kr]...)
		}
	}
	return dst
}

func matchEntries(dst, list []entry, a, r []key) []entry {
	for i := range list {
		if e := &list[i]; slices.Contains(a, e.action) && slices.Contains(r, e.resource) {
			dst = append(dst, *e)
		}
	}
	return dst
}

// principalKey is where a principal scope files a policy.
type principalKey struct {
	kind keyKind
	uid  cedar.EntityUID // the entity, or for typeKind only its Type
}

type keyKind uint8

const (
	anyKind keyKind = iota
	eqKind          // principal == E
	inKind          // principal in E (or is T in E, or in [E, ...])
	typeKind
)

type index struct {
	any   *bucket
	types map[cedar.EntityType]*bucket
	// eq and in hold the entity-scoped buckets: eq is looked up for the
	// principal itself, in for it and its ancestors.
	eq, in  map[cedar.EntityUID]*bucket
	actions interner
	res     interner
}

func principalKeys(s xast.IsScopeNode) []principalKey {
	switch t := s.(type) {
	case xast.ScopeTypeAll:
		return []principalKey{{kind: anyKind}}
	case xast.ScopeTypeEq:
		return []principalKey{{kind: eqKind, uid: t.Entity}}
	case xast.ScopeTypeIn:
		return []principalKey{{kind: inKind, uid: t.Entity}}
	case xast.ScopeTypeIs:
		return []principalKey{{kind: typeKind, uid: cedar.EntityUID{Type: t.Type}}}
	case xast.ScopeTypeIsIn:
		return []principalKey{{kind: inKind, uid: t.Entity}}
	case xast.ScopeTypeInSet:
		var out []principalKey
		for _, e := range t.Entities {
			if k := (principalKey{kind: inKind, uid: e}); !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
		return out
	}
	return []principalKey{{kind: anyKind}}
}

func (ix *index) bucketFor(k principalKey) *bucket {
	var b *bucket
	switch k.kind {
	case anyKind:
		if ix.any == nil {
			ix.any = &bucket{}
		}
		return ix.any
	case typeKind:
		if b = ix.types[k.uid.Type]; b == nil {
			b = &bucket{}
			ix.types[k.uid.Type] = b
		}
	default:
		m := ix.in
		if k.kind == eqKind {
			m = ix.eq
		}
		if b = m[k.uid]; b == nil {
			b = &bucket{}
			m[k.uid] = b
		}
	}
	return b
}

// exact reports whether the index checks every scope of a exactly, so
// that cedar-go need only evaluate its conditions: true for every scope
// but "is T in E" (the index files it under E and leaves the type to the
// policy) and kinds it does not know.
func exact(a *xast.Policy) bool {
	for _, s := range []xast.IsScopeNode{a.Principal, a.Action, a.Resource} {
		switch s.(type) {
		case xast.ScopeTypeAll, xast.ScopeTypeEq, xast.ScopeTypeIn, xast.ScopeTypeIs, xast.ScopeTypeInSet:
		default:
			return false
		}
	}
	return true
}

// bodies compiles the conditions of policies, once per distinct body.
type bodies map[string]*cedar.Policy

// of returns what cedar-go evaluates for a: a shared policy with a's effect
// and conditions and an unconstrained scope, or p itself if its scope is
// not exact.
func (bs bodies) of(p *cedar.Policy, a *xast.Policy) *cedar.Policy {
	if !exact(a) {
		return p
	}
	b := &xast.Policy{Effect: a.Effect, Principal: xast.ScopeTypeAll{}, Action: xast.ScopeTypeAll{}, Resource: xast.ScopeTypeAll{}, Conditions: a.Conditions}
	compiled := cedar.NewPolicyFromAST((*ast.Policy)(b))
	text := string(compiled.MarshalCedar())
	if shared, ok := bs[text]; ok {
		return shared
	}
	bs[text] = compiled
	return compiled
}

func newIndex(ids []cedar.PolicyID, policies []*cedar.Policy) *index {
	ix := &index{types: map[cedar.EntityType]*bucket{}, eq: map[cedar.EntityUID]*bucket{}, in: map[cedar.EntityUID]*bucket{},
		actions: newInterner(), res: newInterner()}
	bs := bodies{}
	for i, p := range policies {
		a := (*xast.Policy)(p.AST())
		pk, ak, rk := principalKeys(a.Principal), ix.actions.keys(a.Action), ix.res.keys(a.Resource)
		multi := len(pk)*len(ak)*len(rk) > 1
		eval := bs.of(p, a)
		for _, kp := range pk {
			b := ix.bucketFor(kp)
			for _, ka := range ak {
				for _, kr := range rk {
					b.add(entry{action: ka, resource: kr, pos: int32(i), multi: multi, id: ids[i], eval: eval})
				}
			}
		}
	}
	return ix
}

// principalBuckets returns the buckets a request principal p (with
// ancestors anc) looks up: any, its type, "== p", "in p" and "in" each of
// its ancestors.
func (ix *index) principalBuckets(p cedar.EntityUID, anc []cedar.EntityUID) []*bucket {
	var out []*bucket
	if ix.any != nil {
		out = append(out, ix.any)
	}
	if b := ix.types[p.Type]; b != nil {
		out = append(out, b)
	}
	if b := ix.eq[p]; b != nil {
		out = append(out, b)
	}
	if b := ix.in[p]; b != nil {
		out = append(out, b)
	}
	for i, a := range anc {
		// Ancestors are distinct, but may include p itself (a cycle).
		if a == p || slices.Contains(anc[:i], a) {
			continue
		}
		if b := ix.in[a]; b != nil {
			out = append(out, b)
		}
	}
	return out
}

// candidates appends to dst every entry, among own and the buckets, whose
// action and resource keys may match a and r, each policy once.
func candidates(dst, own []entry, buckets []*bucket, a, r []key) []entry {
	start := len(dst)
	dst = matchEntries(dst, own, a, r)
	for _, b := range buckets {
		dst = b.match(dst, a, r)
	}
	for _, e := range dst[start:] {
		if e.multi {
			found := dst[start:]
			slices.SortFunc(found, func(x, y entry) int { return int(x.pos) - int(y.pos) })
			return append(dst[:start], slices.CompactFunc(found, func(x, y entry) bool { return x.pos == y.pos })...)
		}
	}
	return dst
}

// link is what a known principal looks up in one index, found with one map
// lookup: the entries of its own bucket, copied inline, and the buckets it
// shares with others (any, its type, its roles), which stay hot in cache.
type link struct {
	own    [2]entry
	nOwn   int
	more   []entry
	shared []*bucket
}

func (ix *index) link(p cedar.EntityUID, anc []cedar.EntityUID) link {
	var l link
	for _, b := range ix.principalBuckets(p, anc) {
		if (b == ix.eq[p] || b == ix.in[p]) && b.large == nil {
			for _, e := range b.small {
				if l.nOwn < len(l.own) {
					l.own[l.nOwn] = e
					l.nOwn++
				} else {
					l.more = append(l.more, e)
				}
			}
			continue
		}
		l.shared = append(l.shared, b)
	}
	return l
}
