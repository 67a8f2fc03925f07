package store_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

const conformanceManifest = `name: reports
approved_actions:
  - actions: [list_tools]
escalation_triggers:
  - name: write
    grants:
      - actions: [call_tool]
        resources: [files/write_file]
    max_uses: 2
`

func storedManifest(t *testing.T, version int64) elevation.StoredManifest {
	t.Helper()
	m, err := elevation.ParseManifest([]byte(conformanceManifest))
	if err != nil {
		t.Fatal(err)
	}
	set, err := elevation.Compile(m, version)
	if err != nil {
		t.Fatal(err)
	}
	return elevation.StoredManifest{Manifest: m, Version: version, Source: conformanceManifest, Policies: set.Files[0].Content,
		Digest: set.Digest, CreatedAt: t0, CreatedBy: "spiffe://bulkhead.local/operator/admin"}
}

func openTask(id string) elevation.Task {
	return elevation.Task{ID: id, Agent: "spiffe://bulkhead.local/agent/alpha", Manifest: "reports", ManifestVersion: 1,
		Status: elevation.TaskOpen, OpenedAt: t0, Deadline: t0.Add(time.Hour)}
}

func pending(id, task string) elevation.Elevation {
	return elevation.Elevation{ID: id, Task: task, Agent: "spiffe://bulkhead.local/agent/alpha", Manifest: "reports", Trigger: "write",
		Justification: "weekly report", Approval: "human", Sensitivity: "medium", Status: elevation.StatusPending,
		RequestedAt: t0, RequestExpiresAt: t0.Add(15 * time.Minute)}
}

