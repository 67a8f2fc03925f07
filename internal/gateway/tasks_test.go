package gateway

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

func TestTaskBudgets(t *testing.T) {
	b := &budgets{clock: clock.NewFake(time.Unix(0, 0))}
	files, wiki := &Server{Name: "files"}, &Server{Name: "wiki", Budget: Budget{Calls: 10}}
	lim := TaskLimits{Calls: 3, ResponseBytes: 100}
	// The task's limit counts across servers.
	for i, s := range []*Server{files, wiki, files} {
		if err := b.admit(s, "a", "tk", lim); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if err := b.admit(wiki, "a", "tk", lim); err == nil || !strings.Contains(err.Error(), "scope_limits") {
		t.Fatalf("fourth call in the task: %v", err)
	}
	// Calls outside the task do not count against it.
	if err := b.admit(files, "a", "", TaskLimits{}); err != nil {
		t.Fatal(err)
	}
	// Bytes: the stream is cut once the task's byte budget is spent.
	if !b.charge(files, "a", "other", 500) {
		t.Fatal("a task without limits was cut")
	}
	b2 := &budgets{clock: clock.NewFake(time.Unix(0, 0))}
	if err := b2.admit(files, "a", "tk", lim); err != nil {
		t.Fatal(err)
	}
	if !b2.charge(files, "a", "tk", 60) || b2.charge(files, "a", "tk", 60) {
		t.Fatal("the task's byte budget was not enforced")
	}
	if err := b2.admit(files, "a", "tk", lim); err == nil {
		t.Fatal("admitted after the byte budget was spent")
	}
	// The end of the task drops its counts.
	b.dropTask("tk")
	if err := b.admit(wiki, "a", "tk", lim); err != nil {
		t.Fatalf("after the task's end: %v", err)
	}
}

type fakeTasks struct {
	state TaskState
	reads atomic.Int64
	err   error
}

func (f *fakeTasks) TaskState(context.Context, string) (TaskState, error) {
	f.reads.Add(1)
	return f.state, f.err
}
func (f *fakeTasks) ReportOutput(context.Context, string, string, cedar.EntityUID) (bool, bool, error) {
	return false, false, nil
}
func (f *fakeTasks) UseGrant(context.Context, string, GrantUse) error { return nil }

func TestTaskCacheIsBoundedInAge(t *testing.T) {
	clk := clock.NewFake(time.Unix(100, 0))
	src := &fakeTasks{state: TaskState{ID: "tk", Open: true}}
	var ended []string
	tc := newTaskCache(src, clk, func(id string) { ended = append(ended, id) })
	for range 5 {
		if _, err := tc.get(context.Background(), "tk"); err != nil {
			t.Fatal(err)
		}
	}
	if src.reads.Load() != 1 {
		t.Fatalf("%d reads within the max age, want 1", src.reads.Load())
	}
	// The task ends elsewhere: within TaskStateMaxAge the gateway sees it,
	// and drops its budgets once.
	src.state.Open = false
	clk.Advance(TaskStateMaxAge)
	for range 3 {
		st, _ := tc.get(context.Background(), "tk")
		if st.Open {
			t.Fatal("an ended task is still open after the max age")
		}
		clk.Advance(TaskStateMaxAge)
	}
	if len(ended) != 1 {
		t.Fatalf("ended called %d times", len(ended))
	}
	// A read error is an error, never a stale or empty state.
	src.err = errors.New("control plane down")
	clk.Advance(TaskStateMaxAge)
	if _, err := tc.get(context.Background(), "tk"); err == nil {
		t.Fatal("a failed read returned a state")
	}
}

func TestGrantNamesAreTheGrantsInForce(t *testing.T) {
	now := time.Unix(1000, 0)
	c := &caller{task: &TaskState{Grants: []TaskGrant{
		{Name: "m/live", ExpiresAt: now.Add(time.Minute), MaxUses: 2, Uses: 1},
		{Name: "m/expired", ExpiresAt: now},
		{Name: "m/spent", ExpiresAt: now.Add(time.Minute), MaxUses: 1, Uses: 1},
		{Name: "m/unlimited", ExpiresAt: now.Add(time.Minute)},
	}}}
	if got := strings.Join(c.grantNames(now), " "); got != "m/live m/unlimited" {
		t.Fatalf("grants = %q", got)
	}
	if (&caller{}).grantNames(now) != nil {
		t.Fatal("grants without a task")
	}
}
