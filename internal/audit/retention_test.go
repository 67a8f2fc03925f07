package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

var operator = audit.Actor{Kind: audit.ActorOperator, ID: "spiffe://test.local/operator/admin"}

func newAPI(t *testing.T, f *fixture) *audit.API {
	t.Helper()
	api, err := audit.NewAPI(audit.APIConfig{Store: f.db, Log: f.log, Key: f.key, Logger: storetest.Logger(t),
		Actor: func(*http.Request) (audit.Actor, bool) { return operator, true }})
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// TestRetentionKeepsTheLogVerifiable archives old entries with their
// proofs, prunes them from the store, and checks that the archive proves
// each of them and that the log still verifies end to end.
func TestRetentionKeepsTheLogVerifiable(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			f := signedLog(t, b) // 45 entries, signed up to 40
			api := newAPI(t, f)
			sc, _, _ := f.db.LatestCheckpoint(ctx)
			cp, err := audit.OpenCheckpoint(sc.Note, f.key.Verifier)
			if err != nil {
				t.Fatal(err)
			}
			var archive bytes.Buffer
			if err := audit.WriteArchive(ctx, &archive, f.db, sc.Note, cp, 0, 30); err != nil {
				t.Fatal(err)
			}
			sum, err := audit.VerifyArchive(bytes.NewReader(archive.Bytes()), f.key.Verifier)
			if err != nil || sum.From != 0 || sum.Before != 30 || sum.Checkpoint.Size != 40 {
				t.Fatalf("archive = %+v, %v", sum, err)
			}

			refusals := []struct {
				name string
				req  audit.PruneRequest
				want error
			}{
				{"no archive digest", audit.PruneRequest{Before: 30}, fault.Invalid},
				{"unsigned entries", audit.PruneRequest{Before: 41, ArchiveSHA256: sum.SHA256}, fault.Conflict},
			}
			for _, r := range refusals {
				if _, err := api.Prune(ctx, operator, r.req); !errors.Is(err, r.want) {
					t.Fatalf("%s: prune = %v, want %v", r.name, err, r.want)
				}
			}
			// A webhook that has not delivered the entries holds them back.
			if err := f.db.AdvanceCursor(ctx, "webhook:test", 10, t0); err != nil {
				t.Fatal(err)
			}
			if _, err := api.Prune(ctx, operator, audit.PruneRequest{Before: 30, ArchiveSHA256: sum.SHA256}); !errors.Is(err, fault.Conflict) {
				t.Fatalf("prune of undelivered entries = %v, want conflict", err)
			}
			if err := f.db.AdvanceCursor(ctx, "webhook:test", 44, t0); err != nil {
				t.Fatal(err)
			}

			res, err := api.Prune(ctx, operator, audit.PruneRequest{Before: 30, ArchiveSHA256: sum.SHA256, Reason: "90-day retention"})
			if err != nil || res.Deleted != 30 || res.RecordedSeq != 45 {
				t.Fatalf("prune = %+v, %v", res, err)
			}
			ev, err := audit.EventFromRow(f.body2row(t, 45))
			if err != nil || ev.Action != audit.ActionAuditPrune || ev.Actor != operator || ev.Digests["archive"] != "sha256:"+sum.SHA256 || ev.Detail["before"] != "30" {
				t.Fatalf("the prune was recorded as %+v, %v", ev, err)
			}
			if _, err := api.Prune(ctx, operator, audit.PruneRequest{Before: 30, ArchiveSHA256: sum.SHA256}); !errors.Is(err, fault.Conflict) {
				t.Fatalf("second prune = %v, want conflict", err)
			}

			f.checkpoint(t)
			rep, err := f.verify(t)
			if err != nil {
				t.Fatalf("the log does not verify after a prune: %v", err)
			}
			if rep.Size != 46 || rep.Pruned != 30 || rep.Checked != 16 {
				t.Fatalf("report = %+v", rep)
			}
			// The archive still proves its entries against the old
			// checkpoint, which the log still extends.
			if _, err := audit.VerifyArchive(bytes.NewReader(archive.Bytes()), f.key.Verifier); err != nil {
				t.Fatal(err)
			}
			if _, err := f.verify(t, sc.Note); err != nil {
				t.Fatalf("the log does not extend the archive's checkpoint: %v", err)
			}
			// And a pruned entry whose stored hash is then removed is caught.
			f.exec(t, `DELETE FROM audit_hashes WHERE idx = 0`)
			if ve := badIndex(t, func() error { _, err := f.verify(t); return err }()); ve.Index != 0 {
				t.Fatalf("missing hash of pruned entry 0 named %d", ve.Index)
			}
		})
	}
}

func (f *fixture) body2row(t *testing.T, seq int64) audit.Row {
	t.Helper()
	rows, err := f.db.Events(context.Background(), audit.Query{AfterSeq: seq - 1, Limit: 1})
	if err != nil || len(rows) != 1 {
		t.Fatalf("entry %d: %v", seq, err)
	}
	return rows[0]
}

func TestArchiveTamperingIsCaught(t *testing.T) {
	key, _, err := audit.LoadOrCreateKey(t.TempDir(), logName)
	if err != nil {
		t.Fatal(err)
	}
	m := newMemStore(t, 20)
	msg, cp := m.sign(t, key)
	var buf bytes.Buffer
	if err := audit.WriteArchive(context.Background(), &buf, m, msg, cp, 5, 15); err != nil {
		t.Fatal(err)
	}
	good := buf.String()
	lines := strings.SplitAfter(good, "\n")
	cases := []struct {
		name, archive string
	}{
		{"an entry changed", strings.Join(append(append(append([]string{}, lines[:3]...), changed(t, lines[3])), lines[4:]...), "")},
		{"an entry dropped", strings.Join(append(append([]string{}, lines[:3]...), lines[4:]...), "")},
		{"the tail cut", strings.Join(lines[:5], "")},
		{"an empty file", ""},
		{"not an archive", "{}\n"},
	}
	if _, err := audit.VerifyArchive(strings.NewReader(good), key.Verifier); err != nil {
		t.Fatalf("a good archive does not verify: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := audit.VerifyArchive(strings.NewReader(c.archive), key.Verifier); err == nil {
				t.Fatal("a doctored archive verified")
			}
		})
	}
}

// changed returns an archive line whose event body says something else.
func changed(t *testing.T, line string) string {
	t.Helper()
	var e audit.ArchiveEntry
	if err := json.Unmarshal([]byte(line), &e); err != nil {
		t.Fatal(err)
	}
	e.Body = bytes.Replace(e.Body, []byte(`"reason`), []byte(`"Reason`), 1)
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

func FuzzVerifyArchive(f *testing.F) {
	key, _, err := audit.LoadOrCreateKey(f.TempDir(), logName)
	if err != nil {
		f.Fatal(err)
	}
	m := newMemStore(f, 8)
	msg, cp := m.sign(f, key)
	var buf bytes.Buffer
	if err := audit.WriteArchive(context.Background(), &buf, m, msg, cp, 0, 8); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(`{"format":"bulkhead-audit-archive/1"}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sum, err := audit.VerifyArchive(bytes.NewReader(b), key.Verifier)
		if err == nil && (sum.From < 0 || sum.Before > sum.Checkpoint.Size || sum.From > sum.Before) {
			t.Fatalf("accepted an archive with a bad range: %+v", sum)
		}
	})
}
