package store_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

func mustState(t *testing.T, db *store.DB) policy.State {
	t.Helper()
	st, err := db.PolicyState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func testPolicyVersions(t *testing.T, db *store.DB) {
	ctx := context.Background()
	st := mustState(t, db)
	if st.Live != 0 || st.Shadow != 0 {
		t.Fatalf("fresh state = %+v, want nothing in force", st)
	}
	gen := st.Generation
	files := []policy.File{{Name: "a.cedar", Content: "permit (principal, action, resource);"}, {Name: "b/c.cedar", Content: "// ünïcode\n"}}
	v := policy.Version{Files: files, Digest: policy.Digest(files), Policies: 1, Description: "first", CreatedAt: t0, CreatedBy: "op"}
	n1, err := db.CreatePolicyVersion(ctx, v)
	if err != nil || n1 != 1 {
		t.Fatalf("first version = %d, %v", n1, err)
	}
	v.Shadow, v.Description = true, "candidate"
	n2, err := db.CreatePolicyVersion(ctx, v)
	if err != nil || n2 != 2 {
		t.Fatalf("second version = %d, %v", n2, err)
	}
	if st := mustState(t, db); st.Live != 1 || st.Shadow != 2 || st.Generation != gen+2 {
		t.Fatalf("state = %+v, want live 1, shadow 2, generation %d", st, gen+2)
	}
	got, err := db.PolicyVersion(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Number != 1 || !reflect.DeepEqual(got.Files, files) || got.Digest != v.Digest || got.Shadow || got.Description != "first" ||
		!got.CreatedAt.Equal(t0) || got.CreatedBy != "op" || got.Policies != 1 {
		t.Fatalf("version 1 = %+v", got)
	}
	if _, err := db.PolicyVersion(ctx, 3); !errors.Is(err, fault.NotFound) {
		t.Fatalf("missing version: %v", err)
	}
	list, err := db.ListPolicyVersions(ctx)
	if err != nil || len(list) != 2 || list[0].Number != 1 || !list[1].Shadow || list[1].Files != nil {
		t.Fatalf("list = %+v, %v", list, err)
	}
	// A refused change changes nothing, not even the generation.
	before := mustState(t, db)
	_, err = db.UpdatePolicyState(ctx, func(policy.State) (policy.State, error) { return policy.State{}, fault.Conflict })
	if !errors.Is(err, fault.Conflict) || mustState(t, db) != before {
		t.Fatalf("refused update: %v, state %+v", err, mustState(t, db))
	}
	st, err = db.UpdatePolicyState(ctx, func(s policy.State) (policy.State, error) {
		s.Live, s.Shadow = s.Shadow, 0
		return s, nil
	})
	if err != nil || st.Live != 2 || st.Shadow != 0 || st.Generation != before.Generation+1 || mustState(t, db) != st {
		t.Fatalf("promote = %+v, %v", st, err)
	}
}

func testPolicyStateConcurrent(t *testing.T, db *store.DB) {
	ctx := context.Background()
	const writers = 8
	var wg sync.WaitGroup
	nums := make(chan int64, writers)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := db.CreatePolicyVersion(ctx, policy.Version{Digest: "d", CreatedAt: t0, CreatedBy: "op"})
			if err != nil {
				t.Error(err)
			}
			nums <- n
		}()
	}
	wg.Wait()
	close(nums)
	seen := map[int64]bool{}
	for n := range nums {
		if seen[n] {
			t.Fatalf("version %d assigned twice", n)
		}
		seen[n] = true
	}
	if st := mustState(t, db); len(seen) != writers || !seen[st.Live] {
		t.Fatalf("versions %v, state %+v", seen, st)
	}
}

