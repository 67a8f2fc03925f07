package audit_test

import (
	"context"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// truncateTo deletes entries from n on, the way an intruder with database
// access would: events, then (unless keep says otherwise) their hashes and
// the checkpoints that signed them, and lowers the tree's size.
func truncateTo(t *testing.T, f *fixture, n int64, keepHashes bool, keepCheckpointsUpTo int64) {
	t.Helper()
	f.exec(t, `DELETE FROM audit_events WHERE seq >= ?`, n)
	if !keepHashes {
		f.exec(t, `DELETE FROM audit_hashes WHERE idx >= ?`, tlog.StoredHashCount(n))
	}
	f.exec(t, `DELETE FROM audit_checkpoints WHERE size > ?`, max(n, keepCheckpointsUpTo))
	f.exec(t, `UPDATE audit_tree SET size = ? WHERE id = 1`, n)
}

// TestTruncationIsCaught shortens a signed log of 45 entries (signed at 10,
// 20, 30 and 40) to 25 and checks that Verify names entry 25, the first
// one gone, whenever anything is left that remembers the longer log.
func TestTruncationIsCaught(t *testing.T) {
	cases := []struct {
		name     string
		truncate func(t *testing.T, f *fixture)
		saved    bool   // verify with the checkpoint of size 40 saved beforehand
		reason   string // what gives the truncation away
	}{
		{name: "hashes left beyond the shortened tree", reason: "hashes of at least 45 are stored", truncate: func(t *testing.T, f *fixture) {
			truncateTo(t, f, 25, true, 0)
		}},
		{name: "a checkpoint left beyond the shortened tree", reason: "a checkpoint signed 30 entries", truncate: func(t *testing.T, f *fixture) {
			truncateTo(t, f, 25, false, 30)
		}},
		{name: "every trace removed, against a saved checkpoint", saved: true, reason: "a saved checkpoint signed 40", truncate: func(t *testing.T, f *fixture) {
			truncateTo(t, f, 25, false, 0)
		}},
		{name: "every trace removed, then re-signed, against a saved checkpoint", saved: true, reason: "a saved checkpoint signed 40", truncate: func(t *testing.T, f *fixture) {
			truncateTo(t, f, 25, false, 0)
			if cp := f.checkpoint(t); cp.Size != 25 {
				t.Fatalf("the checkpointer signed %d", cp.Size)
			}
		}},
	}
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					f := signedLog(t, b)
					var saved [][]byte
					if c.saved {
						saved = append(saved, latestNote(t, f))
					}
					c.truncate(t, f)
					_, err := f.verify(t, saved...)
					if ve := badIndex(t, err); ve.Index != 25 || !strings.Contains(ve.Reason, c.reason) {
						t.Fatalf("verify named entry %d, want 25 (%s): %v", ve.Index, c.reason, err)
					}
				})
			}
			// What a database alone cannot show: with every trace removed
			// and no checkpoint kept outside it, the shorter log is
			// self-consistent. Witnesses (witness.go) keep that checkpoint.
			t.Run("every trace removed, with nothing kept outside", func(t *testing.T) {
				f := signedLog(t, b)
				truncateTo(t, f, 25, false, 0)
				if rep, err := f.verify(t); err != nil || rep.Size != 25 {
					t.Fatalf("verify = %+v, %v; want a self-consistent log of 25", rep, err)
				}
			})
		})
	}
}

// TestVerifyWhileTheLogGrows appends and signs entries while Verify runs:
// the hashes and checkpoints beyond the tree it started from are genuine
// growth, not leftovers of a truncation.
func TestVerifyWhileTheLogGrows(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			f := signedLog(t, b)
			grown := false
			rep, err := audit.Verify(ctx, f.db, audit.VerifyOptions{Verifier: f.key.Verifier, Progress: func(done, total int64) {
				if grown {
					return
				}
				grown = true
				recordFrom(t, f, 45, 60, nil)
				if cp := f.checkpoint(t); cp.Size != 60 {
					t.Errorf("signed %d while verifying", cp.Size)
				}
				recordFrom(t, f, 60, 63, nil)
			}})
			if err != nil || !grown {
				t.Fatalf("verify of a growing log = %v (grew: %v)", err, grown)
			}
			if rep.Size != 45 {
				t.Fatalf("report = %+v", rep)
			}
			// And the same growth after a truncation is not growth.
			truncateTo(t, f, 50, false, 60)
			if _, err := f.verify(t); badIndex(t, err).Index != 50 {
				t.Fatalf("verify after truncating to 50 = %v", err)
			}
		})
	}
}
