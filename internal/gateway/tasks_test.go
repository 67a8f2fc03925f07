package gateway

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/baseline"
	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

func TestTaskBudgets(t *testing.T) {
	ctx := context.Background()
	newBudgets := func() *budgets {
		return &budgets{clock: clock.NewFake(time.Unix(0, 0)), store: &budget.Memory{}, scope: "https://gw"}
	}
	b := newBudgets()
	files, wiki := &Server{Name: "files"}, &Server{Name: "wiki", Budget: Budget{Calls: 10}}
	lim := TaskLimits{Calls: 3, ResponseBytes: 100}
	// The task's limit counts across servers.
	for i, s := range []*Server{files, wiki, files} {
		if _, err := b.admit(ctx, use{s: s, agent: "a", task: "tk", lim: lim}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if _, err := b.admit(ctx, use{s: wiki, agent: "a", task: "tk", lim: lim}); err == nil || !strings.Contains(err.Error(), "scope_limits") {
		t.Fatalf("fourth call in the task: %v", err)
	}
	// Calls outside the task do not count against it.
	if _, err := b.admit(ctx, use{s: files, agent: "a", task: "", lim: TaskLimits{}}); err != nil {
		t.Fatal(err)
	}
	// Bytes: the stream is cut once the task's byte budget is spent.
	if m := b.meter(ctx, use{s: files, agent: "a", task: "other", lim: TaskLimits{}}); !m.charge(500) {
		t.Fatal("a task without limits was cut")
	}
	b2 := newBudgets()
	adm, err := b2.admit(ctx, use{s: files, agent: "a", task: "tk", lim: lim})
	if err != nil {
		t.Fatal(err)
	}
	m := b2.meter(ctx, use{s: files, agent: "a", task: "tk", lim: lim})
	if !m.charge(60) || m.charge(60) {
		t.Fatal("the task's byte budget was not enforced")
	}
	m.close()
	if _, err := b2.admit(ctx, use{s: files, agent: "a", task: "tk", lim: lim}); err == nil {
		t.Fatal("admitted after the byte budget was spent")
	}
	// A refunded call is given back.
	if err := adm.refund(ctx); err != nil {
		t.Fatal(err)
	}
	// A new task starts anew.
	if _, err := b.admit(ctx, use{s: wiki, agent: "a", task: "tk2", lim: lim}); err != nil {
		t.Fatalf("in a new task: %v", err)
	}
}

// A response's unused reservation is given back when it ends, so what
// the budget counts is what was sent.
func TestMeterGivesBackWhatItDidNotSend(t *testing.T) {
	ctx := context.Background()
	store := &budget.Memory{}
	b := &budgets{clock: clock.NewFake(time.Unix(0, 0)), store: store, scope: "https://gw"}
	s := &Server{Name: "files", Budget: Budget{ResponseBytes: 1 << 20}}
	for range 3 {
		m := b.meter(ctx, use{s: s, agent: "a", task: "", lim: TaskLimits{}})
		if !m.charge(1000) {
			t.Fatal("cut within the budget")
		}
		m.close()
	}
	m := b.meter(ctx, use{s: s, agent: "a", task: "", lim: TaskLimits{}})
	if !m.charge(1<<20 - 3000) {
		t.Fatal("the rest of the budget was not available: unused reservations were kept")
	}
	if m.charge(1) {
		t.Fatal("a byte past the budget was allowed")
	}
	m.close()
}

// A store that cannot be reached refuses: a budget that cannot be
// checked does not hold.
func TestBudgetStoreFailureRefuses(t *testing.T) {
	ctx := context.Background()
	b := &budgets{clock: clock.NewFake(time.Unix(0, 0)), store: failingBudgets{}, scope: "https://gw"}
	s := &Server{Name: "files", Budget: Budget{Calls: 5, ResponseBytes: 100}}
	if _, err := b.admit(ctx, use{s: s, agent: "a", task: "", lim: TaskLimits{}}); err == nil {
		t.Fatal("admitted without its budget")
	}
	if b.meter(ctx, use{s: s, agent: "a", task: "", lim: TaskLimits{}}).charge(1) {
		t.Fatal("bytes charged without the budget")
	}
	// A server without budgets needs no store.
	if _, err := b.admit(ctx, use{s: &Server{Name: "free"}, agent: "a", task: "", lim: TaskLimits{}}); err != nil {
		t.Fatal(err)
	}
}

type failingBudgets struct{}

func (failingBudgets) SpendBudget(context.Context, []budget.Counter, int64, bool) (int64, error) {
	return 0, errors.New("store down")
}
func (failingBudgets) ReleaseBudget(context.Context, []string, int64) error {
	return errors.New("store down")
}

type fakeTasks struct {
	state     TaskState
	reads     atomic.Int64
	err       error
	reportErr atomic.Pointer[error] // ReportOutput fails with it

	mu       sync.Mutex
	suspects []string // what reports of suspect output said
}

func (f *fakeTasks) TaskState(context.Context, string) (TaskState, error) {
	f.reads.Add(1)
	return f.state, f.err
}
func (f *fakeTasks) ReportOutput(_ context.Context, _, _ string, _ cedar.EntityUID, suspect string) (bool, bool, error) {
	if err := f.reportErr.Load(); err != nil {
		return false, false, *err
	}
	if suspect == "" {
		return false, false, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.suspects = append(f.suspects, suspect)
	return true, true, nil
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

// A call whose task's taint cannot be recorded is not forwarded, and gives
// back the budget it spent: a control plane outage does not use up the
// task's calls.
func TestUnrecordedTaintSpendsNoBudget(t *testing.T) {
	cfg, err := ParseConfig([]byte(`listen: 127.0.0.1:0
resource: https://gw.test
servers:
  - name: files
    http: { url: "http://127.0.0.1:1", routes: [{ name: all, method: GET, path: "/*" }] }
    callers: ["spiffe://bulkhead.local/agent/*"]
    budget: { calls: 1 }
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	rev := NewRevocations(storetest.Logger(t))
	rev.SetReady()
	src := &fakeTasks{state: TaskState{ID: "tk", Agent: "spiffe://bulkhead.local/agent/alpha", Open: true}}
	g, err := New(cfg, Deps{Verifier: &Verifier{}, Revocations: rev, Decider: benchDecider{}, Audit: benchRecorder{}, Tasks: src,
		Budgets: &budget.Memory{}, Baselines: noBaseline, Clock: clock.Real{}, Logger: storetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	id := spiffeid.RequireFromString("spiffe://bulkhead.local/agent/alpha")
	call := func() *refusal {
		c := &caller{id: id, claims: &token.Claims{Subject: id.String(), Task: "tk"}}
		if err := g.loadTask(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		_, rf := g.authorize(context.Background(), c, action{server: &cfg.Servers[0], name: "GET", resource: policy.Route("files", "all"), input: []byte("{}"), metered: true})
		return rf
	}
	down := errors.New("control plane down")
	src.reportErr.Store(&down)
	for range 3 {
		if rf := call(); rf == nil || !strings.Contains(rf.err.Error(), "taint could not be recorded") {
			t.Fatalf("with the taint unrecorded: %v", rf)
		}
	}
	src.reportErr.Store(nil)
	if rf := call(); rf != nil {
		t.Fatalf("the task's one call was spent by refused ones: %v", rf.err)
	}
	if rf := call(); rf == nil || !strings.Contains(rf.err.Error(), "call budget") {
		t.Fatalf("a second call: %v", rf)
	}
}

// noBaseline: every agent still learning.
var noBaseline = baseline.SourceFunc(func(_ context.Context, agent string) (baseline.Baseline, error) {
	return baseline.Learn(agent, nil, baseline.DefaultConfig), nil
})
