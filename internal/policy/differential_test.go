package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cedar-policy/cedar-go"
)

// The differential test: for random policy sets, entity graphs and
// requests, the indexed evaluation must reach exactly cedar-go's decision,
// with the same determining policies and the same errors, as cedar-go
// evaluating every policy.

// universe is the vocabulary random worlds are drawn from. Types overlap
// across dimensions on purpose (a Role may be a resource), and Group may
// contain anything, so scopes of one dimension hit entities of another.
var (
	diffTypes   = []string{"Agent", "Role", "Tool", "Group"}
	diffActions = []string{"call_tool", "list_tools", "read", "write", "mcp"}
)

type diffWorld struct {
	ents    cedar.EntityMap
	uids    []cedar.EntityUID
	actions []cedar.EntityUID
}

func randomWorld(r *rand.Rand) diffWorld {
	w := diffWorld{ents: cedar.EntityMap{}}
	n := 3 + r.IntN(10)
	for i := 0; i < n; i++ {
		t := diffTypes[r.IntN(len(diffTypes))]
		w.uids = append(w.uids, cedar.NewEntityUID(cedar.EntityType(t), cedar.String(fmt.Sprintf("e%d", i))))
	}
	// An entity that is referenced but never defined: scopes and parents
	// may name it, lookups miss it.
	ghost := cedar.NewEntityUID("Group", "ghost")
	for _, uid := range w.uids {
		var parents []cedar.EntityUID
		for k := r.IntN(3); k > 0; k-- {
			if r.IntN(8) == 0 {
				parents = append(parents, ghost)
				continue
			}
			// Cycles and self-loops are allowed: cedar-go must cope
			// and so must the index.
			parents = append(parents, w.uids[r.IntN(len(w.uids))])
		}
		attrs := cedar.RecordMap{"level": cedar.Long(r.IntN(4))}
		if r.IntN(3) > 0 {
			attrs["tag"] = cedar.String([]string{"a", "b", "c"}[r.IntN(3)])
		}
		if r.IntN(4) == 0 {
			attrs["owner"] = w.uids[r.IntN(len(w.uids))]
		}
		w.ents[uid] = cedar.Entity{UID: uid, Parents: cedar.NewEntityUIDSet(parents...), Attributes: cedar.NewRecord(attrs)}
	}
	// Actions with random group membership (groups are actions too).
	for _, a := range diffActions {
		w.actions = append(w.actions, Action(a))
	}
	for _, a := range w.actions {
		var parents []cedar.EntityUID
		for k := r.IntN(3); k > 0; k-- {
			parents = append(parents, w.actions[r.IntN(len(w.actions))])
		}
		w.ents[a] = cedar.Entity{UID: a, Parents: cedar.NewEntityUIDSet(parents...)}
	}
	return w
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func (w diffWorld) anyUID(r *rand.Rand) cedar.EntityUID {
	if r.IntN(10) == 0 {
		// Sometimes an entity outside the world.
		return cedar.NewEntityUID(cedar.EntityType(pick(r, diffTypes)), "outsider")
	}
	return pick(r, w.uids)
}

func (w diffWorld) scope(r *rand.Rand, v string) string {
	switch r.IntN(6) {
	case 0:
		return v
	case 1:
		return v + " == " + w.anyUID(r).String()
	case 2:
		return v + " in " + w.anyUID(r).String()
	case 3:
		return v + " is " + pick(r, diffTypes)
	case 4:
		return v + " is " + pick(r, diffTypes) + " in " + w.anyUID(r).String()
	}
	return v + " in " + cedar.NewEntityUID("Group", "ghost").String()
}

func (w diffWorld) actionScope(r *rand.Rand) string {
	switch r.IntN(4) {
	case 0:
		return "action"
	case 1:
		return "action == " + pick(r, w.actions).String()
	case 2:
		return "action in " + pick(r, w.actions).String()
	}
	var set []string
	for k := r.IntN(4); k > 0; k-- {
		set = append(set, pick(r, w.actions).String())
	}
	return "action in [" + strings.Join(set, ", ") + "]"
}

// condition returns a when/unless clause, sometimes one that errors (an
// attribute the entity lacks, a type mismatch) and sometimes one that
// checks membership, so errors and hierarchy both reach the comparison.
func (w diffWorld) condition(r *rand.Rand) string {
	var c string
	switch r.IntN(9) {
	case 0:
		c = "principal.level > " + fmt.Sprint(r.IntN(4))
	case 1:
		c = `resource.tag == "` + pick(r, []string{"a", "b", "c"}) + `"`
	case 2:
		c = "principal in " + w.anyUID(r).String()
	case 3:
		c = "context.risk < " + fmt.Sprint(r.IntN(100))
	case 4:
		c = "resource has owner && resource.owner == principal"
	case 5:
		c = `context.input has path && context.input.path like "/etc/*"`
	case 6:
		c = "resource.owner == principal" // errors when there is no owner
	case 7:
		c = "principal.level + 1 > resource.level"
	default:
		c = "action in " + pick(r, w.actions).String()
	}
	return pick(r, []string{"when", "unless"}) + " { " + c + " }"
}

func (w diffWorld) policies(r *rand.Rand, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "@id(\"p%d\")\n%s (%s, %s, %s)", i, pick(r, []string{"permit", "forbid"}),
			w.scope(r, "principal"), w.actionScope(r), w.scope(r, "resource"))
		for k := r.IntN(3); k > 0; k-- {
			b.WriteString(" " + w.condition(r))
		}
		b.WriteString(";\n")
	}
	return b.String()
}

