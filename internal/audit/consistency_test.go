package audit_test

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

func latestNote(t *testing.T, f *fixture) []byte {
	t.Helper()
	sc, ok, err := f.db.LatestCheckpoint(context.Background())
	if err != nil || !ok {
		t.Fatalf("latest checkpoint: %v, %v", ok, err)
	}
	return sc.Note
}

func recordFrom(t *testing.T, f *fixture, from, to int, mutate func(*audit.Event)) {
	t.Helper()
	for i := from; i < to; i++ {
		ev := event(i)
		if mutate != nil {
			mutate(&ev)
		}
		if _, err := f.log.Record(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConsistency(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			// The real log: signed at 10, at 20 (saved by an auditor), at 30.
			real := newFixture(t, b)
			recordFrom(t, real, 0, 10, nil)
			real.checkpoint(t)
			recordFrom(t, real, 10, 20, nil)
			old := real.checkpoint(t)
			oldNote := latestNote(t, real)
			recordFrom(t, real, 20, 30, nil)
			cur := real.checkpoint(t)

			// A fork: the same key and the same first 10 entries, then a
			// different history, signed at 20.
			fork := newFixtureWithKey(t, b, real.key)
			recordFrom(t, fork, 0, 10, nil)
			recordFrom(t, fork, 10, 20, func(ev *audit.Event) { ev.Decision = audit.Allow; ev.Reasons = []string{"rewritten"} })
			forked := fork.checkpoint(t)
			forkNote := latestNote(t, fork)
			if forked.Size != old.Size || forked.Root == old.Root {
				t.Fatalf("the fork is not a fork: %+v vs %+v", forked, old)
			}

			proof, err := tlog.ProveTree(cur.Size, old.Size, audit.HashReader(ctx, real.db))
			if err != nil {
				t.Fatal(err)
			}
			t.Run("old to new verifies", func(t *testing.T) {
				if err := tlog.CheckTree(proof, cur.Size, cur.Root, old.Size, old.Root); err != nil {
					t.Fatalf("consistency proof %d→%d: %v", old.Size, cur.Size, err)
				}
				rep, err := real.verify(t, oldNote)
				if err != nil || len(rep.Saved) != 1 || rep.Saved[0].Size != old.Size {
					t.Fatalf("verify with the saved checkpoint = %+v, %v", rep, err)
				}
			})
			t.Run("a forked checkpoint does not", func(t *testing.T) {
				if err := tlog.CheckTree(proof, cur.Size, cur.Root, forked.Size, forked.Root); err == nil {
					t.Fatal("a proof from the real log verified against the fork's checkpoint")
				}
				_, err := real.verify(t, forkNote)
				ve := badIndex(t, err)
				if ve.Index != 0 || ve.Upto != 20 {
					t.Fatalf("verify against the fork named [%d, %d), want [0, 20): %v", ve.Index, ve.Upto, err)
				}
				// And the other way round: the fork does not extend the
				// real log's saved checkpoint either.
				if _, err := fork.verify(t, oldNote); !errors.Is(err, audit.ErrTampered) {
					t.Fatalf("the fork verified against the real checkpoint: %v", err)
				}
			})
			t.Run("the checkpointer will not sign a rewritten history", func(t *testing.T) {
				b := real.body(t, 5)
				b[len(b)-5] ^= 0x01
				real.exec(t, `UPDATE audit_events SET body = ? WHERE seq = 5`, b)
				rebuildHashes(t, real)
				recordFrom(t, real, 30, 31, nil)
				if _, err := real.cp.Checkpoint(ctx); !errors.Is(err, audit.ErrForked) {
					t.Fatalf("checkpoint over a rewritten history = %v, want ErrForked", err)
				}
			})
		})
	}
}
