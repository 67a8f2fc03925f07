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
	tasks map[string]*taskUsage
	rates map[budgetKey]*rate.Limiter
}

type budgetKey struct{ server, agent, task string }

type usage struct{ calls, bytes int64 }

// taskUsage is a task's use across servers, against its manifest's
// limits.
type taskUsage struct {
	usage
	lim TaskLimits
}

// errBudget and errRate are refusals the agent sees.
type limitError struct{ msg string }

func (e limitError) Error() string { return e.msg }

// admit counts one call against the server's budget and rate limit and,
// for a call in an open task, against the task's limits (its manifest's
// scope_limits: for the whole task, across servers).
func (b *budgets) admit(s *Server, agent, task string, lim TaskLimits) error {
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
	var u *usage
	if s.Budget.Calls > 0 || s.Budget.ResponseBytes > 0 {
		if b.use == nil {
			b.use = map[budgetKey]*usage{}
		}
		if u = b.use[k]; u == nil {
			u = &usage{}
			b.use[k] = u
		}
		if s.Budget.Calls > 0 && u.calls >= s.Budget.Calls {
			return limitError{fmt.Sprintf("call budget of %d on %s for this task is spent; it does not refill until the task ends", s.Budget.Calls, s.Name)}
		}
		if s.Budget.ResponseBytes > 0 && u.bytes >= s.Budget.ResponseBytes {
			return limitError{fmt.Sprintf("response budget of %d bytes on %s for this task is spent; it does not refill until the task ends", s.Budget.ResponseBytes, s.Name)}
		}
	}
	var tu *taskUsage
	if task != "" && (lim.Calls > 0 || lim.ResponseBytes > 0) {
		if b.tasks == nil {
			b.tasks = map[string]*taskUsage{}
		}
		if tu = b.tasks[task]; tu == nil {
			tu = &taskUsage{}
			b.tasks[task] = tu
		}
		tu.lim = lim
		if lim.Calls > 0 && tu.calls >= lim.Calls {
			return limitError{fmt.Sprintf("the task's call budget of %d (its manifest's scope_limits) is spent", lim.Calls)}
		}
		if lim.ResponseBytes > 0 && tu.bytes >= lim.ResponseBytes {
			return limitError{fmt.Sprintf("the task's response budget of %d bytes (its manifest's scope_limits) is spent", lim.ResponseBytes)}
		}
	}
	if u != nil {
		u.calls++
	}
	if tu != nil {
		tu.calls++
	}
	return nil
}

// refund gives back a call admit counted, for a call that was then not
// forwarded.
func (b *budgets) refund(s *Server, agent, task string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if u := b.use[budgetKey{s.Name, agent, task}]; u != nil && u.calls > 0 {
		u.calls--
	}
	if tu := b.tasks[task]; task != "" && tu != nil && tu.calls > 0 {
		tu.calls--
	}
}

// charge adds response bytes and reports whether the budgets still hold
// (the response being streamed is cut when they do not).
func (b *budgets) charge(s *Server, agent, task string, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	ok := true
	if s.Budget.ResponseBytes > 0 {
		u := b.use[budgetKey{s.Name, agent, task}]
		if u == nil {
			u = &usage{}
			if b.use == nil {
				b.use = map[budgetKey]*usage{}
			}
			b.use[budgetKey{s.Name, agent, task}] = u
		}
		u.bytes += n
		ok = u.bytes <= s.Budget.ResponseBytes
	}
	if tu := b.tasks[task]; task != "" && tu != nil && tu.lim.ResponseBytes > 0 {
		tu.bytes += n
		ok = ok && tu.bytes <= tu.lim.ResponseBytes
	}
	return ok
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

// dropTask drops every count of an ended task, whoever made it: the task
// is over, and its calls are now counted as calls without a task.
func (b *budgets) dropTask(task string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.use {
		if k.task == task {
			delete(b.use, k)
		}
	}
	delete(b.tasks, task)
}
