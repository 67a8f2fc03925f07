package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/bulkhead-dev/bulkhead/internal/budget"
)

var _ budget.Store = (*DB)(nil)

// SpendBudget implements budget.Store: one transaction that reads the
// counters (locked on PostgreSQL; SQLite writes are serialized) and adds
// what every limit allows.
func (s *DB) SpendBudget(ctx context.Context, counters []budget.Counter, n int64, all bool) (int64, error) {
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
	var granted int64
	err := s.tx(ctx, func(tx *Tx) error {
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
		if granted == 0 || all && granted < n {
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
		return nil
	})
	if err != nil {
		return 0, err
	}
	return granted, nil
}

// ReleaseBudget implements budget.Store.
func (s *DB) ReleaseBudget(ctx context.Context, keys []string, n int64) error {
	if n <= 0 {
		return nil
	}
	return s.tx(ctx, func(tx *Tx) error {
		for _, k := range keys {
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
