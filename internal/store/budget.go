package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

var _ budget.Store = (*DB)(nil)

// SpendBudget implements budget.Store in one transaction. All or nothing
// (a call) is one conditional upsert per counter; a partial spend
// (response bytes, a chunk at a time) reads the counters locked (FOR
// UPDATE on PostgreSQL; SQLite writes are serialized) and adds what every
// limit allows.
func (s *DB) SpendBudget(ctx context.Context, counters []budget.Counter, n int64, all bool) (int64, error) {
	return s.SpendBudgetAs(ctx, "", counters, n, all)
}

// SpendBudgetAs is SpendBudget for holder (a standalone gateway), whose
// spends are also counted as its holds, the bound of what it may release.
// The empty holder is the control plane's own gateway: no holds.
func (s *DB) SpendBudgetAs(ctx context.Context, holder string, counters []budget.Counter, n int64, all bool) (int64, error) {
	if n <= 0 || len(counters) == 0 {
		return 0, nil
	}
	// A fixed order, so two spends on the same counters never deadlock.
	cs := slices.Clone(counters)
	slices.SortFunc(cs, func(a, b budget.Counter) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
	if all {
		if err := s.spendAll(ctx, holder, cs, n); err != nil {
			return 0, err
		}
		return n, nil
	}
	var granted int64
	// Spends and releases skip tx's audit catch-up (rawTx): a counter is
	// not an effect whose record must reach the database first (a
	// snapshot holding a spend without its record over-counts, the safe
	// side), and a spend sits on a tool call's path.
	err := s.rawTx(ctx, func(tx *Tx) error {
		lock := ""
		if s.dialect == postgresDialect {
			lock = " FOR UPDATE"
		}
		granted = n
		used := make([]int64, len(cs))
		for i, c := range cs {
			if _, err := tx.exec(ctx, `INSERT INTO budget_counters (key, used) VALUES (?, 0) ON CONFLICT (key) DO NOTHING`, c.Key); err != nil {
				return fmt.Errorf("store: budget %s: %w", c.Key, err)
			}
			if err := tx.queryRow(ctx, `SELECT used FROM budget_counters WHERE key = ?`+lock, c.Key).Scan(&used[i]); err != nil {
				return fmt.Errorf("store: budget %s: %w", c.Key, err)
			}
			granted = min(granted, max(c.Limit-used[i], 0))
		}
		if granted == 0 {
			for i, c := range cs {
				if used[i]+n > c.Limit {
					return &budget.ExhaustedError{Key: c.Key, Limit: c.Limit}
				}
			}
			return &budget.ExhaustedError{Key: cs[0].Key, Limit: cs[0].Limit}
		}
		for _, c := range cs {
			if _, err := tx.exec(ctx, `UPDATE budget_counters SET used = used + ? WHERE key = ?`, granted, c.Key); err != nil {
				return fmt.Errorf("store: budget %s: %w", c.Key, err)
			}
		}
		return hold(ctx, tx, holder, cs, granted)
	})
	if err != nil {
		return 0, err
	}
	return granted, nil
}

// spendAll adds n to every counter or to none. Spends are group-committed:
// a hot counter (a task's budget spent by parallel calls) is locked from
// its update to the commit, so one transaction per spend would admit one
// call per commit (a disk flush). Spends that arrive while a transaction
// commits wait and go together in the next one, each under a savepoint
// of its own, so an exhausted spend is undone alone.
func (s *DB) spendAll(ctx context.Context, holder string, cs []budget.Counter, n int64) error {
	for _, c := range cs {
		if n > c.Limit {
			return &budget.ExhaustedError{Key: c.Key, Limit: c.Limit}
		}
	}
	r := &spendReq{holder: holder, counters: cs, n: n, done: make(chan error, 1)}
	q := &s.spends
	q.mu.Lock()
	q.queue = append(q.queue, r)
	lead := !q.running
	q.running = true
	q.mu.Unlock()
	if lead {
		// The leader commits batches until none is waiting. It commits
		// its own too, so it runs detached from its caller's context.
		go s.commitSpends(context.WithoutCancel(ctx))
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		// The spend may still commit: the budget counts it, which errs on
		// the side of refusing.
		return ctx.Err()
	}
}

// spendQueue holds spends waiting for the next transaction.
type spendQueue struct {
	mu      sync.Mutex
	queue   []*spendReq
	running bool
}

type spendReq struct {
	holder   string
	counters []budget.Counter
	n        int64
	done     chan error
}

// spendTimeout bounds one group transaction.
const spendTimeout = 10 * time.Second

func (s *DB) commitSpends(ctx context.Context) {
	q := &s.spends
	for {
		q.mu.Lock()
		batch := q.queue
		q.queue = nil
		if len(batch) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		results := make([]error, len(batch))
		tctx, cancel := context.WithTimeout(ctx, spendTimeout)
		err := s.rawTx(tctx, func(tx *Tx) error { // see SpendBudgetAs
			for i, r := range batch {
				if results[i] = spendIn(tctx, tx, r); results[i] != nil && !budget.IsExhausted(results[i]) {
					return results[i]
				}
			}
			return nil
		})
		cancel()
		for i, r := range batch {
			if err != nil {
				results[i] = err
			}
			r.done <- results[i]
		}
	}
}

// spendIn applies one spend under a savepoint: one conditional upsert per
// counter, adding only within the limit; the first that cannot undoes
// the others.
func spendIn(ctx context.Context, tx *Tx, r *spendReq) error {
	if _, err := tx.exec(ctx, `SAVEPOINT spend`); err != nil {
		return fmt.Errorf("store: budget savepoint: %w", err)
	}
	for _, c := range r.counters {
		var used int64
		err := tx.queryRow(ctx, `INSERT INTO budget_counters AS b (key, used) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET used = b.used + excluded.used WHERE b.used + excluded.used <= ?
			RETURNING used`, c.Key, r.n, c.Limit).Scan(&used)
		if err != nil {
			if _, rerr := tx.exec(ctx, `ROLLBACK TO SAVEPOINT spend`); rerr != nil {
				return fmt.Errorf("store: budget rollback: %w", rerr)
			}
			if errors.Is(err, sql.ErrNoRows) {
				return &budget.ExhaustedError{Key: c.Key, Limit: c.Limit}
			}
			return fmt.Errorf("store: budget %s: %w", c.Key, err)
		}
	}
	if err := hold(ctx, tx, r.holder, r.counters, r.n); err != nil {
		if _, rerr := tx.exec(ctx, `ROLLBACK TO SAVEPOINT spend`); rerr != nil {
			return fmt.Errorf("store: budget rollback: %w", rerr)
		}
		return err
	}
	if _, err := tx.exec(ctx, `RELEASE SAVEPOINT spend`); err != nil {
		return fmt.Errorf("store: budget savepoint: %w", err)
	}
	return nil
}

// hold counts n of every counter as held by holder (none for "").
func hold(ctx context.Context, tx *Tx, holder string, cs []budget.Counter, n int64) error {
	if holder == "" {
		return nil
	}
	for _, c := range cs {
		if _, err := tx.exec(ctx, `INSERT INTO budget_holds AS h (holder, key, held) VALUES (?, ?, ?)
			ON CONFLICT (holder, key) DO UPDATE SET held = h.held + excluded.held`, holder, c.Key, n); err != nil {
			return fmt.Errorf("store: budget hold %s: %w", c.Key, err)
		}
	}
	return nil
}

// ErrNotHeld refuses a release of more than the releasing gateway spent.
var ErrNotHeld = fmt.Errorf("%w: a gateway may give back only what it spent", fault.Forbidden)

// ReleaseBudget implements budget.Store.
func (s *DB) ReleaseBudget(ctx context.Context, keys []string, n int64) error {
	return s.ReleaseBudgetAs(ctx, "", keys, n)
}

// ReleaseBudgetAs is ReleaseBudget for holder: all or nothing, and only
// within what holder spent of each counter (ErrNotHeld otherwise).
func (s *DB) ReleaseBudgetAs(ctx context.Context, holder string, keys []string, n int64) error {
	if n <= 0 {
		return nil
	}
	return s.rawTx(ctx, func(tx *Tx) error { // see SpendBudgetAs
		for _, k := range keys {
			if holder != "" {
				res, err := tx.exec(ctx, `UPDATE budget_holds SET held = held - ? WHERE holder = ? AND key = ? AND held >= ?`, n, holder, k, n)
				if err != nil {
					return fmt.Errorf("store: release budget %s: %w", k, err)
				}
				if done, err := res.RowsAffected(); err != nil || done != 1 {
					return fmt.Errorf("%w: %s holds less than %d of %s", ErrNotHeld, holder, n, k)
				}
			}
			if _, err := tx.exec(ctx, `UPDATE budget_counters SET used = CASE WHEN used > ? THEN used - ? ELSE 0 END WHERE key = ?`, n, n, k); err != nil {
				return fmt.Errorf("store: release budget %s: %w", k, err)
			}
		}
		return nil
	})
}

// BudgetUsed returns a counter's use (0 for none).
func (s *DB) BudgetUsed(ctx context.Context, key string) (int64, error) {
	var used int64
	err := s.queryRow(ctx, `SELECT used FROM budget_counters WHERE key = ?`, key).Scan(&used)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: budget %s: %w", key, err)
	}
	return used, nil
}
