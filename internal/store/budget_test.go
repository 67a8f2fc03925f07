package store_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// Two replicas' stores (separate pools) spend one task's budget from many
// goroutines at once: exactly the limit is granted, never more.
func TestBudgetSpendsAreExactAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	// Replicas share PostgreSQL; a SQLite store has one control plane
	// (TestJournalHasOneAppender).
	for _, b := range []storetest.Backend{storetest.Postgres} {
		t.Run(b.Name, func(t *testing.T) {
			dsn, dir := b.DSN(t)
			var dbs []*store.DB
			for range 2 {
				db, err := store.Open(ctx, dsn, dir, storetest.Logger(t))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				dbs = append(dbs, db)
			}
			const limit = 25
			// The task's calls and a server's calls for the agent: a spend
			// takes one of each or none.
			counters := []budget.Counter{{Key: "task|tk|calls", Limit: limit}, {Key: "server|gw|files|a|tk|calls", Limit: 100}}
			var granted, refused atomic.Int64
			var wg sync.WaitGroup
			for w := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					db := dbs[w%2]
					for range 4 {
						n, err := db.SpendBudget(ctx, counters, 1, true)
						switch {
						case budget.IsExhausted(err):
							refused.Add(1)
						case err != nil:
							t.Error(err)
							return
						default:
							granted.Add(n)
						}
					}
				}()
			}
			wg.Wait()
			if granted.Load() != limit || refused.Load() != 64-limit {
				t.Fatalf("granted %d and refused %d of 64 spends, want %d and %d", granted.Load(), refused.Load(), limit, 64-limit)
			}
			for _, c := range counters {
				if used, err := dbs[0].BudgetUsed(ctx, c.Key); err != nil || used != limit {
					t.Fatalf("%s used %d (%v), want %d", c.Key, used, err, limit)
				}
			}
			// A partial spend takes what is left of the byte budget, then
			// refuses; a release gives back.
			bytes := []budget.Counter{{Key: "task|tk|bytes", Limit: 1000}}
			if n, err := dbs[1].SpendBudget(ctx, bytes, 800, false); err != nil || n != 800 {
				t.Fatalf("spend 800: %d, %v", n, err)
			}
			if n, err := dbs[0].SpendBudget(ctx, bytes, 800, false); err != nil || n != 200 {
				t.Fatalf("spend 800 of the 200 left: %d, %v", n, err)
			}
			if _, err := dbs[0].SpendBudget(ctx, bytes, 1, false); !budget.IsExhausted(err) {
				t.Fatalf("spend past the limit: %v", err)
			}
			if _, err := dbs[1].SpendBudget(ctx, bytes, 1, true); !budget.IsExhausted(err) {
				t.Fatalf("all-or-nothing past the limit: %v", err)
			}
			if err := dbs[1].ReleaseBudget(ctx, []string{"task|tk|bytes"}, 300); err != nil {
				t.Fatal(err)
			}
			if n, err := dbs[0].SpendBudget(ctx, bytes, 500, true); !budget.IsExhausted(err) || n != 0 {
				t.Fatalf("all-or-nothing 500 of 300: %d, %v", n, err)
			}
			if n, err := dbs[0].SpendBudget(ctx, bytes, 300, true); err != nil || n != 300 {
				t.Fatalf("all-or-nothing 300 of 300: %d, %v", n, err)
			}
		})
	}
}

// A gateway gives back only what it spent: holds bound releases, all or
// nothing; the control plane's own gateway (no holder) is not bounded.
func TestBudgetReleasesAreBoundedByHolds(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			db := b.Open(t)
			cs := []budget.Counter{{Key: "task|tk|calls", Limit: 10}, {Key: "task|tk|bytes", Limit: 1000}}
			if _, err := db.SpendBudgetAs(ctx, "gw-a", cs, 3, true); err != nil {
				t.Fatal(err)
			}
			if _, err := db.SpendBudgetAs(ctx, "gw-a", cs[1:], 100, false); err != nil {
				t.Fatal(err)
			}
			cases := []struct {
				name   string
				holder string
				keys   []string
				n      int64
				ok     bool
			}{
				{"another gateway", "gw-b", []string{"task|tk|calls"}, 1, false},
				{"more than spent", "gw-a", []string{"task|tk|calls"}, 4, false},
				{"one key held, one not enough", "gw-a", []string{"task|tk|bytes", "task|tk|calls"}, 50, false},
				{"within the hold", "gw-a", []string{"task|tk|calls"}, 2, true},
				{"the rest and one more", "gw-a", []string{"task|tk|calls"}, 2, false},
				{"the control plane's own gateway", "", []string{"task|tk|calls"}, 1, true},
			}
			for _, c := range cases {
				err := db.ReleaseBudgetAs(ctx, c.holder, c.keys, c.n)
				if (err == nil) != c.ok || (err != nil && !errors.Is(err, store.ErrNotHeld)) {
					t.Fatalf("%s: %v", c.name, err)
				}
			}
			// The refused releases changed nothing: 3 spent, 2 and 1 given back.
			if used, _ := db.BudgetUsed(ctx, "task|tk|calls"); used != 0 {
				t.Fatalf("calls used %d, want 0", used)
			}
			if used, _ := db.BudgetUsed(ctx, "task|tk|bytes"); used != 103 {
				t.Fatalf("bytes used %d, want 103 (nothing given back)", used)
			}
		})
	}
}
