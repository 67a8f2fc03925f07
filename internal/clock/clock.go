// Package clock is the injected source of time for everything whose
// correctness depends on expiry: certificates, tokens, grants and tasks.
//
// Production code takes a Clock and tests pass a *Fake, so expiry is tested by
// moving time rather than by sleeping.
package clock

import (
	"context"
	"sync"
	"time"
)

// Clock tells the time and waits.
type Clock interface {
	Now() time.Time
	// After behaves like time.After on this clock's timeline.
	After(d time.Duration) <-chan time.Time
}

// Until returns a context canceled at t on clk's timeline (or when ctx
// ends): what keeps a stream from outliving the credential it was opened
// with.
func Until(ctx context.Context, clk Clock, t time.Time) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-At(clk, t):
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// At returns a channel that receives once clk's time reaches t. A clock
// that can wait for an absolute time (Fake) does so, so that time moved past
// t between reading the clock and waiting still wakes the waiter.
func At(clk Clock, t time.Time) <-chan time.Time {
	if a, ok := clk.(interface {
		At(time.Time) <-chan time.Time
	}); ok {
		return a.At(t)
	}
	return clk.After(t.Sub(clk.Now()))
}

// Real is the wall clock.
type Real struct{}

var _ Clock = Real{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (Real) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Fake is a manually advanced clock for tests. The zero value is not usable;
// create one with NewFake.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

var _ Clock = (*Fake)(nil)

// NewFake returns a fake clock set to t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// After returns a channel that receives once the fake time reaches now+d.
func (f *Fake) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.at(f.now.Add(d))
}

// At returns a channel that receives once the fake time reaches t.
func (f *Fake) At(t time.Time) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.at(t)
}

func (f *Fake) at(t time.Time) <-chan time.Time {
	ch := make(chan time.Time, 1)
	if !t.After(f.now) {
		ch <- f.now
		return ch
	}
	f.waiters = append(f.waiters, waiter{at: t, ch: ch})
	return ch
}

// Advance moves the fake time forward and fires every waiter that is due.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	kept := f.waiters[:0]
	for _, w := range f.waiters {
		if !w.at.After(f.now) {
			w.ch <- f.now
			continue
		}
		kept = append(kept, w)
	}
	f.waiters = kept
}

// Waiters reports how many After calls are pending, so a test can wait until
// the code under test is blocked on the clock before advancing it.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}
