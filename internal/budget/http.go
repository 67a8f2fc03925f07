package budget

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/httpx"
)

// Bounds of one request: a call has at most four counters (calls and
// bytes, the server's and the task's).
const (
	maxBody     = 16 << 10
	maxCounters = 8
	maxKey      = 512
	maxN        = 1 << 40
)

// Ledger spends and releases counters on behalf of a holder, a standalone
// gateway: its spends are its holds, and it may release only within them.
type Ledger interface {
	SpendBudgetAs(ctx context.Context, holder string, counters []Counter, n int64, all bool) (int64, error)
	ReleaseBudgetAs(ctx context.Context, holder string, keys []string, n int64) error
}

// Recorder records refusals; see audit.Log.
type Recorder interface {
	Record(ctx context.Context, ev audit.Event) (audit.Event, error)
}

// ActionRelease is the record of a release refused: a gateway giving back
// more than it spent.
const ActionRelease = "budget.release"

// Handlers serve the spend and release API to standalone gateways; the
// caller wraps them in its guard (gateways only) and names the caller
// (actor), whose ID is the holder.
func Handlers(s Ledger, actor func(*http.Request) audit.Actor, rec Recorder, logger *slog.Logger) (spend, release http.Handler) {
	fail := func(w http.ResponseWriter, r *http.Request, err error) { httpx.WriteError(w, r, logger, err) }
	spend = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req api.BudgetSpend
		if err := httpx.DecodeJSON(w, r, maxBody, &req); err != nil {
			fail(w, r, err)
			return
		}
		cs := make([]Counter, len(req.Counters))
		ks := make([]string, len(req.Counters))
		for i, c := range req.Counters {
			cs[i], ks[i] = Counter{Key: c.Key, Limit: c.Limit}, c.Key
			if c.Limit <= 0 || c.Limit > maxN {
				fail(w, r, fmt.Errorf("%w: counter %q: limit must be 1 to %d", fault.Invalid, c.Key, int64(maxN)))
				return
			}
		}
		if err := checkRequest(ks, req.N); err != nil {
			fail(w, r, err)
			return
		}
		got, err := s.SpendBudgetAs(r.Context(), actor(r).ID, cs, req.N, req.All)
		var ex *ExhaustedError
		switch {
		case errors.As(err, &ex):
			httpx.WriteJSON(w, http.StatusOK, api.BudgetSpent{Exhausted: &api.BudgetCounter{Key: ex.Key, Limit: ex.Limit}})
		case err != nil:
			fail(w, r, fmt.Errorf("%w: %w", fault.Unavailable, err))
		default:
			httpx.WriteJSON(w, http.StatusOK, api.BudgetSpent{Granted: got})
		}
	})
	release = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req api.BudgetRelease
		if err := httpx.DecodeJSON(w, r, maxBody, &req); err != nil {
			fail(w, r, err)
			return
		}
		if err := checkRequest(req.Keys, req.N); err != nil {
			fail(w, r, err)
			return
		}
		who := actor(r)
		err := s.ReleaseBudgetAs(r.Context(), who.ID, req.Keys, req.N)
		switch {
		case errors.Is(err, fault.Forbidden):
			// A gateway refunding what it did not spend: evidence.
			ev := audit.Event{Actor: who, Action: ActionRelease, Target: req.Keys[0], Decision: audit.Deny,
				Reasons: []string{err.Error()}, Detail: map[string]string{"n": strconv.FormatInt(req.N, 10), "keys": strings.Join(req.Keys, " ")}}
			if _, rerr := rec.Record(r.Context(), ev); rerr != nil {
				logger.Error("could not record a refused budget release", "err", rerr)
			}
			fail(w, r, err)
			return
		case err != nil:
			fail(w, r, fmt.Errorf("%w: %w", fault.Unavailable, err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return spend, release
}

func checkRequest(keys []string, n int64) error {
	if len(keys) == 0 || len(keys) > maxCounters {
		return fmt.Errorf("%w: name 1 to %d counters", fault.Invalid, maxCounters)
	}
	if n <= 0 || n > maxN {
		return fmt.Errorf("%w: n must be 1 to %d", fault.Invalid, int64(maxN))
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if k == "" || len(k) > maxKey || seen[k] {
			return fmt.Errorf("%w: counter keys must be distinct, non-empty and at most %d bytes", fault.Invalid, maxKey)
		}
		seen[k] = true
	}
	return nil
}