func testAgentRoles(t *testing.T, db *store.DB) {
	ctx := context.Background()
	mustCreateAgent(t, db, "alpha")
	mustCreateAgent(t, db, "beta")
	gen := mustState(t, db).Generation
	add := func(agent, role string) error {
		return db.AddAgentRole(ctx, policy.RoleAssignment{Agent: agent, Role: role, CreatedAt: t0, CreatedBy: "op"})
	}
	for _, r := range []struct{ agent, role string }{{"alpha", "reader"}, {"alpha", "ops"}, {"beta", "reader"}} {
		if err := add(r.agent, r.role); err != nil {
			t.Fatal(err)
		}
	}
	if err := add("alpha", "reader"); !errors.Is(err, fault.Conflict) {
		t.Fatalf("duplicate role: %v", err)
	}
	if err := add("ghost", "reader"); !errors.Is(err, fault.NotFound) {
		t.Fatalf("role for a missing agent: %v", err)
	}
	if g := mustState(t, db).Generation; g != gen+3 {
		t.Fatalf("generation %d after three assignments from %d", g, gen)
	}
	list, err := db.ListAgentRoles(ctx, "alpha")
	if err != nil || len(list) != 2 || list[0].Role != "ops" || list[1].Role != "reader" || !list[0].CreatedAt.Equal(t0) {
		t.Fatalf("alpha's roles = %+v, %v", list, err)
	}
	if all, _ := db.ListAgentRoles(ctx, ""); len(all) != 3 {
		t.Fatalf("all roles = %+v", all)
	}
	if err := db.RemoveAgentRole(ctx, "alpha", "ops"); err != nil {
		t.Fatal(err)
	}
	if err := db.RemoveAgentRole(ctx, "alpha", "ops"); !errors.Is(err, fault.NotFound) {
		t.Fatalf("removing a role twice: %v", err)
	}
	// Only active agents' roles reach the PDP.
	if err := db.SetAgentStatus(ctx, "beta", identity.StatusDisabled, t0); err != nil {
		t.Fatal(err)
	}
	mustCreateAgent(t, db, "gamma")
	agents, err := db.PolicyAgents(ctx)
	want := []policy.AgentRoles{
		{Name: "alpha", SPIFFEID: "spiffe://bulkhead.local/agent/alpha", Roles: []string{"reader"}},
		{Name: "gamma", SPIFFEID: "spiffe://bulkhead.local/agent/gamma"},
	}
	if err != nil || !reflect.DeepEqual(agents, want) {
		t.Fatalf("policy agents = %+v, %v; want %+v", agents, err, want)
	}
}

func testToolCatalog(t *testing.T, db *store.DB) {
	ctx := context.Background()
	c, err := policy.ParseCatalog("tools.yaml", []byte(`
servers:
  - name: docs
    sensitivity: low
    untrusted_output: false
    groups: [docs, public]
    tools:
      - name: search
      - name: delete
        sensitivity: high
        groups: [danger]
    routes:
      - name: pages
        method: GET
        path: /pages
  - name: vault
`))
	if err != nil {
		t.Fatal(err)
	}
	gen := mustState(t, db).Generation
	if err := db.ReplaceToolCatalog(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, err := db.ToolCatalog(ctx)
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Fatalf("catalog round trip:\n got %+v, %v\nwant %+v", got, err, c)
	}
	if g := mustState(t, db).Generation; g != gen+1 {
		t.Fatalf("generation %d, want %d", g, gen+1)
	}
	if err := db.ReplaceToolCatalog(ctx, policy.Catalog{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.ToolCatalog(ctx); len(got.Servers) != 0 {
		t.Fatalf("catalog after an empty apply = %+v", got)
	}
}

func testShadowRecords(t *testing.T, db *store.DB) {
	ctx := context.Background()
	diff := func(id string, live bool, at time.Duration) policy.ShadowDiff {
		return policy.ShadowDiff{DecisionID: id, Time: t0.Add(at), ShadowVersion: 2, LiveVersion: 1, Principal: `Agent::"a"`,
			Action: `Action::"call_tool"`, Resource: `Tool::"docs/search"`, LiveAllowed: live, ShadowAllowed: !live,
			LiveReasons: []string{"p1"}, ShadowReasons: []string{}}
	}
	if err := db.RecordShadow(ctx, []policy.ShadowDiff{diff("d1", true, 0), diff("d2", false, time.Second)},
		[]policy.ShadowStats{{Version: 2, Evaluated: 10}}); err != nil {
		t.Fatal(err)
	}
	// A retried write does not duplicate differences; counts add up.
	if err := db.RecordShadow(ctx, []policy.ShadowDiff{diff("d2", false, time.Second), diff("d3", true, 2*time.Second)},
		[]policy.ShadowStats{{Version: 2, Evaluated: 5, Unrecorded: 1}, {Version: 7, Evaluated: 1}}); err != nil {
		t.Fatal(err)
	}
	sum, err := db.ShadowSummary(ctx, 2)
	if err != nil || sum.Evaluated != 15 || sum.Unrecorded != 1 || sum.AllowToDeny != 2 || sum.DenyToAllow != 1 {
		t.Fatalf("summary = %+v, %v", sum, err)
	}
	diffs, err := db.ShadowDiffs(ctx, 2, 2)
	if err != nil || len(diffs) != 2 || diffs[0].DecisionID != "d3" || diffs[1].DecisionID != "d2" {
		t.Fatalf("newest two = %+v, %v", diffs, err)
	}
	if !reflect.DeepEqual(diffs[1], diff("d2", false, time.Second)) {
		t.Fatalf("round trip: %+v", diffs[1])
	}
	if none, err := db.ShadowSummary(ctx, 9); err != nil || none.Evaluated != 0 {
		t.Fatalf("summary of an unknown version = %+v, %v", none, err)
	}
	if all, _ := db.ShadowDiffs(ctx, 2, 0); len(all) != 3 {
		t.Fatalf("all differences = %d", len(all))
	}
}
