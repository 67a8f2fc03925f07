package baseline_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/baseline"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// countingSource learns from history and counts its reads; fail makes
// them fail.
type countingSource struct {
	reads atomic.Int64
	fail  atomic.Bool
	// read, if set, hears the count after each read.
	read chan int64
}

func (s *countingSource) Baseline(_ context.Context, agent string) (baseline.Baseline, error) {
	n := s.reads.Add(1)
	if s.read != nil {
		s.read <- n
	}
	if s.fail.Load() {
		return baseline.Baseline{}, errors.New("store down")
	}
	return baseline.Learn(agent, history(1), baseline.DefaultConfig), nil
}

func newTracker(t *testing.T, src baseline.Source, clk clock.Clock) *baseline.Tracker {
	return baseline.NewTracker(baseline.TrackerConfig{Source: src, Clock: clk, Logger: storetest.Logger(t)})
}

// The hot path reads memory: a hundred concurrent calls of a new agent
// read its baseline once, and a refresh happens in the background once
// the baseline is old.
func TestTrackerReadsABaselineOnce(t *testing.T) {
	src := &countingSource{read: make(chan int64, 128)}
	clk := clock.NewFake(start.AddDate(0, 0, 21).Add(10 * time.Hour))
	tr := newTracker(t, src, clk)
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := tr.Score(context.Background(), alpha, "", search, "", false); r.Score != 0 {
				t.Errorf("a usual call scored %+v", r)
			}
		}()
	}
	wg.Wait()
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("%d reads for 100 calls", n)
	}
	clk.Advance(11 * time.Minute)
	tr.Score(context.Background(), alpha, "", search, "", false)
	for n := <-src.read; n != 2; {
		select {
		case n = <-src.read: // the background refresh reports its read
		case <-time.After(30 * time.Second):
			t.Fatal("the old baseline was never read again")
		}
	}
}

// A baseline that cannot be read scores as one still learning, named as
// such for policy, and is not read again at every call.
func TestTrackerWithoutABaseline(t *testing.T) {
	src := &countingSource{}
	src.fail.Store(true)
	clk := clock.NewFake(start.AddDate(0, 0, 21).Add(10 * time.Hour))
	tr := newTracker(t, src, clk)
	for range 10 {
		r := tr.Score(context.Background(), alpha, "", `Tool::"vault/get_secret"`, "", false)
		if !slices.Equal(r.Reasons, []string{baseline.ReasonLearning, baseline.ReasonNoBaseline}) {
			t.Fatalf("without a baseline: %+v", r)
		}
	}
	if n := src.reads.Load(); n != 1 {
		t.Fatalf("%d reads while the source fails", n)
	}
	src.fail.Store(false)
	clk.Advance(31 * time.Second)
	if r := tr.Score(context.Background(), alpha, "", `Tool::"vault/get_secret"`, "", false); !slices.Equal(r.Reasons, []string{baseline.ReasonNovelTool}) {
		t.Fatalf("once readable: %+v", r)
	}
}

// Alerts: at the threshold, once per agent and period, again at once when
// a new reason appears. Changes of an agent's risk are reported.
func TestTrackerAlertsAndChanges(t *testing.T) {
	clk := clock.NewFake(start.AddDate(0, 0, 21).Add(10 * time.Hour))
	tr := newTracker(t, &countingSource{}, clk)
	high := baseline.Risk{Score: 65, Reasons: []string{baseline.ReasonNovelTool, baseline.ReasonDenials}}
	steps := []struct {
		advance        time.Duration
		risk           baseline.Risk
		alert, changed bool
	}{
		{0, baseline.Risk{}, false, false},
		{0, baseline.Risk{Score: 35, Reasons: []string{baseline.ReasonNovelTool}}, false, true},
		{0, high, true, true},
		{time.Minute, high, false, false},
		{time.Minute, baseline.Risk{Score: 85, Reasons: []string{baseline.ReasonNovelTool, baseline.ReasonDenials, baseline.ReasonTainted}}, true, true},
		// A new reason half a minute after an alert: too soon for another.
		{30 * time.Second, baseline.Risk{Score: 70, Reasons: []string{baseline.ReasonNovelTool, baseline.ReasonOffHours}}, false, true},
		{time.Minute, high, false, true},
		{10 * time.Minute, high, true, false},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		alert, changed := tr.Observe(alpha, search, false, s.risk)
		if alert != s.alert || changed != s.changed {
			t.Fatalf("step %d: alert %v changed %v", i, alert, changed)
		}
	}
}

// An agent whose tasks read a few kilobytes each reads megabytes in one:
// its next call in that task scores bulk_read; its other tasks do not.
func TestBulkReadInATask(t *testing.T) {
	clk := clock.NewFake(start.AddDate(0, 0, 21).Add(10 * time.Hour))
	src := baseline.SourceFunc(func(_ context.Context, agent string) (baseline.Baseline, error) {
		b := baseline.Learn(agent, history(1), baseline.DefaultConfig)
		b.MaxBytesPerTask = 40 << 10
		return b, nil
	})
	tr := newTracker(t, src, clk)
	ctx := context.Background()
	for range 100 {
		tr.Read(alpha, "t-bulk", 64<<10) // 6.4 MB in all
		tr.Read(alpha, "t-usual", 300)
	}
	if r := tr.Score(ctx, alpha, "t-bulk", search, "", false); r.Score != 30 || !slices.Equal(r.Reasons, []string{baseline.ReasonBulkRead}) {
		t.Fatalf("the bulk task: %+v", r)
	}
	if r := tr.Score(ctx, alpha, "t-usual", search, "", false); r.Score != 0 {
		t.Fatalf("the usual task: %+v", r)
	}
}

// A request that gives up while its agent's baseline is first read does
// not leave the agent unscored: the read goes on apart from it.
func TestACancelledCallerStillGetsItsAgentScored(t *testing.T) {
	src := &countingSource{}
	tr := newTracker(t, baseline.SourceFunc(func(ctx context.Context, agent string) (baseline.Baseline, error) {
		if err := ctx.Err(); err != nil {
			return baseline.Baseline{}, err
		}
		return src.Baseline(ctx, agent)
	}), clock.NewFake(start.AddDate(0, 0, 21).Add(10*time.Hour)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := tr.Score(ctx, alpha, "", `Tool::"vault/get_secret"`, "", false); !slices.Equal(r.Reasons, []string{baseline.ReasonNovelTool}) {
		t.Fatalf("scored %+v", r)
	}
}

// Reads across many tasks forget the oldest task, never the one reading.
func TestTaskReadsForgetTheOldest(t *testing.T) {
	clk := clock.NewFake(start.AddDate(0, 0, 21).Add(10 * time.Hour))
	tr := newTracker(t, baseline.SourceFunc(func(_ context.Context, agent string) (baseline.Baseline, error) {
		b := baseline.Learn(agent, history(1), baseline.DefaultConfig)
		b.MaxBytesPerTask = 40 << 10
		return b, nil
	}), clk)
	tr.Read(alpha, "bulk", 8<<20)
	for i := range 200 {
		tr.Read(alpha, fmt.Sprintf("small-%d", i), 10)
		tr.Read(alpha, "bulk", 10) // still reading: never forgotten
	}
	if r := tr.Score(context.Background(), alpha, "bulk", search, "", false); !slices.Contains(r.Reasons, baseline.ReasonBulkRead) {
		t.Fatalf("the bulk task was forgotten: %+v", r)
	}
}