func (w diffWorld) request(r *rand.Rand) cedar.Request {
	ctx := cedar.RecordMap{"risk": cedar.Long(r.IntN(100))}
	if r.IntN(2) == 0 {
		ctx["input"] = cedar.NewRecord(cedar.RecordMap{"path": cedar.String(pick(r, []string{"/etc/passwd", "/tmp/x", "/etc"}))})
	} else {
		ctx["input"] = cedar.NewRecord(nil)
	}
	return cedar.Request{Principal: w.anyUID(r), Action: pick(r, w.actions), Resource: w.anyUID(r), Context: cedar.NewRecord(ctx)}
}

// mapView adapts a plain entity map to what the indexed evaluation needs,
// computing ancestors the generic way.
type mapView struct{ cedar.EntityMap }

func (m mapView) ancestors(uid cedar.EntityUID) []cedar.EntityUID { return closure(m.EntityMap, uid) }

func (m mapView) principalBuckets(ix *index, uid cedar.EntityUID) ([]entry, []*bucket) {
	return nil, ix.principalBuckets(uid, m.ancestors(uid))
}

// linkedView is the PDP's own view of the same entities: a world whose
// nodes carry their precomputed principal buckets.
func linkedView(ents cedar.EntityMap, ix *index) *view {
	w := &world{agents: map[cedar.EntityUID]*node{}, others: map[cedar.EntityUID]*node{}}
	actions := map[cedar.EntityUID]*node{}
	for uid, e := range ents {
		n := &node{entity: e, ancestors: closure(ents, uid)}
		w.add(n)
		actions[uid] = n
	}
	w.link(ix)
	return &view{w: w, actions: actions}
}

type outcomeKey struct {
	decision cedar.Decision
	reasons  []string
	errors   []string
}

func summarize(d cedar.Decision, diag cedar.Diagnostic) outcomeKey {
	k := outcomeKey{decision: d}
	for _, r := range diag.Reasons {
		k.reasons = append(k.reasons, string(r.PolicyID))
	}
	for _, e := range diag.Errors {
		k.errors = append(k.errors, string(e.PolicyID)+": "+e.Message)
	}
	slices.Sort(k.reasons)
	slices.Sort(k.errors)
	return k
}

func TestIndexMatchesCedarGo(t *testing.T) {
	const worlds, requestsPerWorld = 400, 25
	seed := uint64(20261115)
	r := rand.New(rand.NewPCG(seed, seed))
	cases, allows, errs, pruned := 0, 0, 0, 0
	for wi := 0; wi < worlds; wi++ {
		w := randomWorld(r)
		src := w.policies(r, 1+r.IntN(40))
		list, err := cedar.NewPolicyListFromBytes("random.cedar", []byte(src))
		if err != nil {
			t.Fatalf("world %d: generated policies do not parse: %v\n%s", wi, err, src)
		}
		// The reference: cedar-go's own PolicySet, evaluated in full.
		ref := cedar.NewPolicySet()
		set := &Set{byID: map[cedar.PolicyID]int{}}
		for i, p := range list {
			id := cedar.PolicyID(fmt.Sprintf("p%d", i))
			ref.Add(id, p)
			set.byID[id] = i
			set.ids = append(set.ids, id)
			set.policies = append(set.policies, p)
		}
		set.finish()
		for q := 0; q < requestsPerWorld; q++ {
			req := w.request(r)
			want := summarize(cedar.Authorize(ref, w.ents, req))
			res := set.evaluate(mapView{w.ents}, req)
			got := summarize(res.decision, res.diag)
			cases++
			if want.decision != got.decision || !slices.Equal(want.reasons, got.reasons) || !slices.Equal(want.errors, got.errors) {
				t.Fatalf("world %d request %d: indexed %+v, cedar-go %+v\nrequest: %v %v %v %v\npolicies:\n%s",
					wi, q, got, want, req.Principal, req.Action, req.Resource, req.Context, src)
			}
			// The PDP's path, with buckets linked into the entities.
			lres := set.evaluate(linkedView(w.ents, set.index), req)
			if lgot := summarize(lres.decision, lres.diag); want.decision != lgot.decision || !slices.Equal(want.reasons, lgot.reasons) || !slices.Equal(want.errors, lgot.errors) {
				t.Fatalf("world %d request %d: linked index %+v, cedar-go %+v", wi, q, lgot, want)
			}
			// Bulkhead's conclusion follows from the same result.
			if a1, r1, e1 := conclude(res); a1 != (want.decision == cedar.Allow && len(want.errors) == 0) || len(e1) != len(want.errors) ||
				(a1 && !slices.Equal(r1, want.reasons)) {
				t.Fatalf("world %d request %d: conclude = %v %v %v for %+v", wi, q, a1, r1, e1, want)
			}
			if want.decision == cedar.Allow {
				allows++
			}
			if len(want.errors) > 0 {
				errs++
			}
			if res.considered < len(set.policies) {
				pruned++
			}
		}
	}
	t.Logf("%d cases: %d allowed, %d with errors, %d evaluated fewer policies than the set holds", cases, allows, errs, pruned)
	// The generator must exercise every branch the comparison cares about.
	if cases < 10000 || allows < cases/50 || errs < cases/50 || pruned < cases/2 {
		t.Fatalf("the random cases are too one-sided to prove much: %d cases, %d allows, %d with errors, %d pruned", cases, allows, errs, pruned)
	}
}
