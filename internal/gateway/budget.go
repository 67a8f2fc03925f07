package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

// budgets enforce cumulative use per server, agent and task, and per task
// across servers. Unlike a rate limit, a budget does not refill with time:
// an agent that has spent it cannot wait it out; only a new task starts
// anew. The counters live in the control plane's store (budget.Store), so
// every gateway in front of the same servers spends the same counters and
// together they never exceed a limit.
//
// Rate limits stay in each gateway's memory: with N gateways an agent may
// reach N times the rate. They make a burst tedious, not impossible, and
// are documented as such; budgets are what make an overrun impossible.
type budgets struct {
	clock clock.Clock
	store budget.Store
	// scope names the deployment whose servers the counters belong to
	// (the gateway's resource): gateways serving the same resource share
	// counters, another deployment's server of the same name does not.
	scope string
	// sensitive are the gateway's limits on reads of sensitive tools.
	sensitive Sensitive

	mu    sync.Mutex
	rates map[rateKey]*rate.Limiter
}

type rateKey struct{ server, agent string }

// limitError is a refusal the agent sees, worded for it.
type limitError struct{ msg string }

func (e limitError) Error() string { return e.msg }

// byteChunk is how many response bytes a meter reserves at a time: one
// spend per chunk, not per write, and what it does not use it gives back.
const byteChunk = 256 << 10

// releaseTimeout bounds giving back a response's unused reservation,
// which happens after the request's own context may have ended.
const releaseTimeout = 5 * time.Second

// counter is one budget with the words its refusal uses.
type counter struct {
	budget.Counter
	spent string
}

// use is what one call spends budgets for: a call to s by agent in task
// ("" outside one) under the task's limits. sensitive says its resource
// counts toward the gateway's sensitive limits, which are spent by root
// (the agent at the root of its delegation chain); resource then names
// what it touches (the resource and a digest of the arguments), and day
// the UTC day of the call.
type use struct {
	s         *Server
	agent     string
	task      string
	lim       TaskLimits
	sensitive bool
	root      string
	resource  string
	day       string
}

// counters returns the call and response-byte budgets that apply to u.
func (b *budgets) counters(u use) (calls, bytes []counter, err error) {
	s, agent, task, lim := u.s, u.agent, u.task, u.lim
	add := func(to *[]counter, limit int64, spent string, parts ...string) {
		if limit <= 0 || err != nil {
			return
		}
		var k string
		if k, err = budget.Key(parts...); err == nil {
			*to = append(*to, counter{budget.Counter{Key: k, Limit: limit}, spent})
		}
	}
	add(&calls, s.Budget.Calls, fmt.Sprintf("call budget of %d on %s for this task is spent; it does not refill until the task ends", s.Budget.Calls, s.Name),
		"server", b.scope, s.Name, agent, task, "calls")
	add(&bytes, s.Budget.ResponseBytes, fmt.Sprintf("response budget of %d bytes on %s for this task is spent; it does not refill until the task ends", s.Budget.ResponseBytes, s.Name),
		"server", b.scope, s.Name, agent, task, "bytes")
	if task != "" {
		add(&calls, lim.Calls, fmt.Sprintf("the task's call budget of %d (its manifest's scope_limits) is spent", lim.Calls), "task", task, "calls")
		add(&bytes, lim.ResponseBytes, fmt.Sprintf("the task's response budget of %d bytes (its manifest's scope_limits) is spent", lim.ResponseBytes), "task", task, "bytes")
	}
	if u.sensitive {
		sv := b.sensitive
		if task != "" {
			add(&bytes, sv.BytesPerTask, fmt.Sprintf("the budget of %d bytes read from %s-sensitivity tools in this task is spent; it does not refill", sv.BytesPerTask, sv.Level),
				"sensitive", b.scope, u.root, "task", task, "bytes")
		}
		add(&bytes, sv.BytesPerAgentDay, fmt.Sprintf("the budget of %d bytes read from %s-sensitivity tools today (UTC) is spent", sv.BytesPerAgentDay, sv.Level),
			"sensitive", b.scope, u.root, "day", u.day, "bytes")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("gateway: budget: %w", err)
	}
	return calls, bytes, nil
}

