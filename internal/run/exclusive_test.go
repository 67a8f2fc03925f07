package run

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

// guard bounds every wait on the code under test, so that a bug fails the
// test instead of hanging it. Nothing waits on it in a passing run.
const guard = 10 * time.Second

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(guard):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// locks is a fake lock server: one holder per name, and a session that the
// test can kill.
type locks struct {
	mu   sync.Mutex
	held map[string]*fakeLease
}

type fakeLease struct {
	locks *locks
	name  string
	owner string
	lost  chan struct{}
}

func newLocks() *locks { return &locks{held: map[string]*fakeLease{}} }

func (k *locks) tryLead(owner string) TryLead {
	return func(_ context.Context, name string) (Lease, error) {
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.held[name] != nil {
			return nil, nil
		}
		l := &fakeLease{locks: k, name: name, owner: owner, lost: make(chan struct{})}
		k.held[name] = l
		return l, nil
	}
}

// holder names the owner leading name, or "".
func (k *locks) holder(name string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l := k.held[name]; l != nil {
		return l.owner
	}
	return ""
}

// kill ends the holder's session: the lock is free and its lease lost.
func (k *locks) kill(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.held[name]
	delete(k.held, name)
	close(l.lost)
}

func (l *fakeLease) Lost() <-chan struct{} { return l.lost }

func (l *fakeLease) Release() {
	l.locks.mu.Lock()
	defer l.locks.mu.Unlock()
	if l.locks.held[l.name] == l { // a lost lease frees nothing: another may hold it now
		delete(l.locks.held, l.name)
	}
}

// signalClock reports every wait, so the test advances time only once the
// runner it means to wake is blocked on the clock.
type signalClock struct {
	*clock.Fake
	waits chan struct{}
}

func (c signalClock) After(d time.Duration) <-chan time.Time {
	ch := c.Fake.After(d)
	c.waits <- struct{}{}
	return ch
}

type jobEnd struct {
	owner    string
	leadLost bool
}

func TestExclusiveRunsOnOneReplicaAndFailsOver(t *testing.T) {
	const retry = 5 * time.Second
	k := newLocks()
	clk := signalClock{clock.NewFake(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)), make(chan struct{})}
	started := make(chan string)
	ended := make(chan jobEnd)
	runner := func(owner string) Exclusive {
		return Exclusive{
			Name:  "checkpoint",
			Lead:  k.tryLead(owner),
			Clock: clk,
			Retry: retry,
			Job: func(ctx context.Context) error {
				started <- owner
				<-ctx.Done()
				ended <- jobEnd{owner, LeadLost(ctx)}
				return nil
			},
			Logger: slog.New(slog.DiscardHandler),
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 2)
	for _, owner := range []string{"a", "b"} {
		go func() { errs <- runner(owner).Run(ctx) }()
	}

	// One leads and runs the job; the other is refused and waits to retry.
	// Either order: the leader may start before or after the other waits.
	var leader string
	for range 2 {
		select {
		case leader = <-started:
		case <-clk.waits:
		case <-time.After(guard):
			t.Fatal("timed out waiting for the runners to start")
		}
	}
	if leader == "" || k.holder("checkpoint") != leader {
		t.Fatalf("leader %q, lock held by %q", leader, k.holder("checkpoint"))
	}
	follower := map[string]string{"a": "b", "b": "a"}[leader]

	// The follower's retry finds the lead taken and waits again.
	clk.Advance(retry)
	recv(t, clk.waits, "the follower to wait again")

	// At eight seconds the leader's session dies: its job stops as lost and
	// it waits to retry at thirteen, while the follower retries at ten.
	clk.Advance(3 * time.Second)
	k.kill("checkpoint")
	if e := recv(t, ended, "the leader's job to stop"); e != (jobEnd{leader, true}) {
		t.Fatalf("job end %+v, want %s's job stopped with LeadLost", e, leader)
	}
	recv(t, clk.waits, "the former leader to wait to retry")

	clk.Advance(2 * time.Second)
	if got := recv(t, started, "the follower to take over"); got != follower {
		t.Fatalf("%s took over, want %s", got, follower)
	}
	if h := k.holder("checkpoint"); h != follower {
		t.Fatalf("lock held by %q, want %s", h, follower)
	}

	// The former leader's retry now finds the lead taken.
	clk.Advance(3 * time.Second)
	recv(t, clk.waits, "the former leader to wait again")
	select {
	case o := <-started:
		t.Fatalf("%s started the job while %s leads", o, follower)
	default:
	}

	// Stopping the process is not a lost lead, and lets the lock go.
	cancel()
	if e := recv(t, ended, "the job to stop"); e != (jobEnd{follower, false}) {
		t.Fatalf("job end %+v, want %s's job stopped without LeadLost", e, follower)
	}
	for range 2 {
		if err := recv(t, errs, "the runners to return"); err != nil {
			t.Fatalf("run: %v", err)
		}
	}
	if h := k.holder("checkpoint"); h != "" {
		t.Fatalf("lock still held by %q after stop", h)
	}
}

func TestExclusiveRetriesAFailedAttemptAndEndsWithItsJob(t *testing.T) {
	k := newLocks()
	clk := signalClock{clock.NewFake(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)), make(chan struct{})}
	failing := true
	boom := errors.New("boom")
	e := Exclusive{
		Name: "sweep",
		Lead: func(ctx context.Context, name string) (Lease, error) {
			if failing {
				failing = false // runs on Run's goroutine only
				return nil, errors.New("database unreachable")
			}
			return k.tryLead("a")(ctx, name)
		},
		Clock:  clk,
		Job:    func(context.Context) error { return boom },
		Logger: slog.New(slog.DiscardHandler),
	}
	errc := make(chan error, 1)
	go func() { errc <- e.Run(context.Background()) }()

	recv(t, clk.waits, "the retry after the failed attempt")
	clk.Advance(DefaultRetry)
	// A job that fails while leading ends Run, as it would without a lease.
	if err := recv(t, errc, "Run to return"); !errors.Is(err, boom) {
		t.Fatalf("run: %v, want %v", err, boom)
	}
	if h := k.holder("sweep"); h != "" {
		t.Fatalf("lock still held by %q after the job ended", h)
	}
}

func TestGroup(t *testing.T) {
	boom := errors.New("boom")
	// blocks runs until the group stops it, and reports that it was stopped.
	blocks := func(stopped chan<- struct{}) Component {
		return Func("server", func(ctx context.Context) error {
			<-ctx.Done()
			close(stopped)
			return nil
		})
	}
	cases := []struct {
		name    string
		other   Component // ends on its own; nil: the parent context is canceled
		wantErr string
	}{
		{"a failing component stops the others", Func("sweeper", func(context.Context) error { return boom }), "sweeper: boom"},
		{"a component ending early stops the others", Func("sweeper", func(context.Context) error { return nil }), ""},
		{"canceling the context stops everything", Component{}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stopped := make(chan struct{})
			components := []Component{blocks(stopped)}
			if c.other.Run != nil {
				components = append(components, c.other)
			} else {
				cancel()
			}
			errc := make(chan error, 1)
			go func() { errc <- Group(ctx, slog.New(slog.DiscardHandler), components...) }()
			err := recv(t, errc, "the group to return")
			recv(t, stopped, "the other component to be stopped")
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("group: %v, want nil", err)
			case c.wantErr != "" && (err == nil || err.Error() != c.wantErr || !errors.Is(err, boom)):
				t.Fatalf("group: %v, want %q wrapping %v", err, c.wantErr, boom)
			}
		})
	}
}
