package policy

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cedar-policy/cedar-go"
)

// maxPendingDiffs bounds the differences held between writes. Shadow
// evaluation must never slow or block a real decision, so past this bound
// a difference is counted as unrecorded instead of stored.
const maxPendingDiffs = 10_000

// shadowRecorder collects shadow outcomes on the decision path and writes
// them to the store in batches (PDP.Run, or flush).
type shadowRecorder struct {
	store  ShadowStore
	logger *slog.Logger

	mu      sync.Mutex
	diffs   []ShadowDiff
	stats   map[int64]*ShadowStats
	writeMu sync.Mutex // one write at a time, in order
}

func newShadowRecorder(store ShadowStore, logger *slog.Logger) *shadowRecorder {
	return &shadowRecorder{store: store, logger: logger, stats: map[int64]*ShadowStats{}}
}

// observe counts a shadow evaluation of version and keeps it if the shadow
// decision differs from the live one.
func (r *shadowRecorder) observe(version int64, live Decision, shadowAllowed bool, shadowReasons []string, req cedar.Request, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.stats[version]
	if st == nil {
		st = &ShadowStats{Version: version}
		r.stats[version] = st
	}
	st.Evaluated++
	if shadowAllowed == live.Allowed {
		return
	}
	if len(r.diffs) >= maxPendingDiffs {
		st.Unrecorded++
		return
	}
	r.diffs = append(r.diffs, ShadowDiff{DecisionID: live.ID, Time: now, ShadowVersion: version, LiveVersion: live.Version,
		Principal: req.Principal.String(), Action: req.Action.String(), Resource: req.Resource.String(),
		LiveAllowed: live.Allowed, ShadowAllowed: shadowAllowed, LiveReasons: live.Reasons, ShadowReasons: shadowReasons})
}

// flush writes what was observed. On failure the observations are kept
// for the next flush (within the bound).
func (r *shadowRecorder) flush(ctx context.Context) error {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	r.mu.Lock()
	diffs, stats := r.diffs, r.stats
	r.diffs, r.stats = nil, map[int64]*ShadowStats{}
	r.mu.Unlock()
	if len(diffs) == 0 && len(stats) == 0 {
		return nil
	}
	list := make([]ShadowStats, 0, len(stats))
	for _, s := range stats {
		list = append(list, *s)
	}
	if err := r.store.RecordShadow(ctx, diffs, list); err != nil {
		r.mu.Lock()
		for _, s := range list {
			cur := r.stats[s.Version]
			if cur == nil {
				cur = &ShadowStats{Version: s.Version}
				r.stats[s.Version] = cur
			}
			cur.Evaluated += s.Evaluated
			cur.Unrecorded += s.Unrecorded
		}
		keep := min(len(diffs), maxPendingDiffs-len(r.diffs))
		if lost := len(diffs) - keep; lost > 0 {
			// Counted against the first version seen; they are lost
			// either way and the count keeps the report honest.
			r.stats[diffs[0].ShadowVersion].Unrecorded += int64(lost)
		}
		r.diffs = append(diffs[:keep], r.diffs...)
		r.mu.Unlock()
		return err
	}
	return nil
}
