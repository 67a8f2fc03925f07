package audit_test

import (
	"context"
	"sync"
	"testing"

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
	for _, b := range storetest.Backends() {
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