// touch counts a sensitive call's resource as touched, once per task and
// once per agent and day: the first touch of a resource spends one of the
// distinct-resource budget (bulk enumeration), a touch again spends
// nothing. It returns the keys it spent, to give back if the call is not
// forwarded.
func (b *budgets) touch(ctx context.Context, u use) ([]string, error) {
	if !u.sensitive {
		return nil, nil
	}
	sv := b.sensitive
	var spent []string
	undo := func() {
		if len(spent) > 0 {
			_ = b.store.ReleaseBudget(context.WithoutCancel(ctx), spent, 1)
		}
	}
	for _, sc := range []struct {
		limit    int64
		kind, id string
		words    string
	}{
		{sv.ResourcesPerTask, "task", u.task, fmt.Sprintf("this task has touched %d distinct %s-sensitivity resources, its limit; it does not refill", sv.ResourcesPerTask, sv.Level)},
		{sv.ResourcesPerAgentDay, "day", u.day, fmt.Sprintf("%d distinct %s-sensitivity resources touched today (UTC), the limit", sv.ResourcesPerAgentDay, sv.Level)},
	} {
		if sc.limit <= 0 || sc.id == "" {
			continue
		}
		seen, err := budget.Key("sensitive", b.scope, u.root, sc.kind, sc.id, "seen", u.resource)
		if err != nil {
			undo()
			return nil, fmt.Errorf("gateway: budget: %w", err)
		}
		distinct, err := budget.Key("sensitive", b.scope, u.root, sc.kind, sc.id, "resources")
		if err != nil {
			undo()
			return nil, fmt.Errorf("gateway: budget: %w", err)
		}
		// A counter of one per resource: spendable once, so only the first
		// touch gets through to the distinct count.
		if _, err := b.store.SpendBudget(ctx, []budget.Counter{{Key: seen, Limit: 1}}, 1, true); budget.IsExhausted(err) {
			continue
		} else if err != nil {
			undo()
			return nil, fmt.Errorf("budgets could not be checked: %w", err)
		}
		spent = append(spent, seen)
		cs := []counter{{budget.Counter{Key: distinct, Limit: sc.limit}, sc.words}}
		if _, err := b.store.SpendBudget(ctx, plain(cs), 1, true); err != nil {
			undo()
			return nil, refusalOf(err, cs)
		}
		spent = append(spent, distinct)
	}
	return spent, nil
}

// egressMeter starts metering the bytes a server's sandboxed process
// sends out through the egress proxy, for agent in task.
func (b *budgets) egressMeter(ctx context.Context, server, agent, task string, limit int64) *meter {
	m := &meter{ctx: ctx, b: b}
	if limit <= 0 {
		return m
	}
	k, err := budget.Key("egress", b.scope, server, agent, task, "bytes_out")
	m.err = err
	m.counters = []counter{{budget.Counter{Key: k, Limit: limit},
		fmt.Sprintf("egress budget of %d bytes on %s for this task is spent; it does not refill until the task ends", limit, server)}}
	return m
}

// exhausted reports whether the meter stopped for a spent budget (not
// for an unreadable store).
func (m *meter) exhausted() bool { return m.err == nil && m.used > m.reserved }

func plain(cs []counter) []budget.Counter {
	out := make([]budget.Counter, len(cs))
	for i, c := range cs {
		out[i] = c.Counter
	}
	return out
}

func keys(cs []counter) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Key
	}
	return out
}

// refusal words a spend a limit refused for the agent; any other error
// (the store is unreachable) refuses too: a budget that cannot be checked
// is not a budget that holds.
func refusalOf(err error, cs []counter) error {
	var ex *budget.ExhaustedError
	if errors.As(err, &ex) {
		for _, c := range cs {
			if c.Key == ex.Key {
				return limitError{c.spent}
			}
		}
		return limitError{"a budget of this call is spent"}
	}
	return fmt.Errorf("budgets could not be checked: %w", err)
}

