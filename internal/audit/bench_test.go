package audit_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// The audit log's side-by-side benchmarks, in one run:
//
//	go test -run '^$' -bench BenchmarkAudit -benchtime 3s -count 3 ./internal/audit/
//
// Append: durable appends per second through Log.Record with group commit
// (many concurrent callers, as under load), next to one append per event
// on the same store (what Record would cost without group commit: on
// SQLite one write and fdatasync of the audit journal) and to raw
// single-row SQLite inserts with the same durability settings (the storage
// engine's floor, with no Merkle hashing at all). Every append is on disk
// (fsync or fdatasync) before it is acknowledged.
//
// Verify: entries recomputed and checked per minute by audit.Verify over a
// stored log (every body rehashed and compared with its record hash and its
// search columns, the tree rebuilt, the signed root checked).

func BenchmarkAuditAppend(b *testing.B) {
	for _, callers := range []int{64, 256, 1024} {
		b.Run(fmt.Sprintf("group-commit/sqlite/callers=%d", callers), func(b *testing.B) {
			db := storetest.Backends()[0].Open(b)
			benchRecord(b, audit.New(db, clock.Real{}, storetest.Logger(b)), callers)
		})
	}
	b.Run("append-per-event/sqlite", func(b *testing.B) {
		db := storetest.Backends()[0].Open(b)
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			ev := event(i)
			body, _ := ev.Encode()
			row := audit.Row{Time: ev.Time, ActorKind: string(ev.Actor.Kind), ActorID: ev.Actor.ID, Action: ev.Action,
				Target: ev.Target, Decision: string(ev.Decision), Body: body}
			if _, err := db.AppendEvents(ctx, []audit.Row{row}); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, "appends/s")
	})
	b.Run("raw-insert/sqlite", func(b *testing.B) {
		db := rawSQLite(b)
		ev := event(1)
		body, _ := ev.Encode()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := db.Exec(`INSERT INTO t (seq, body) VALUES (?, ?)`, i, body); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, "appends/s")
	})
	b.Run("group-commit/postgres/callers=256", func(b *testing.B) {
		db := storetest.Backends()[1].Open(b)
		benchRecord(b, audit.New(db, clock.Real{}, storetest.Logger(b)), 256)
	})
}

// benchRecord records b.N events from callers concurrent goroutines.
func benchRecord(b *testing.B, l *audit.Log, callers int) {
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for g := 0; g < callers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if _, err := l.Record(ctx, event(int(i))); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	reportRate(b, "appends/s")
}

func reportRate(b *testing.B, unit string) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit)
}

// rawSQLite opens a bare SQLite file with the store's durability settings
// (WAL, synchronous=FULL) and a one-table schema.
func rawSQLite(b *testing.B) *sql.DB {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)"} {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(b.TempDir(), "raw.db")+"?"+q.Encode())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE t (seq BIGINT PRIMARY KEY, body BLOB NOT NULL)`); err != nil {
		b.Fatal(err)
	}
	return db
}

func BenchmarkAuditVerify(b *testing.B) {
	const n = 250_000
	for _, be := range storetest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			f := newFixture(b, be)
			fill(b, f, n)
			f.checkpoint(b)
			b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					rep, err := f.verify(b)
					if err != nil || rep.Checked != n {
						b.Fatalf("verify = %+v, %v", rep, err)
					}
				}
				b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Minutes(), "entries/min")
			})
		})
	}
}

// fill appends n realistic events in large batches (set-up, not measured).
func fill(b *testing.B, f *fixture, n int) {
	ctx := context.Background()
	start := time.Now()
	for i := 0; i < n; {
		var rows []audit.Row
		for ; i < n && len(rows) < 1024; i++ {
			ev := event(i)
			body, _ := ev.Encode()
			rows = append(rows, audit.Row{Time: ev.Time, ActorKind: string(ev.Actor.Kind), ActorID: ev.Actor.ID,
				Action: ev.Action, Target: ev.Target, Decision: string(ev.Decision), Task: ev.Task, Body: body})
		}
		if _, err := f.db.AppendEvents(ctx, rows); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("filled %d entries in %s", n, time.Since(start).Round(time.Millisecond))
}
