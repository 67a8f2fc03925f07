package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Conformance cases of the audit log's tree, checkpoints, cursors and
// retention; registered in TestConformance.

func appendRows(t *testing.T, db *store.DB, from, to int) {
	t.Helper()
	var rows []audit.Row
	for i := from; i < to; i++ {
		rows = append(rows, row("a.x", i))
	}
	if _, err := db.AppendEvents(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
}

func testAuditTree(t *testing.T, db *store.DB) {
	ctx := context.Background()
	if st, err := db.TreeState(ctx); err != nil || st != (audit.TreeState{}) {
		t.Fatalf("empty tree = %+v, %v", st, err)
	}
	if idx, err := db.MaxHashIndex(ctx); err != nil || idx != -1 {
		t.Fatalf("max hash index of an empty tree = %d, %v", idx, err)
	}
	appendRows(t, db, 0, 3)
	appendRows(t, db, 3, 10)
	st, err := db.TreeState(ctx)
	if err != nil || st.Size != 10 {
		t.Fatalf("tree = %+v, %v", st, err)
	}
	// Verify compares it with the tree's end to catch a shortened tree.
	if idx, err := db.MaxHashIndex(ctx); err != nil || idx != tlog.StoredHashCount(10)-1 {
		t.Fatalf("max hash index = %d, %v; want %d", idx, err, tlog.StoredHashCount(10)-1)
	}
	// The stored record hashes are tlog's, of the stored bodies.
	idx := []int64{tlog.StoredHashIndex(0, 0), tlog.StoredHashIndex(0, 9), tlog.StoredHashIndex(0, 10)}
	hs, err := db.ReadHashes(ctx, idx)
	if err != nil {
		t.Fatal(err)
	}
	if hs[0] != tlog.RecordHash(row("a.x", 0).Body) || hs[1] != tlog.RecordHash(row("a.x", 9).Body) || hs[2] != (tlog.Hash{}) {
		t.Fatalf("record hashes = %v", hs)
	}
	// The tree the store keeps is the tree of the bodies.
	want, _ := audit.NewFrontier(0, nil)
	for i := 0; i < 10; i++ {
		if _, err := want.AppendRecord(row("a.x", i).Body); err != nil {
			t.Fatal(err)
		}
	}
	wantRoot, _ := want.Root()
	if got, err := tlog.TreeHash(10, audit.HashReader(ctx, db)); err != nil || got != wantRoot {
		t.Fatalf("tree hash = %v, %v; want %v", got, err, wantRoot)
	}
}

func testAuditCheckpoints(t *testing.T, db *store.DB) {
	ctx := context.Background()
	if _, ok, err := db.LatestCheckpoint(ctx); ok || err != nil {
		t.Fatalf("latest of none = %v, %v", ok, err)
	}
	for _, n := range []int64{10, 30, 20} {
		if err := db.AddCheckpoint(ctx, audit.StoredCheckpoint{Size: n, IssuedAt: t0, Note: []byte(fmt.Sprint("note ", n))}); err != nil {
			t.Fatal(err)
		}
	}
	// A replica signing the same size again changes nothing.
	if err := db.AddCheckpoint(ctx, audit.StoredCheckpoint{Size: 20, IssuedAt: t0, Note: []byte("other")}); err != nil {
		t.Fatal(err)
	}
	latest, ok, err := db.LatestCheckpoint(ctx)
	if err != nil || !ok || latest.Size != 30 || string(latest.Note) != "note 30" || !latest.IssuedAt.Equal(t0) {
		t.Fatalf("latest = %+v, %v, %v", latest, ok, err)
	}
	page, err := db.Checkpoints(ctx, 10, 1)
	if err != nil || len(page) != 1 || page[0].Size != 20 || string(page[0].Note) != "note 20" {
		t.Fatalf("page after 10 = %+v, %v", page, err)
	}
}

func testAuditCursors(t *testing.T, db *store.DB) {
	ctx := context.Background()
	if c, err := db.Cursor(ctx, "webhook:a"); err != nil || c != -1 {
		t.Fatalf("new cursor = %d, %v", c, err)
	}
	for _, seq := range []int64{5, 3, 9} {
		if err := db.AdvanceCursor(ctx, "webhook:a", seq, t0); err != nil {
			t.Fatal(err)
		}
		if seq == 3 {
			if c, _ := db.Cursor(ctx, "webhook:a"); c != 5 {
				t.Fatalf("cursor moved back to %d", c)
			}
		}
	}
	if err := db.AdvanceCursor(ctx, "webhook:b", 1, t0); err != nil {
		t.Fatal(err)
	}
	all, err := db.Cursors(ctx)
	if err != nil || all["webhook:a"] != 9 || all["webhook:b"] != 1 || len(all) != 2 {
		t.Fatalf("cursors = %v, %v", all, err)
	}
}

func testAuditPrune(t *testing.T, db *store.DB) {
	ctx := context.Background()
	appendRows(t, db, 0, 10)
	if _, err := db.PruneEvents(ctx, 11); !errors.Is(err, fault.Invalid) {
		t.Fatalf("pruning past the end = %v", err)
	}
	n, err := db.PruneEvents(ctx, 4)
	if err != nil || n != 4 {
		t.Fatalf("prune = %d, %v", n, err)
	}
	st, _ := db.TreeState(ctx)
	if st.Size != 10 || st.PrunedBefore != 4 {
		t.Fatalf("tree after prune = %+v", st)
	}
	rows, _ := db.Events(ctx, audit.Query{AfterSeq: -1})
	if len(rows) != 6 || rows[0].Seq != 4 {
		t.Fatalf("events after prune start at %d (%d left)", rows[0].Seq, len(rows))
	}
	if hs, _ := db.ReadHashes(ctx, []int64{tlog.StoredHashIndex(0, 0)}); hs[0] == (tlog.Hash{}) {
		t.Fatal("pruning dropped the tree's hashes")
	}
	// Pruning below the horizon again is a no-op; appends go on.
	if n, err := db.PruneEvents(ctx, 2); err != nil || n != 0 {
		t.Fatalf("re-prune = %d, %v", n, err)
	}
	if first, err := db.AppendEvents(ctx, []audit.Row{row("a.x", 10)}); err != nil || first != 10 {
		t.Fatalf("append after prune at %d, %v", first, err)
	}
	// Even with every body gone, the tree knows where the log ends.
	if _, err := db.PruneEvents(ctx, 11); err != nil {
		t.Fatal(err)
	}
	if first, err := db.AppendEvents(ctx, []audit.Row{row("a.x", 11)}); err != nil || first != 11 {
		t.Fatalf("append after pruning everything at %d, %v", first, err)
	}
}

func testAuditSearch(t *testing.T, db *store.DB) {
	ctx := context.Background()
	alpha := "spiffe://bulkhead.local/agent/alpha"
	rows := []audit.Row{
		{Time: t0, ActorKind: "agent", ActorID: alpha, Action: "svid.renew", Target: alpha, Decision: "allow", Body: []byte("0")},
		{Time: t0.Add(time.Minute), ActorKind: "operator", ActorID: "op", Action: "agent.disable", Target: alpha, Decision: "allow", Body: []byte("1")},
		{Time: t0.Add(2 * time.Minute), ActorKind: "agent", ActorID: alpha, Action: "api.access", Target: "POST /v1/agents", Decision: "deny", DecisionID: "d-42", Body: []byte("2")},
		{Time: t0.Add(3 * time.Minute), ActorKind: "agent", ActorID: "spiffe://bulkhead.local/agent/beta", Action: "api.access", Target: "x", Decision: "deny", Body: []byte("3")},
	}
	if _, err := db.AppendEvents(ctx, rows); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		q    audit.Query
		want string
	}{
		{"by agent, as actor or target", audit.Query{AfterSeq: -1, Subject: alpha}, "[0 1 2]"},
		{"denials", audit.Query{AfterSeq: -1, Decision: audit.Deny}, "[2 3]"},
		{"an agent's denials", audit.Query{AfterSeq: -1, Subject: alpha, Decision: audit.Deny}, "[2]"},
		{"since", audit.Query{AfterSeq: -1, Since: t0.Add(time.Minute)}, "[1 2 3]"},
		{"until", audit.Query{AfterSeq: -1, Until: t0.Add(time.Minute)}, "[0]"},
		{"newest two, in order", audit.Query{AfterSeq: -1, Newest: true, Limit: 2}, "[2 3]"},
		{"one decision", audit.Query{AfterSeq: -1, DecisionID: "d-42"}, "[2]"},
		{"an unknown decision", audit.Query{AfterSeq: -1, DecisionID: "d-43"}, "[]"},
	}
	for _, c := range cases {
		got, err := db.Events(ctx, c.q)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var seqs []int64
		for _, r := range got {
			seqs = append(seqs, r.Seq)
		}
		if fmt.Sprint(seqs) != c.want {
			t.Errorf("%s: got %v, want %s", c.name, seqs, c.want)
		}
	}
}
