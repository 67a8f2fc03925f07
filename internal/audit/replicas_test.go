package audit_test

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// TestReplicasShareOneLog runs two control planes' logs (separate
// connection pools, separate group committers, separate checkpointers) on
// one store, appending and signing concurrently, and checks that the result
// is one contiguous, verifiable log.
func TestReplicasShareOneLog(t *testing.T) {
	ctx := context.Background()
	// Replicas share PostgreSQL; a SQLite store has one control plane,
	// which owns its audit journal (store's TestJournalHasOneAppender).
	for _, b := range []storetest.Backend{storetest.Postgres} {
		t.Run(b.Name, func(t *testing.T) {
			dsn, dir := b.DSN(t)
			key, _, err := audit.LoadOrCreateKey(t.TempDir(), logName)
			if err != nil {
				t.Fatal(err)
			}
			var replicas []*fixture
			for range 2 {
				db, err := store.Open(ctx, dsn, dir, storetest.Logger(t))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				f := &fixture{db: db, key: key, clock: clock.NewFake(t0)}
				f.log = audit.New(db, f.clock, storetest.Logger(t))
				f.cp, _ = audit.NewCheckpointer(audit.CheckpointerConfig{Store: db, Key: key, Clock: f.clock, Logger: storetest.Logger(t)})
				replicas = append(replicas, f)
			}
			var wg sync.WaitGroup
			for r, f := range replicas {
				for w := range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range 40 {
							if _, err := f.log.Record(ctx, event(r*1000+w*100+i)); err != nil {
								t.Error(err)
								return
							}
							if i%10 == 0 {
								if _, err := f.cp.Checkpoint(ctx); err != nil {
									t.Error(err)
									return
								}
							}
						}
					}()
				}
			}
			wg.Wait()
			replicas[1].checkpoint(t)
			rep, err := replicas[0].verify(t)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Size != 2*8*40 || rep.Latest.Size != rep.Size || rep.Checkpoints < 2 {
				t.Fatalf("report = %+v", rep)
			}
		})
	}
}

// TestEveryReplicaDeliversEveryCommit: a subscriber on one replica receives
// what the other replica commits, in the one sequence order, and nothing
// is skipped, whoever commits; on PostgreSQL a commit elsewhere is
// delivered at once (LISTEN/NOTIFY), not at the next poll (the fake
// clock never polls here).
func TestEveryReplicaDeliversEveryCommit(t *testing.T) {
	ctx := context.Background()
	b := storetest.Postgres // two writers need PostgreSQL
	dsn, dir := b.DSN(t)
	var logs []*audit.Log
	for range 2 {
		db, err := store.Open(ctx, dsn, dir, storetest.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		logs = append(logs, audit.New(db, clock.NewFake(t0), storetest.Logger(t)))
	}
	live, cancel := logs[1].Subscribe(nil, 1024)
	defer cancel()
	const n = 60
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		written = map[int64]audit.Event{}
	)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n / 3 {
				// Most on the replica that does not subscribe.
				l := logs[0]
				if i%5 == 0 {
					l = logs[1]
				}
				ev, err := l.Record(ctx, event(w*100+i))
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				written[ev.Seq] = ev
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	want := int64(-1)
	deadline := time.After(10 * time.Second)
	for got := 0; got < n; got++ {
		select {
		case ev, ok := <-live:
			if !ok {
				t.Fatal("subscription dropped")
			}
			if ev.Seq != want+1 && want >= 0 {
				t.Fatalf("event %d after %d: a gap or a reordering", ev.Seq, want)
			}
			// Delivered as committed, whether read back or handed over
			// by the committing replica.
			if w := written[ev.Seq]; w.Action != ev.Action || w.Target != ev.Target || !w.Time.Equal(ev.Time) || !reflect.DeepEqual(w.Detail, ev.Detail) {
				t.Fatalf("event %d delivered as %+v, committed as %+v", ev.Seq, ev, w)
			}
			want = ev.Seq
		case <-deadline:
			t.Fatalf("%d of %d events delivered to the other replica", got, n)
		}
	}
}

// BenchmarkReplicaPropagation: the time from a commit on one replica to its
// delivery to a subscriber (a gateway's revocation feed) on the other
// replica, beside delivery on the committing replica itself. Both on one
// PostgreSQL; the other replica is woken by LISTEN/NOTIFY.
func BenchmarkReplicaPropagation(b *testing.B) {
	ctx := context.Background()
	dsn, dir := storetest.Postgres.DSN(b)
	var logs []*audit.Log
	for range 2 {
		db, err := store.Open(ctx, dsn, dir, storetest.Logger(b))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		logs = append(logs, audit.New(db, clock.Real{}, storetest.Logger(b)))
	}
	for _, c := range []struct {
		name string
		sub  *audit.Log
	}{{"same-replica", logs[0]}, {"other-replica", logs[1]}} {
		b.Run(c.name, func(b *testing.B) {
			live, cancel := c.sub.Subscribe(nil, 1024)
			defer cancel()
			var total time.Duration
			for i := 0; i < b.N; i++ {
				start := time.Now()
				rec, err := logs[0].Record(ctx, event(i))
				if err != nil {
					b.Fatal(err)
				}
				for ev := range live {
					if ev.Seq == rec.Seq {
						break
					}
				}
				total += time.Since(start)
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/delivered")
		})
	}
}
