package audit_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// signedLog records 45 events with a checkpoint after every 10: sizes 10,
// 20, 30 and 40 are signed and the last 5 entries are not yet.
func signedLog(t *testing.T, b storetest.Backend) *fixture {
	t.Helper()
	f := newFixture(t, b)
	for i := 0; i < 45; i++ {
		if _, err := f.log.Record(context.Background(), event(i)); err != nil {
			t.Fatal(err)
		}
		if (i+1)%10 == 0 {
			f.checkpoint(t)
		}
	}
	return f
}

// TestTamperingIsCaught edits the store behind the log's back, the way an
// intruder with database access would, and checks that Verify names the
// first entry that is no longer what was appended.
func TestTamperingIsCaught(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(t *testing.T, f *fixture)
		index  int64 // first bad entry Verify must name
		upto   int64 // when the entry can only be narrowed to [index, upto)
	}{
		{name: "one byte of a signed entry changed", index: 17, tamper: func(t *testing.T, f *fixture) {
			b := f.body(t, 17)
			b[len(b)/2] ^= 0x01
			f.exec(t, `UPDATE audit_events SET body = ? WHERE seq = ?`, b, 17)
		}},
		{name: "one byte of an unsigned entry changed", index: 42, tamper: func(t *testing.T, f *fixture) {
			b := f.body(t, 42)
			b[3] ^= 0x20
			f.exec(t, `UPDATE audit_events SET body = ? WHERE seq = ?`, b, 42)
		}},
		{name: "a search column changed to hide an entry", index: 3, tamper: func(t *testing.T, f *fixture) {
			f.exec(t, `UPDATE audit_events SET actor_id = 'someone else' WHERE seq = 3`)
		}},
		{name: "an entry deleted", index: 9, tamper: func(t *testing.T, f *fixture) {
			f.exec(t, `DELETE FROM audit_events WHERE seq = 9`)
		}},
		{name: "the last entry deleted", index: 44, tamper: func(t *testing.T, f *fixture) {
			f.exec(t, `DELETE FROM audit_events WHERE seq = 44`)
		}},
		{name: "two entries swapped", index: 5, tamper: func(t *testing.T, f *fixture) {
			f.exec(t, `UPDATE audit_events SET seq = -1 WHERE seq = 5`)
			f.exec(t, `UPDATE audit_events SET seq = 5 WHERE seq = 30`)
			f.exec(t, `UPDATE audit_events SET seq = 30 WHERE seq = -1`)
		}},
		{name: "an entry inserted in the middle", index: 12, tamper: func(t *testing.T, f *fixture) {
			forged := f.body(t, 11)
			f.exec(t, `UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 12`)
			f.exec(t, `UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000`)
			f.exec(t, `INSERT INTO audit_events (seq, time, actor_kind, actor_id, action, target, decision, task, body)
				VALUES (12, 0, 'operator', 'x', 'agent.create', 't', 'allow', '', ?)`, forged)
		}},
		{name: "an entry appended behind the log's back", index: 45, tamper: func(t *testing.T, f *fixture) {
			f.exec(t, `INSERT INTO audit_events (seq, time, actor_kind, actor_id, action, target, decision, task, body)
				VALUES (45, 0, 'operator', 'x', 'agent.create', 't', 'allow', '', ?)`, f.body(t, 3))
		}},
		{name: "an entry changed and the stored hashes rebuilt to match", index: 20, upto: 30, tamper: func(t *testing.T, f *fixture) {
			// A clean edit: the body is still a well-formed event.
			b := bytes.Replace(f.body(t, 26), []byte(`"deny"`), []byte(`"allow"`), 1)
			f.exec(t, `UPDATE audit_events SET body = ?, decision = 'allow' WHERE seq = ?`, b, 26)
			rebuildHashes(t, f)
		}},
		{name: "a checkpoint forged", index: -1, tamper: func(t *testing.T, f *fixture) {
			f.exec(t, `UPDATE audit_checkpoints SET note = ? WHERE size = 20`, forgeNote(t, f, 20))
		}},
		{name: "old entries deleted and the horizon raised with no recorded prune", index: 0, upto: 10, tamper: func(t *testing.T, f *fixture) {
			f.exec(t, `DELETE FROM audit_events WHERE seq < 10`)
			f.exec(t, `UPDATE audit_tree SET pruned_before = 10`)
		}},
	}
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Run("untouched", func(t *testing.T) {
				f := signedLog(t, b)
				rep, err := f.verify(t)
				if err != nil {
					t.Fatalf("an untouched log does not verify: %v", err)
				}
				if rep.Size != 45 || rep.Checked != 45 || rep.Checkpoints != 4 || rep.Latest.Size != 40 || rep.Unsigned != 5 {
					t.Fatalf("report = %+v", rep)
				}
			})
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					f := signedLog(t, b)
					c.tamper(t, f)
					_, err := f.verify(t)
					ve := badIndex(t, err)
					if ve.Index != c.index || (c.upto != 0 && ve.Upto != c.upto) {
						t.Fatalf("verify named entry %d (upto %d), want %d (upto %d): %v", ve.Index, ve.Upto, c.index, c.upto, err)
					}
				})
			}
			t.Run("checkpoints deleted", func(t *testing.T) {
				f := signedLog(t, b)
				f.exec(t, `DELETE FROM audit_checkpoints`)
				if _, err := f.verify(t); !errors.Is(err, audit.ErrNoCheckpoint) {
					t.Fatalf("verify = %v, want ErrNoCheckpoint", err)
				}
			})
			t.Run("appends stop when the end of the log was tampered with", func(t *testing.T) {
				f := signedLog(t, b)
				f.exec(t, `DELETE FROM audit_events WHERE seq = 44`)
				// On SQLite the first append may be acknowledged: it is
				// durable in the audit journal, which the database then
				// refuses to take. From then on appends are refused, and
				// reads of the log fail rather than show it without them.
				ctx := context.Background()
				_, first := f.log.Record(ctx, event(99))
				if b.Name == "postgres" && !errors.Is(first, audit.ErrUnavailable) {
					t.Fatalf("append over a truncated log = %v, want refused", first)
				}
				if first == nil {
					if _, err := f.db.TreeState(ctx); err == nil {
						t.Fatal("the log reads as whole with an acknowledged event the database refused")
					}
				}
				if _, err := f.log.Record(ctx, event(100)); !errors.Is(err, audit.ErrUnavailable) {
					t.Fatalf("append over a truncated log = %v, want refused", err)
				}
			})
		})
	}
}

// rebuildHashes recomputes every stored hash from the current bodies, as
// an intruder who knows the scheme would.
func rebuildHashes(t *testing.T, f *fixture) {
	t.Helper()
	rows, err := f.db.Events(context.Background(), audit.Query{AfterSeq: -1})
	if err != nil {
		t.Fatal(err)
	}
	tree, _ := audit.NewFrontier(0, nil)
	f.exec(t, `DELETE FROM audit_hashes`)
	for _, r := range rows {
		hs, err := tree.AppendRecord(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			f.exec(t, `INSERT INTO audit_hashes (idx, hash) VALUES (?, ?)`, h.Index, h.Hash[:])
		}
	}
}

// forgeNote returns a checkpoint of size n with a different root, signed
// by a key of the same name that is not the log's.
func forgeNote(t *testing.T, f *fixture, n int64) []byte {
	t.Helper()
	other, _, err := audit.LoadOrCreateKey(t.TempDir(), logName)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := audit.Checkpoint{Origin: logName, Size: n}.Sign(other.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}
