package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cedar-policy/cedar-go"
)

// A managed set is evaluated apart from the live set and the two results
// combined: for random sets split in two, the combination must be exactly
// cedar-go's decision over the union, with the same determining policies
// and errors.
func TestCombineMatchesCedarGoOverTheUnion(t *testing.T) {
	const worlds, requestsPerWorld = 300, 20
	seed := uint64(20261202)
	r := rand.New(rand.NewPCG(seed, seed))
	cases, allows, forbids := 0, 0, 0
	for wi := 0; wi < worlds; wi++ {
		w := randomWorld(r)
		src := w.policies(r, 2+r.IntN(30))
		list, err := cedar.NewPolicyListFromBytes("random.cedar", []byte(src))
		if err != nil {
			t.Fatalf("world %d: %v", wi, err)
		}
		split := r.IntN(len(list) + 1)
		ref := cedar.NewPolicySet()
		parts := []*Set{{byID: map[cedar.PolicyID]int{}}, {byID: map[cedar.PolicyID]int{}}}
		for i, p := range list {
			id := cedar.PolicyID(fmt.Sprintf("p%d", i))
			ref.Add(id, p)
			s := parts[0]
			if i >= split {
				s = parts[1]
			}
			s.byID[id] = len(s.policies)
			s.ids = append(s.ids, id)
			s.policies = append(s.policies, p)
		}
		for _, s := range parts {
			s.finish()
		}
		for q := 0; q < requestsPerWorld; q++ {
			req := w.request(r)
			want := summarize(cedar.Authorize(ref, w.ents, req))
			res := combine(parts[0].evaluate(mapView{w.ents}, req), parts[1].evaluate(mapView{w.ents}, req))
			got := summarize(res.decision, res.diag)
			cases++
			if want.decision != got.decision || !slices.Equal(want.reasons, got.reasons) || !slices.Equal(want.errors, got.errors) {
				t.Fatalf("world %d request %d (split at %d): combined %+v, cedar-go %+v\npolicies:\n%s", wi, q, split, got, want, src)
			}
			switch {
			case want.decision == cedar.Allow:
				allows++
			case len(want.reasons) > 0:
				forbids++
			}
		}
	}
	if allows < cases/50 || forbids < cases/50 {
		t.Fatalf("too one-sided: %d cases, %d allows, %d forbids", cases, allows, forbids)
	}
}
