// Package budget keeps the budget counters that every gateway shares.
//
// A budget (calls, or response bytes, per server, agent and task, or per
// task) never refills: only a new task starts anew. With several gateways
// in front of the same servers, a budget held in each gateway's memory
// would allow N times its limit; so each spend is one transaction in the
// control plane's store (Store), reached directly by an in-process gateway
// and through Service's API by a standalone one.
package budget

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Counter is one budget: a key naming what is counted, and its limit.
type Counter struct {
	Key   string `json:"key"`
	Limit int64  `json:"limit"`
}

// Store spends counters atomically.
type Store interface {
	// SpendBudget adds to every counter, in one transaction, the largest
	// amount up to n that every limit allows, and returns it. With all,
	// it is n or nothing: an *ExhaustedError names a counter that cannot
	// take n. Without all, it fails with *ExhaustedError only when nothing
	// is left.
	SpendBudget(ctx context.Context, counters []Counter, n int64, all bool) (int64, error)
	// ReleaseBudget gives n back to each counter: a call that was not
	// forwarded, bytes reserved and not sent.
	ReleaseBudget(ctx context.Context, keys []string, n int64) error
}

// ExhaustedError is a spend a counter's limit refuses.
type ExhaustedError struct {
	Key   string
	Limit int64
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("budget: %s is spent (limit %d)", e.Key, e.Limit)
}

// IsExhausted reports whether err is a spend a limit refused.
func IsExhausted(err error) bool {
	var e *ExhaustedError
	return errors.As(err, &e)
}

// Key builds a counter key from its parts; a part may not contain "|".
func Key(parts ...string) (string, error) {
	for _, p := range parts {
		if strings.Contains(p, "|") {
			return "", fmt.Errorf("budget: key part %q contains '|'", p)
		}
	}
	return strings.Join(parts, "|"), nil
}

// Memory is a Store in one process's memory: for a single gateway with
// no control plane store (tests). It is exact within that process.
type Memory struct {
	mu   sync.Mutex
	used map[string]int64
}

var _ Store = (*Memory)(nil)

// SpendBudget implements Store.
func (m *Memory) SpendBudget(_ context.Context, counters []Counter, n int64, all bool) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.used == nil {
		m.used = map[string]int64{}
	}
	granted := n
	for _, c := range counters {
		granted = min(granted, max(c.Limit-m.used[c.Key], 0))
	}
	if n > 0 && (granted == 0 || all && granted < n) {
		for _, c := range counters {
			if m.used[c.Key]+n > c.Limit {
				return 0, &ExhaustedError{Key: c.Key, Limit: c.Limit}
			}
		}
	}
	for _, c := range counters {
		m.used[c.Key] += granted
	}
	return granted, nil
}

// ReleaseBudget implements Store.
func (m *Memory) ReleaseBudget(_ context.Context, keys []string, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		m.used[k] = max(m.used[k]-n, 0)
	}
	return nil
}
