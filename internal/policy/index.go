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
// Keys are small integers: every entity and type a scope names is interned
// once, so a request hashes each of its entities once, skips those no
// policy names, and walks the three levels with integer lookups.

// key is an interned scope key: keyAny, or an interned id shifted left by
// one with the low bit telling a type from an entity.
type key uint32

const keyAny key = 0

type index struct {
	entities map[cedar.EntityUID]key
	types    map[cedar.EntityType]key
	// tree maps principal key → action key → resource key → policies (by
	// position in the set).
	tree map[key]map[key]map[key][]int32
	// multi marks policies filed under more than one key (action in
	// [A, B]), which a request can find twice.
	multi []bool
}

func (ix *index) entityKey(uid cedar.EntityUID) key {
	k, ok := ix.entities[uid]
	if !ok {
		k = key(len(ix.entities)+len(ix.types)+1) << 1
		ix.entities[uid] = k
	}
	return k
}

func (ix *index) typeKey(t cedar.EntityType) key {
	k, ok := ix.types[t]
	if !ok {
		k = key(len(ix.entities)+len(ix.types)+1)<<1 | 1
		ix.types[t] = k
	}
	return k
}

// scopeKeys returns the keys a scope is filed under. An empty set ("action
// in []") matches nothing and gets no key.
func (ix *index) scopeKeys(s xast.IsScopeNode) []key {
	switch t := s.(type) {
	case xast.ScopeTypeAll:
		return []key{keyAny}
	case xast.ScopeTypeEq:
		return []key{ix.entityKey(t.Entity)}
	case xast.ScopeTypeIn:
		return []key{ix.entityKey(t.Entity)}
	case xast.ScopeTypeIs:
		return []key{ix.typeKey(t.Type)}
	case xast.ScopeTypeIsIn:
		return []key{ix.entityKey(t.Entity)}
	case xast.ScopeTypeInSet:
		out := make([]key, 0, len(t.Entities))
		for _, e := range t.Entities {
			if k := ix.entityKey(e); !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
		return out
	}
	// An unknown scope kind (a newer cedar-go) is filed under "any": always
	// a candidate, never missed.
	return []key{keyAny}
}

func newIndex(policies []*cedar.Policy) *index {
	ix := &index{entities: map[cedar.EntityUID]key{}, types: map[cedar.EntityType]key{},
		tree: map[key]map[key]map[key][]int32{}, multi: make([]bool, len(policies))}
	for i, p := range policies {
		a := (*xast.Policy)(p.AST())
		pk, ak, rk := ix.scopeKeys(a.Principal), ix.scopeKeys(a.Action), ix.scopeKeys(a.Resource)
		ix.multi[i] = len(pk)*len(ak)*len(rk) > 1
		for _, kp := range pk {
			m2 := ix.tree[kp]
			if m2 == nil {
				m2 = map[key]map[key][]int32{}
				ix.tree[kp] = m2
			}
			for _, ka := range ak {
				m3 := m2[ka]
				if m3 == nil {
					m3 = map[key][]int32{}
					m2[ka] = m3
				}
				for _, kr := range rk {
					m3[kr] = append(m3[kr], int32(i))
				}
			}
		}
	}
	return ix
}

// requestKeys appends the keys a request entity looks up: any, its type,
// itself and its ancestors, leaving out those no policy names.
func (ix *index) requestKeys(dst []key, uid cedar.EntityUID, ancestors []cedar.EntityUID) []key {
	dst = append(dst, keyAny)
	if k, ok := ix.types[uid.Type]; ok {
		dst = append(dst, k)
	}
	if k, ok := ix.entities[uid]; ok {
		dst = append(dst, k)
	}
	for _, a := range ancestors {
		if k, ok := ix.entities[a]; ok && a != uid && !slices.Contains(dst, k) {
			dst = append(dst, k)
		}
	}
	return dst
}

// candidates appends to dst the positions of every policy whose scope may
// match, each once.
func (ix *index) candidates(dst []int32, p, a, r []key) []int32 {
	start, dup := len(dst), false
	for _, kp := range p {
		m2 := ix.tree[kp]
		if m2 == nil {
			continue
		}
		for _, ka := range a {
			m3 := m2[ka]
			if m3 == nil {
				continue
			}
			for _, kr := range r {
				for _, i := range m3[kr] {
					dup = dup || ix.multi[i]
					dst = append(dst, i)
				}
			}
		}
	}
	if dup {
		found := dst[start:]
		slices.Sort(found)
		dst = append(dst[:start], slices.Compact(found)...)
	}
	return dst
}
