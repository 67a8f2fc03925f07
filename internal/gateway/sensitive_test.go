package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

// exfiltrate reads from a sensitive tool, chunk bytes per call, every
// gap of fake time, until the gateway cuts an answer or refuses a call,
// and returns how many bytes the agent received.
func exfiltrate(t *testing.T, b *budgets, clk *clock.Fake, chunk int64, gap time.Duration) int64 {
	t.Helper()
	ctx := context.Background()
	s := &Server{Name: "vault"}
	var got int64
	for i := range 10_000 {
		u := use{s: s, agent: "a", task: "tk", sensitive: true, root: "a", resource: fmt.Sprintf("r%d", i%3), day: clk.Now().UTC().Format(time.DateOnly)}
		if _, err := b.admit(ctx, u); err != nil {
			return got
		}
		m := b.meter(ctx, u)
		for n := int64(0); n < chunk; n += 1024 {
			if !m.charge(1024) {
				m.close()
				return got
			}
			got += 1024
		}
		m.close()
		clk.Advance(gap)
	}
	t.Fatal("never stopped")
	return got
}

// Slow exfiltration — small reads spread over hours, under any rate
// limit — ends at the same total as one fast read: the sensitive budget
// does not refill with time.
func TestSlowExfiltrationStopsAtTheSameTotal(t *testing.T) {
	const limit = 100 << 10
	for _, c := range []struct {
		name  string
		sv    Sensitive
		chunk int64
		gap   time.Duration
	}{
		{"task, fast", Sensitive{Level: "high", BytesPerTask: limit}, 1 << 20, 0},
		{"task, slow", Sensitive{Level: "high", BytesPerTask: limit}, 4 << 10, 10 * time.Minute},
		{"agent-day, fast", Sensitive{Level: "high", BytesPerAgentDay: limit}, 1 << 20, 0},
		{"agent-day, slow", Sensitive{Level: "high", BytesPerAgentDay: limit}, 4 << 10, time.Minute},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := clock.NewFake(time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC))
			b := &budgets{clock: clk, store: &budget.Memory{}, scope: "https://gw", sensitive: c.sv}
			if got := exfiltrate(t, b, clk, c.chunk, c.gap); got != limit {
				t.Fatalf("the agent received %d bytes, want exactly %d", got, limit)
			}
		})
	}
}

// Bulk enumeration: touching more distinct sensitive resources than the
// limit is refused; touching one again costs nothing; other tools and
// other days are not counted against it.
func TestDistinctSensitiveResources(t *testing.T) {
	ctx := context.Background()
	b := &budgets{clock: clock.Real{}, store: &budget.Memory{}, scope: "https://gw", sensitive: Sensitive{Level: "high", ResourcesPerTask: 3, ResourcesPerAgentDay: 5}}
	s := &Server{Name: "vault"}
	call := func(task, resource, day string, sensitive bool) error {
		_, err := b.admit(ctx, use{s: s, agent: "a", task: task, sensitive: sensitive, root: "a", resource: resource, day: day})
		return err
	}
	for _, c := range []struct {
		task, resource, day string
		sensitive           bool
		refused             string
	}{
		{"t1", "r1", "d1", true, ""},
		{"t1", "r2", "d1", true, ""},
		{"t1", "r1", "d1", true, ""}, // again: free
		{"t1", "r3", "d1", true, ""},
		{"t1", "r4", "d1", true, "this task has touched 3 distinct"},
		{"t1", "r2", "d1", true, ""},  // still free
		{"t1", "x9", "d1", false, ""}, // not sensitive
		{"t2", "r4", "d1", true, ""},  // a new task, the same day: 4th of the day
		{"t2", "r5", "d1", true, ""},  // 5th
		{"t2", "r6", "d1", true, "5 distinct high-sensitivity resources touched today"},
		{"t2", "r6", "d2", true, ""}, // the next day
	} {
		err := call(c.task, c.resource, c.day, c.sensitive)
		if (err != nil) != (c.refused != "") || err != nil && !strings.Contains(err.Error(), c.refused) {
			t.Fatalf("%+v: %v", c, err)
		}
	}
}

// A refused touch leaves nothing spent: the resource is still untouched.
func TestRefusedTouchSpendsNothing(t *testing.T) {
	ctx := context.Background()
	store := &budget.Memory{}
	b := &budgets{clock: clock.Real{}, store: store, scope: "https://gw", sensitive: Sensitive{Level: "high", ResourcesPerTask: 1, ResourcesPerAgentDay: 1}}
	s := &Server{Name: "vault", Budget: Budget{Calls: 10}}
	if _, err := b.admit(ctx, use{s: s, agent: "a", task: "t1", sensitive: true, root: "a", resource: "r1", day: "d"}); err != nil {
		t.Fatal(err)
	}
	// r2 passes the task's count (a new task) but not the day's.
	if _, err := b.admit(ctx, use{s: s, agent: "a", task: "t2", sensitive: true, root: "a", resource: "r2", day: "d"}); err == nil {
		t.Fatal("admitted past the day's limit")
	}
	// The refused call gave back its call and its task's touch: in t2, r1
	// (already touched today) is admitted, all ten of t2's calls, and the
	// eleventh is refused.
	for i := range 10 {
		if _, err := b.admit(ctx, use{s: s, agent: "a", task: "t2", sensitive: true, root: "a", resource: "r1", day: "d"}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if _, err := b.admit(ctx, use{s: s, agent: "a", task: "t2", sensitive: true, root: "a", resource: "r1", day: "d"}); err == nil || !strings.Contains(err.Error(), "call budget of 10") {
		t.Fatalf("t2's eleventh call: %v", err)
	}
}
