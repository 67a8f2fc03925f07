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
// makes it the largest, and one lookup per request entity is all it takes);
// the action and resource levels use small interned integer keys, so a
// request hashes each of its actions and resources once, skips those no
// policy names, and walks the rest with integer lookups.

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

// bucket holds the policies of one principal key. Most buckets are small
// (one agent's few policies), and a short list scanned in place costs
// fewer cache misses than maps; a large one (a popular role) is a map of
// action key → resource key → policies.
type bucket struct {
	small []entry
	large map[key]map[key][]int32
}

type entry struct {
	action, resource key
	policy           int32
}

// smallBucket is the size past which a bucket becomes maps.
const smallBucket = 16

func (b *bucket) add(ka, kr key, i int32) {
	if b.large == nil && len(b.small) < smallBucket {
		b.small = append(b.small, entry{ka, kr, i})
		return
	}
	if b.large == nil {
		b.large = map[key]map[key][]int32{}
		for _, e := range b.small {
			b.addLarge(e.action, e.resource, e.policy)
		}
		b.small = nil
	}
	b.addLarge(ka, kr, i)
}

func (b *bucket) addLarge(ka, kr key, i int32) {
	m := b.large[ka]
	if m == nil {
		m = map[key][]int32{}
		b.large[ka] = m
	}
	m[kr] = append(m[kr], i)
}

// match appends the policies filed under any of the action keys a and
// resource keys r.
func (b *bucket) match(dst []int32, a, r []key) []int32 {
	if b.large == nil {
		for _, e := range b.small {
			if slices.Contains(a, e.action) && slices.Contains(r, e.resource) {
				dst = append(dst, e.policy)
			}
		}
		return dst
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

// principalKey is where a principal scope files a policy.
type principalKey struct {
	kind keyKind
	uid  cedar.EntityUID // the entity, or for keyType only its Type
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
	// multi marks policies filed under more than one key (action in
	// [A, B]), which a request can find twice.
	multi []bool
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

func newIndex(policies []*cedar.Policy) *index {
	ix := &index{types: map[cedar.EntityType]*bucket{}, entities: map[cedar.EntityUID]*bucket{},
		actions: newInterner(), res: newInterner(), multi: make([]bool, len(policies))}
	for i, p := range policies {
		a := (*xast.Policy)(p.AST())
		pk, ak, rk := principalKeys(a.Principal), ix.actions.keys(a.Action), ix.res.keys(a.Resource)
		ix.multi[i] = len(pk)*len(ak)*len(rk) > 1
		for _, kp := range pk {
			b := ix.bucketFor(kp)
			for _, ka := range ak {
				for _, kr := range rk {
					b.add(ka, kr, int32(i))
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

// candidates appends to dst the positions of every policy whose action and
// resource scopes may match keys a and r, among the entries flat and the
// policies of buckets, each once.
func (ix *index) candidates(dst []int32, flat []entry, buckets []*bucket, a, r []key) []int32 {
	start := len(dst)
	for _, e := range flat {
		if slices.Contains(a, e.action) && slices.Contains(r, e.resource) {
			dst = append(dst, e.policy)
		}
	}
	for _, b := range buckets {
		dst = b.match(dst, a, r)
	}
	dup := false
	for _, i := range dst[start:] {
		dup = dup || ix.multi[i]
	}
	if dup {
		found := dst[start:]
		slices.Sort(found)
		dst = append(dst[:start], slices.Compact(found)...)
	}
	return dst
}

// flatten splits buckets into the entries of the small ones, copied into
// one list (one cache line to read instead of three pointers to follow),
// and the large ones.
func flatten(buckets []*bucket) (flat []entry, large []*bucket) {
	for _, b := range buckets {
		if b.large == nil {
			flat = append(flat, b.small...)
		} else {
			large = append(large, b)
		}
	}
	return flat, large
}