func testElevationStore(t *testing.T, db *store.DB) {
	ctx := context.Background()

	// Manifests: versions in sequence, each bumping the policy generation,
	// and the latest is the managed policy set.
	before, err := db.PolicyState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.PutManifest(ctx, storedManifest(t, 1)); err != nil {
		t.Fatal(err)
	}
	if err := db.PutManifest(ctx, storedManifest(t, 1)); !errors.Is(err, fault.Conflict) {
		t.Fatalf("the same version twice: %v, want conflict", err)
	}
	if err := db.PutManifest(ctx, storedManifest(t, 3)); !errors.Is(err, fault.Conflict) {
		t.Fatalf("a skipped version: %v, want conflict", err)
	}
	if err := db.PutManifest(ctx, storedManifest(t, 2)); err != nil {
		t.Fatal(err)
	}
	after, _ := db.PolicyState(ctx)
	if after.Generation != before.Generation+2 {
		t.Fatalf("generation %d → %d, want +2", before.Generation, after.Generation)
	}
	m, err := db.GetManifest(ctx, "reports")
	if err != nil || m.Version != 2 || len(m.EscalationTriggers) != 1 || m.EscalationTriggers[0].MaxUses != 2 || !m.CreatedAt.Equal(t0) {
		t.Fatalf("get manifest = %+v, %v", m, err)
	}
	sets, err := db.ManagedSets(ctx)
	if err != nil || len(sets) != 1 || sets[0].Version != 2 || sets[0].Digest != m.Digest || sets[0].Files[0].Content != m.Policies {
		t.Fatalf("managed sets = %+v, %v", sets, err)
	}
	if _, err := db.GetManifest(ctx, "nope"); !errors.Is(err, fault.NotFound) {
		t.Fatalf("missing manifest: %v", err)
	}

	// Tasks and elevations.
	if err := db.CreateTask(ctx, openTask("tk_1")); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateElevation(ctx, pending("el_1", "tk_1")); err != nil {
		t.Fatal(err)
	}
	late := pending("el_late", "tk_1")
	late.RequestedAt = t0.Add(2 * time.Hour)
	if err := db.CreateElevation(ctx, late); !errors.Is(err, fault.Conflict) {
		t.Fatalf("elevation of a task past its deadline: %v", err)
	}
	if changed, err := db.TaintTask(ctx, "tk_1", t0, "Tool::\"wiki/search\""); err != nil || !changed {
		t.Fatalf("taint: %v %v", changed, err)
	}
	if changed, _ := db.TaintTask(ctx, "tk_1", t0, "x"); changed {
		t.Fatal("tainted twice")
	}

	// Approvals: one per approver, bound to the task; a grant with the
	// last one.
	alice := elevation.Approval{Elevation: "el_1", Task: "tk_1", Approver: "spiffe://bulkhead.local/operator/alice", Reason: "ok", At: t0.Add(time.Minute)}
	if err := db.Approve(ctx, alice, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Approve(ctx, alice, nil); !errors.Is(err, fault.Conflict) {
		t.Fatalf("the same approver twice: %v", err)
	}
	wrongTask := alice
	wrongTask.Task, wrongTask.Approver = "tk_other", "spiffe://bulkhead.local/operator/bob"
	if err := db.Approve(ctx, wrongTask, nil); !errors.Is(err, fault.NotFound) {
		t.Fatalf("an approval bound to another task: %v", err)
	}
	bob := alice
	bob.Approver, bob.At = "spiffe://bulkhead.local/operator/bob", t0.Add(2*time.Minute)
	if err := db.Approve(ctx, bob, &elevation.Grant{ExpiresAt: t0.Add(20 * time.Minute), MaxUses: 2}); err != nil {
		t.Fatal(err)
	}
	e, err := db.GetElevation(ctx, "el_1")
	if err != nil || e.Status != elevation.StatusActive || len(e.Approvals) != 2 || e.Approvals[0].Approver != alice.Approver ||
		!e.ExpiresAt.Equal(t0.Add(20*time.Minute)) || e.MaxUses != 2 || !e.GrantedAt.Equal(bob.At) {
		t.Fatalf("granted elevation = %+v, %v", e, err)
	}
	carol := bob
	carol.Approver = "spiffe://bulkhead.local/operator/carol"
	if err := db.Approve(ctx, carol, nil); !errors.Is(err, fault.Conflict) {
		t.Fatalf("approving an active elevation: %v", err)
	}

	// Uses are atomic and bounded: of many concurrent uses, exactly two
	// succeed, and the last marks the grant exhausted.
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := db.UseGrant(ctx, "el_1", t0.Add(3*time.Minute)); err == nil {
				ok.Add(1)
			} else if !errors.Is(err, fault.Conflict) {
				t.Errorf("use: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 2 {
		t.Fatalf("%d uses succeeded, want 2", ok.Load())
	}
	if e, _ := db.GetElevation(ctx, "el_1"); e.Status != elevation.StatusExhausted || e.Uses != 2 {
		t.Fatalf("after the last use: %+v", e)
	}

	// A second grant: standing privilege is zero while the task is open,
	// and ending the task ends the grant in the same transaction.
	if err := db.CreateElevation(ctx, pending("el_2", "tk_1")); err != nil {
		t.Fatal(err)
	}
	grant2 := alice
	grant2.Elevation = "el_2"
	if err := db.Approve(ctx, grant2, &elevation.Grant{ExpiresAt: t0.Add(30 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if n, err := db.StandingGrants(ctx, t0.Add(4*time.Minute)); err != nil || n != 0 {
		t.Fatalf("standing = %d, %v", n, err)
	}
	if _, err := db.UseGrant(ctx, "el_2", t0.Add(30*time.Minute)); !errors.Is(err, fault.Conflict) {
		t.Fatalf("use at expiry: %v", err)
	}
	if err := db.CreateElevation(ctx, pending("el_3", "tk_1")); err != nil {
		t.Fatal(err)
	}
	ended, err := db.EndTask(ctx, "tk_1", elevation.TaskCompleted, t0.Add(5*time.Minute), "spiffe://bulkhead.local/agent/alpha", "done")
	if err != nil || len(ended) != 2 {
		t.Fatalf("end task ended %d, %v; want el_2 and el_3", len(ended), err)
	}
	if _, err := db.EndTask(ctx, "tk_1", elevation.TaskCancelled, t0, "x", "y"); !errors.Is(err, fault.Conflict) {
		t.Fatalf("ending twice: %v", err)
	}
	if _, err := db.EndTask(ctx, "tk_none", elevation.TaskCancelled, t0, "x", "y"); !errors.Is(err, fault.NotFound) {
		t.Fatalf("ending a missing task: %v", err)
	}
	for _, id := range []string{"el_2", "el_3"} {
		if e, _ := db.GetElevation(ctx, id); e.Status != elevation.StatusEnded || e.EndReason != "task completed" {
			t.Fatalf("%s after the task's end: %+v", id, e)
		}
	}
	if _, err := db.UseGrant(ctx, "el_2", t0.Add(6*time.Minute)); !errors.Is(err, fault.Conflict) {
		t.Fatalf("use after the task's end: %v", err)
	}
	if task, _ := db.GetTask(ctx, "tk_1"); task.Status != elevation.TaskCompleted || !task.Tainted || task.EndReason != "done" {
		t.Fatalf("ended task = %+v", task)
	}
	if n, _ := db.StandingGrants(ctx, t0.Add(6*time.Minute)); n != 0 {
		t.Fatalf("standing after the end = %d", n)
	}

	// Due items: a task past its deadline, a lapsed request.
	if err := db.CreateTask(ctx, openTask("tk_2")); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateElevation(ctx, pending("el_4", "tk_2")); err != nil {
		t.Fatal(err)
	}
	if due, err := db.TasksDue(ctx, t0.Add(time.Hour)); err != nil || len(due) != 1 || due[0].ID != "tk_2" {
		t.Fatalf("tasks due = %+v, %v", due, err)
	}
	if due, err := db.ElevationsDue(ctx, t0.Add(15*time.Minute)); err != nil || len(due) != 1 || due[0].ID != "el_4" {
		t.Fatalf("elevations due = %+v, %v", due, err)
	}
	if err := db.SetStatus(ctx, "el_4", []elevation.Status{elevation.StatusActive}, elevation.StatusRevoked, t0, "op", "no"); !errors.Is(err, fault.Conflict) {
		t.Fatalf("set status from the wrong state: %v", err)
	}
	if err := db.SetStatus(ctx, "el_4", []elevation.Status{elevation.StatusPending}, elevation.StatusExpired, t0, "bulkhead", "lapsed"); err != nil {
		t.Fatal(err)
	}
	list, err := db.ListElevations(ctx, elevation.Filter{Task: "tk_1"})
	if err != nil || len(list) != 3 {
		t.Fatalf("list by task = %d, %v", len(list), err)
	}
	if list, _ := db.ListElevations(ctx, elevation.Filter{Statuses: []elevation.Status{elevation.StatusExpired}}); len(list) != 1 || list[0].ID != "el_4" {
		t.Fatalf("list by status = %+v", list)
	}
	if open, _ := db.ListTasks(ctx, true); len(open) != 1 || open[0].ID != "tk_2" {
		t.Fatalf("open tasks = %+v", open)
	}

	// The approval policy set is versioned.
	if _, err := db.ApprovalPolicy(ctx); !errors.Is(err, fault.NotFound) {
		t.Fatalf("approval policy before any: %v", err)
	}
	for i := range 2 {
		v, err := db.PutApprovalPolicy(ctx, elevation.ApprovalPolicySet{Files: elevation.DefaultApprovalPolicy(), Digest: "d", CreatedAt: t0, CreatedBy: "op"})
		if err != nil || v != int64(i+1) {
			t.Fatalf("put approval policy = %d, %v", v, err)
		}
	}
	if p, err := db.ApprovalPolicy(ctx); err != nil || p.Version != 2 || len(p.Files) != 1 {
		t.Fatalf("approval policy = %+v, %v", p, err)
	}
}
