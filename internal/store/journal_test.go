package store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// The journal's own stories. The conformance suite runs every audit test
// on SQLite through it, and audit's TestCrashSafety and server's
// TestNoAnswerReachesAnAgentWithoutItsRecordAcrossSIGKILL kill processes
// that append through it.

func journalEvent(t testing.TB, i int) audit.Row {
	t.Helper()
	ev := audit.Event{Time: time.Date(2026, 12, 6, 0, 0, i, 0, time.UTC), Action: audit.ActionAPIAccess,
		Actor:    audit.Actor{Kind: audit.ActorAgent, ID: "spiffe://test.local/agent/a"},
		Decision: audit.Allow, Detail: map[string]string{"n": fmt.Sprint(i)}}
	body, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return audit.RowOf(ev, body)
}

func openJournaled(t *testing.T, dir string, opts ...Option) *DB {
	t.Helper()
	db, err := Open(context.Background(), "", dir, slog.New(slog.NewTextHandler(io.Discard, nil)), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// writeJournal leaves frames for events from..to-1 in dir's journal, as a
// control plane killed before ingesting them does.
func writeJournal(t *testing.T, dir string, from, to int, extra []byte) {
	t.Helper()
	var b []byte
	for i := from; i < to; i++ {
		b = appendFrame(b, int64(i), journalEvent(t, i).Body)
	}
	if err := os.WriteFile(filepath.Join(dir, "bulkhead.db"+journalSuffix), append(b, extra...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// stopIngester stops db's background ingester, leaving the journal
// otherwise working (and closable).
func stopIngester(db *DB) {
	close(db.journal.stop)
	<-db.journal.done
	db.journal.stop, db.journal.done = make(chan struct{}), make(chan struct{})
	go func() { <-db.journal.stop; close(db.journal.done) }()
}

func appendN(t *testing.T, db *DB, from, n int) {
	t.Helper()
	rows := make([]audit.Row, n)
	for i := range rows {
		rows[i] = journalEvent(t, from+i)
	}
	first, err := db.AppendEvents(context.Background(), rows)
	if err != nil || first != int64(from) {
		t.Fatalf("append at %d = %d, %v", from, first, err)
	}
}

func bodies(t *testing.T, db *DB) [][]byte {
	t.Helper()
	rows, err := db.Events(context.Background(), audit.Query{AfterSeq: -1})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for i, r := range rows {
		if r.Seq != int64(i) {
			t.Fatalf("event %d has sequence number %d", i, r.Seq)
		}
		out = append(out, r.Body)
	}
	return out
}

func TestJournalIngestsWhatACrashLeft(t *testing.T) {
	dir := t.TempDir()
	db := openJournaled(t, dir)
	appendN(t, db, 0, 3)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Killed after acknowledging 1..7, with 1 and 2 ingested before the
	// kill, and a frame cut short at the end.
	writeJournal(t, dir, 1, 8, []byte{9, 0, 0, 0, 1, 2})
	db = openJournaled(t, dir)
	if got := bodies(t, db); len(got) != 8 || !bytes.Equal(got[7], journalEvent(t, 7).Body) {
		t.Fatalf("after recovery the log holds %d events", len(got))
	}
	// The tree covers them: appends continue where the journal ended.
	appendN(t, db, 8, 1)
	if st, err := db.TreeState(context.Background()); err != nil || st.Size != 9 {
		t.Fatalf("tree = %+v, %v", st, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "bulkhead.db"+journalSuffix)); err != nil || fi.Size() == 0 {
		t.Fatalf("journal: %v, %v (an append since recovery must be in it until ingested or closed)", fi, err)
	}
}

func TestJournalRefusesADatabaseThatLostEvents(t *testing.T) {
	cases := []struct {
		name    string
		prepare func(t *testing.T, dir string)
		want    string
	}{
		{"the database ends before the journal begins", func(t *testing.T, dir string) {
			writeJournal(t, dir, 5, 9, nil) // the database holds nothing
		}, "holds events from 5, but the database's log ends at 0"},
		{"the journal and the database disagree", func(t *testing.T, dir string) {
			db := openJournaled(t, dir)
			appendN(t, db, 0, 3)
			db.Close()
			var b []byte
			b = appendFrame(b, 1, journalEvent(t, 42).Body)
			os.WriteFile(filepath.Join(dir, "bulkhead.db"+journalSuffix), b, 0o600)
		}, "disagree on event 1"},
		{"the journal is damaged before its end", func(t *testing.T, dir string) {
			var b []byte
			for i := range 3 {
				b = appendFrame(b, int64(i), journalEvent(t, i).Body)
			}
			b[frameHeader+3] ^= 0xff // in the first frame's body: frames 1 and 2 follow
			os.WriteFile(filepath.Join(dir, "bulkhead.db"+journalSuffix), b, 0o600)
		}, "is damaged at byte 0"},
		{"the journal skips events", func(t *testing.T, dir string) {
			var b []byte
			b = appendFrame(b, 0, journalEvent(t, 0).Body)
			b = appendFrame(b, 2, journalEvent(t, 2).Body)
			os.WriteFile(filepath.Join(dir, "bulkhead.db"+journalSuffix), b, 0o600)
		}, "skips from event 0 to 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			c.prepare(t, dir)
			before, _ := os.ReadFile(filepath.Join(dir, "bulkhead.db"+journalSuffix))
			_, err := Open(context.Background(), "", dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("open = %v, want %q", err, c.want)
			}
			// Nothing was lost: the journal is as it was.
			if after, _ := os.ReadFile(filepath.Join(dir, "bulkhead.db"+journalSuffix)); !bytes.Equal(before, after) {
				t.Fatal("a refused journal was changed")
			}
		})
	}
}

func TestJournalHasOneAppender(t *testing.T) {
	dir := t.TempDir()
	db := openJournaled(t, dir)
	appendN(t, db, 0, 2)
	_, err := Open(context.Background(), "", dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "another process appends to this store's audit log") {
		t.Fatalf("second appender: %v", err)
	}
	// A reader (backup, verify) opens beside it, sees the log as the owner
	// ingested it (within a commit of the owner's appends) and cannot
	// append.
	if got := bodies(t, db); len(got) != 2 {
		t.Fatalf("the owner sees %d events", len(got))
	}
	r := openJournaled(t, dir, AuditReader())
	if got := bodies(t, r); len(got) != 2 {
		t.Fatalf("the reader sees %d events", len(got))
	}
	if _, err := r.AppendEvents(context.Background(), []audit.Row{journalEvent(t, 2)}); err == nil {
		t.Fatal("a reader appended")
	}
	// With the owner gone (killed with events in its journal), a reader
	// ingests them.
	db.Close()
	writeJournal(t, dir, 2, 4, nil)
	r2 := openJournaled(t, dir, AuditReader())
	if got := bodies(t, r2); len(got) != 4 {
		t.Fatalf("the reader ingested up to %d events", len(got))
	}
}

// Every other write ingests the journal first: a database holding an
// effect (a certificate, a grant) holds the record acknowledged before it,
// so a snapshot of it (backup) never shows an effect without its record.
func TestJournalIsIngestedBeforeAnyOtherWrite(t *testing.T) {
	dir := t.TempDir()
	db := openJournaled(t, dir)
	stopIngester(db) // only the write below can ingest
	appendN(t, db, 0, 3)
	count := func() (n int) {
		if err := db.sql.QueryRow(`SELECT COUNT(*) FROM audit_events`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Fatalf("%d events ingested with the ingester stopped", n)
	}
	if n, err := db.AuditBacklog(); n != 3 || err != nil {
		t.Fatalf("backlog = %d, %v; want 3 waiting", n, err)
	}
	if _, err := db.SetMetaOnce(context.Background(), "test", "x"); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 3 {
		t.Fatalf("after a write the database holds %d of 3 acknowledged events", n)
	}
	if n, err := db.AuditBacklog(); n != 0 || err != nil {
		t.Fatalf("backlog = %d, %v; want none", n, err)
	}
}

// FuzzParseJournal: whatever a damaged disk leaves, reading the journal
// neither panics nor takes a damaged frame for an event, and what it
// accepts is exactly the frames it would write.
func FuzzParseJournal(f *testing.F) {
	var good []byte
	for i := range 3 {
		good = appendFrame(good, int64(i), journalEvent(f, i).Body)
	}
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add(append(bytes.Clone(good), 0xff, 0xff, 0xff, 0x7f))
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, valid := parseJournal(data)
		if valid > len(data) {
			t.Fatalf("valid %d > %d", valid, len(data))
		}
		var again []byte
		for _, r := range rows {
			again = appendFrame(again, r.Seq, r.Body)
		}
		if !bytes.Equal(again, data[:valid]) {
			t.Fatal("accepted frames do not re-encode to what was read")
		}
	})
}

// Appends that outrun the database wait for it, and go on once it has
// caught up, rather than fill the journal or fail.
func TestJournalAppendsWaitForTheDatabase(t *testing.T) {
	db := openJournaled(t, t.TempDir())
	stopIngester(db) // only the reads below ingest
	appendN(t, db, 0, highWater)
	done := make(chan error, 1)
	go func() {
		_, err := db.AppendEvents(context.Background(), []audit.Row{journalEvent(t, highWater)})
		done <- err
	}()
	if _, err := db.TreeState(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := bodies(t, db); len(got) != highWater+1 {
		t.Fatalf("the log holds %d events, want %d", len(got), highWater+1)
	}
}