// admit checks the server's rate limit, then spends one call of every
// call budget of the call (the server's per agent and task, and the
// task's manifest scope_limits across servers) in one atomic spend, and
// refuses a call whose response budget is already spent. The returned
// admission gives the call back if it is then not forwarded.
func (b *budgets) admit(ctx context.Context, u use) (*admission, error) {
	s := u.s
	if s.RateLimit.PerSecond > 0 && !b.allowRate(s, u.agent) {
		return nil, limitError{fmt.Sprintf("rate limit of %.3g calls/s on %s exceeded", s.RateLimit.PerSecond, s.Name)}
	}
	calls, bytes, err := b.counters(u)
	if err != nil {
		return nil, err
	}
	all := append(calls, bytes...)
	if len(all) == 0 {
		touched, err := b.touch(ctx, u)
		if err != nil {
			return nil, err
		}
		return &admission{b: b, touched: touched}, nil
	}
	// One byte of each response budget is spent with the call, so a call
	// whose response budget is gone is refused before it is forwarded;
	// the byte is given back at once: the meter charges what is sent.
	if _, err := b.store.SpendBudget(ctx, plain(all), 1, true); err != nil {
		return nil, refusalOf(err, all)
	}
	if len(bytes) > 0 {
		if err := b.store.ReleaseBudget(ctx, keys(bytes), 1); err != nil {
			return nil, fmt.Errorf("budgets could not be checked: %w", err)
		}
	}
	adm := &admission{b: b, calls: keys(calls)}
	if adm.touched, err = b.touch(ctx, u); err != nil {
		if rerr := adm.refund(ctx); rerr != nil {
			return nil, fmt.Errorf("budgets could not be checked: %w", rerr)
		}
		return nil, err
	}
	return adm, nil
}

func (b *budgets) allowRate(s *Server, agent string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rates == nil {
		b.rates = map[rateKey]*rate.Limiter{}
	}
	// The rate limit is per agent, whatever the task.
	k := rateKey{s.Name, agent}
	l := b.rates[k]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(s.RateLimit.PerSecond), max(s.RateLimit.Burst, 1))
		b.rates[k] = l
	}
	return l.AllowN(b.clock.Now(), 1)
}

// admission is a call counted against its budgets.
type admission struct {
	b       *budgets
	calls   []string
	touched []string // the distinct-resource counters the call spent
}

// refund gives back the call, which was then not forwarded.
func (a *admission) refund(ctx context.Context) error {
	if a == nil || len(a.calls)+len(a.touched) == 0 {
		return nil
	}
	return a.b.store.ReleaseBudget(ctx, append(slices.Clone(a.calls), a.touched...), 1)
}

// meter charges one response's bytes to its response budgets, reserving
// them from the store a chunk at a time, and gives back what it reserved
// and did not send when the response ends.
type meter struct {
	ctx      context.Context
	b        *budgets
	counters []counter
	err      error // the budgets could not be read: the response is cut
	reserved int64
	used     int64
	sent     int64 // every byte charged, budgets or not
}

// meter starts metering the response to the call u.
func (b *budgets) meter(ctx context.Context, u use) *meter {
	_, bytes, err := b.counters(u)
	return &meter{ctx: ctx, b: b, counters: bytes, err: err}
}

// charge counts n more bytes and reports whether the budgets still hold;
// the response is cut when they do not.
func (m *meter) charge(n int64) bool {
	ok := m.reserve(n)
	if ok {
		m.sent += n
	}
	return ok
}

// reserve counts n more bytes against the budgets.
func (m *meter) reserve(n int64) bool {
	if m.err != nil {
		return false
	}
	if len(m.counters) == 0 {
		return true
	}
	m.used += n
	if m.used <= m.reserved {
		return true
	}
	need := m.used - m.reserved
	got, err := m.b.store.SpendBudget(m.ctx, plain(m.counters), max(need, byteChunk), false)
	m.reserved += got
	if err != nil {
		if !budget.IsExhausted(err) {
			m.err = err
		}
		return false
	}
	return got >= need
}

// close gives back what was reserved and not sent. It runs after the
// request's context may have ended, so it uses its own.
func (m *meter) close() {
	if len(m.counters) == 0 || m.reserved <= m.used {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), releaseTimeout)
	defer cancel()
	_ = m.b.store.ReleaseBudget(ctx, keys(m.counters), m.reserved-m.used)
}
