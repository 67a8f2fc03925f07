package gateway

import (
	"fmt"
	"sync"

	"golang.org/x/time/rate"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

// budgets hold cumulative use per server, agent and task. Unlike a rate
// limit, a budget does not refill with time: an agent that has spent it
// cannot wait it out; only the end of its task (a new task) resets it.
type budgets struct {
	clock clock.Clock

	mu    sync.Mutex
	use   map[budgetKey]*usage
	rates map[budgetKey]*rate.Limiter
}

type budgetKey struct{ server, agent, task string }

type usage struct{ calls, bytes int64 }

// errBudget and errRate are refusals the agent sees.
type limitError struct{ msg string }

func (e limitError) Error() string { return e.msg }

// admit counts one call against the server's budget and rate limit.
func (b *budgets) admit(s *Server, agent, task string) error {
	k := budgetKey{s.Name, agent, task}
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.RateLimit.PerSecond > 0 {
		if b.rates == nil {
			b.rates = map[budgetKey]*rate.Limiter{}
		}
		// The rate limit is per agent, whatever the task.
		rk := budgetKey{s.Name, agent, ""}
		l := b.rates[rk]
		if l == nil {
			burst := max(s.RateLimit.Burst, 1)
			l = rate.NewLimiter(rate.Limit(s.RateLimit.PerSecond), burst)
			b.rates[rk] = l
		}
		if !l.AllowN(b.clock.Now(), 1) {
			return limitError{fmt.Sprintf("rate limit of %.3g calls/s on %s exceeded", s.RateLimit.PerSecond, s.Name)}
		}
	}
	if s.Budget.Calls == 0 && s.Budget.ResponseBytes == 0 {
		return nil
	}
	if b.use == nil {
		b.use = map[budgetKey]*usage{}
	}
	u := b.use[k]
	if u == nil {
		u = &usage{}
		b.use[k] = u
	}
	if s.Budget.Calls > 0 && u.calls >= s.Budget.Calls {
		return limitError{fmt.Sprintf("call budget of %d on %s for this task is spent; it does not refill until the task ends", s.Budget.Calls, s.Name)}
	}
	if s.Budget.ResponseBytes > 0 && u.bytes >= s.Budget.ResponseBytes {
		return limitError{fmt.Sprintf("response budget of %d bytes on %s for this task is spent; it does not refill until the task ends", s.Budget.ResponseBytes, s.Name)}
	}
	u.calls++
	return nil
}

// charge adds response bytes and reports whether the budget still holds
// (the response being streamed is cut when it does not).
func (b *budgets) charge(s *Server, agent, task string, n int64) bool {
	if s.Budget.ResponseBytes == 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	u := b.use[budgetKey{s.Name, agent, task}]
	if u == nil {
		u = &usage{}
		if b.use == nil {
			b.use = map[budgetKey]*usage{}
		}
		b.use[budgetKey{s.Name, agent, task}] = u
	}
	u.bytes += n
	return u.bytes <= s.Budget.ResponseBytes
}

// EndTask drops the usage of a finished task (called when the control
// plane reports a task's end).
func (b *budgets) EndTask(agent, task string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.use {
		if k.agent == agent && k.task == task {
			delete(b.use, k)
		}
	}
}
