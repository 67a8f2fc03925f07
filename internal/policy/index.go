package policy

import (
	"slices"

	"github.com/cedar-policy/cedar-go"
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
// The principal level is keyed by the entity itself (a fleet of agents
// makes it the largest); the action and resource levels use small interned
// integer keys, so a request hashes each of its actions and resources once,
// skips those no policy names, and walks the rest with integer lookups.
// With a fleet of agents most of a decision's time is cache misses, so an
// entry carries its policy (no second array to visit) and the PDP links
// each known principal to its entries ahead of time (see world.link).

// key is an interned action or resource key: keyAny, or an interned id
// shifted left by one with the low bit telling a type from an entity.
type key uint32

const keyAny key = 0

// interner assigns keys to the entities and types one dimension's scopes
// name.
type interner struct {
	entities map[cedar.EntityUID]key
	types    map[cedar.EntityType]key
}

func newInterner() interner {
	return interner{entities: map[cedar.EntityUID]key{}, types: map[cedar.EntityType]key{}}
}

func (in interner) entityKey(uid cedar.EntityUID) key {
	k, ok := in.entities[uid]
	if !ok {
		k = key(len(in.entities)+len(in.types)+1) << 1
		in.entities[uid] = k
	}
	return k
}

func (in interner) typeKey(t cedar.EntityType) key {
	k, ok := in.types[t]
	if !ok {
		k = key(len(in.entities)+len(in.types)+1)<<1 | 1
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
		return []key{in.entityKey(t.Entity)}
	case xast.ScopeTypeIn:
		return []key{in.entityKey(t.Entity)}
	case xast.ScopeTypeIs:
		return []key{in.typeKey(t.Type)}
	case xast.ScopeTypeIsIn:
		return []key{in.entityKey(t.Entity)}
	case xast.ScopeTypeInSet:
		out := make([]key, 0, len(t.Entities))
		for _, e := range t.Entities {
			if k := in.entityKey(e); !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
		return out
	}
	// An unknown scope kind (a newer cedar-go) is filed under "any": always
	// a candidate, never missed.
	return []key{keyAny}
}

// requestKeys appends the keys a request entity looks up: any, its type,
// itself and its ancestors, leaving out those no policy names.
func (in interner) requestKeys(dst []key, uid cedar.EntityUID, ancestors []cedar.EntityUID) []key {
	dst = append(dst, keyAny)
	if k, ok := in.types[uid.Type]; ok {
		dst = append(dst, k)
	}
	if k, ok := in.entities[uid]; ok {
		dst = append(dst, k)
	}
	for _, a := range ancestors {
		if k, ok := in.entities[a]; ok && a != uid && !slices.Contains(dst, k) {
			dst = append(dst, k)
		}
	}
	return dst
}

// entry is one filing of a policy.
type entry struct {
	action, resource key
	// pos is the policy's position in its set; multi says it is filed
	// more than once (action in [A, B]), so a request may find it twice.
	pos    int32
	multi  bool
	id     cedar.PolicyID
	policy *cedar.Policy
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
	entityKind
	typeKind
)

type index struct {
	any      *bucket
	types    map[cedar.EntityType]*bucket
	entities map[cedar.EntityUID]*bucket
	actions  interner
	res      interner
}

func principalKeys(s xast.IsScopeNode) []principalKey {
	switch t := s.(type) {
	case xast.ScopeTypeAll:
		return []principalKey{{kind: anyKind}}
	case xast.ScopeTypeEq:
		return []principalKey{{kind: entityKind, uid: t.Entity}}
	case xast.ScopeTypeIn:
		return []principalKey{{kind: entityKind, uid: t.Entity}}
	case xast.ScopeTypeIs:
		return []principalKey{{kind: typeKind, uid: cedar.EntityUID{Type: t.Type}}}
	case xast.ScopeTypeIsIn:
		return []principalKey{{kind: entityKind, uid: t.Entity}}
	case xast.ScopeTypeInSet:
		var out []principalKey
		for _, e := range t.Entities {
			if k := (principalKey{kind: entityKind, uid: e}); !slices.Contains(out, k) {
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
		if b = ix.entities[k.uid]; b == nil {
			b = &bucket{}
			ix.entities[k.uid] = b
		}
	}
	return b
}

func newIndex(ids []cedar.PolicyID, policies []*cedar.Policy) *index {
	ix := &index{types: map[cedar.EntityType]*bucket{}, entities: map[cedar.EntityUID]*bucket{},
		actions: newInterner(), res: newInterner()}
	for i, p := range policies {
		a := (*xast.Policy)(p.AST())
		pk, ak, rk := principalKeys(a.Principal), ix.actions.keys(a.Action), ix.res.keys(a.Resource)
		multi := len(pk)*len(ak)*len(rk) > 1
		for _, kp := range pk {
			b := ix.bucketFor(kp)
			for _, ka := range ak {
				for _, kr := range rk {
					b.add(entry{action: ka, resource: kr, pos: int32(i), multi: multi, id: ids[i], policy: p})
				}
			}
		}
	}
	return ix
}

// principalBuckets returns the buckets a request principal p (with
// ancestors anc) looks up: any, its type, itself and its ancestors.
func (ix *index) principalBuckets(p cedar.EntityUID, anc []cedar.EntityUID) []*bucket {
	var out []*bucket
	if ix.any != nil {
		out = append(out, ix.any)
	}
	if b := ix.types[p.Type]; b != nil {
		out = append(out, b)
	}
	if b := ix.entities[p]; b != nil {
		out = append(out, b)
	}
	for i, a := range anc {
		// Ancestors are distinct, but may include p itself (a cycle).
		if a == p || slices.Contains(anc[:i], a) {
			continue
		}
		if b := ix.entities[a]; b != nil {
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
		if b == ix.entities[p] && b.large == nil {
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
