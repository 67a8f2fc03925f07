package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Continuous authorization: a request the gateway forwarded stays under
// its decision for as long as its answer flows — a long tool call, an
// event stream, a GET or subscriptions/listen stream. Each is decided
// again, with the agent's state read anew, when something it was decided
// on changes: the agent's risk (its next call scored differently), the
// policy version (a decision answered with a newer one, or a policy, role
// or catalog change in the control plane's event feed), the task's state
// (its end, taint, a grant given or taken back). A request no longer
// allowed is cut at once and the closing recorded as gateway.stream_close.

// ActionStreamClose records a forwarded request cut because a new
// decision no longer allows it.
const ActionStreamClose = "gateway.stream_close"

// ChangeActions are the control plane's records, beside RevocationActions,
// after which a gateway decides its open streams again.
var ChangeActions = []string{
	policy.ActionPolicyApply, policy.ActionPolicyRollback, policy.ActionPolicyPromote,
	policy.ActionRoleAdd, policy.ActionRoleRemove, policy.ActionToolApply, identity.ActionAgentScopes,
	elevation.ActionTaskComplete, elevation.ActionTaskCancel, elevation.ActionTaskExpire, elevation.ActionTaskTaint,
	elevation.ActionGrant, elevation.ActionExpire, elevation.ActionRevoke, elevation.ActionEnd, elevation.ActionExhaust,
}

// policyChanges are the ChangeActions that may change any decision.
var policyChanges = []string{policy.ActionPolicyApply, policy.ActionPolicyRollback, policy.ActionPolicyPromote,
	policy.ActionRoleAdd, policy.ActionRoleRemove, policy.ActionToolApply, identity.ActionAgentScopes}

// errDecidedAgain is the cause of a stream cut by a new decision.
var errDecidedAgain = errors.New("no longer allowed: decided again")

// standing is the decision a forwarded request lives under.
type standing struct {
	server     string
	action     string
	resource   cedar.EntityUID
	input      []byte
	decisionID string
	// grants allowed the request: spent on it, they still count for it
	// until they expire if only their uses ran out (a one-use grant's last
	// use is not taken back by its exhaustion), as long as the task is
	// open; a revoked or ended grant does not.
	grants []TaskGrant
}

// openStream is a forwarded request whose answer still flows.
type openStream struct {
	c      *caller
	st     standing
	cancel context.CancelCauseFunc
	// busy and again coalesce re-decisions: one at a time, and one more
	// if asked meanwhile.
	busy, again atomic.Bool
	fresh       atomic.Bool // the next re-decision reads the task anew
	cut         atomic.Bool // decided again and refused: nothing more to decide
	// failures counts re-decisions in a row that could not be made.
	failures atomic.Int64
}

// A re-decision that cannot be made (the control plane unreachable, a
// replica failing over) is tried again every recheckRetry; only after
// maxRecheckFailures in a row is the stream cut, failing closed. A
// refusal cuts it at once.
var recheckRetry, maxRecheckFailures atomic.Int64

func init() {
	recheckRetry.Store(int64(time.Second))
	maxRecheckFailures.Store(30)
}

// streams are the open streams by agent.
type streams struct {
	mu      sync.Mutex
	byAgent map[string]map[*openStream]struct{}
	check   func(*openStream) // the gateway's re-decision
	// spent are elevations whose last use is spent (by this gateway, or
	// as the feed says): gone from their task's state, yet still counting
	// for the requests that spent them — unlike revoked or ended ones.
	spent map[string]bool
}

// maxSpent bounds the exhausted elevations remembered.
const maxSpent = 10_000

func newStreams() *streams {
	return &streams{byAgent: map[string]map[*openStream]struct{}{}, spent: map[string]bool{}}
}

// exhausted notes that an elevation's last use is spent.
func (s *streams) exhausted(elevation string) {
	if elevation == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.spent) >= maxSpent {
		clear(s.spent)
	}
	s.spent[elevation] = true
}

func (s *streams) isExhausted(elevation string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.spent[elevation]
}

// open registers a stream; the returned func unregisters it.
func (s *streams) open(os *openStream) func() {
	id := os.c.id.String()
	s.mu.Lock()
	m := s.byAgent[id]
	if m == nil {
		m = map[*openStream]struct{}{}
		s.byAgent[id] = m
	}
	m[os] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(m, os)
		if len(m) == 0 && s.byAgent[id] != nil && len(s.byAgent[id]) == 0 {
			delete(s.byAgent, id)
		}
		s.mu.Unlock()
	}
}

// retry decides os again after recheckRetry, unless the gateway closes.
func (s *streams) retry(os *openStream, clk interface {
	After(time.Duration) <-chan time.Time
}, stop <-chan struct{}) {
	go func() {
		select {
		case <-stop:
		case <-clk.After(time.Duration(recheckRetry.Load())):
			s.redecideIf(func(_ string, o *openStream) bool { return o == os })
		}
	}()
}

// redecide decides agent's open streams again (every agent's for ""), in
// the background; fresh makes each read its task's state anew.
func (s *streams) redecide(agent string, fresh ...bool) {
	s.redecideIf(func(id string, _ *openStream) bool { return agent == "" || id == agent }, fresh...)
}

// redecideIf decides again the open streams that match.
func (s *streams) redecideIf(match func(agent string, os *openStream) bool, fresh ...bool) {
	s.mu.Lock()
	var list []*openStream
	for id, m := range s.byAgent {
		for os := range m {
			if match(id, os) {
				list = append(list, os)
			}
		}
	}
	s.mu.Unlock()
	for _, os := range list {
		if len(fresh) > 0 && fresh[0] {
			os.fresh.Store(true)
		}
		os.again.Store(true)
		if os.busy.CompareAndSwap(false, true) {
			go func() {
				for {
					for os.again.Swap(false) {
						s.check(os)
					}
					os.busy.Store(false)
					// Asked again between the loop's end and now?
					if !os.again.Load() || !os.busy.CompareAndSwap(false, true) {
						return
					}
				}
			}()
		}
	}
}

// count is the number of open streams (for tests).
func (s *streams) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.byAgent {
		n += len(m)
	}
	return n
}

// recheck decides an open stream again, as its request was decided, with
// the task's state and the agent's risk as they are now, and cuts it,
// recorded, unless it is still allowed. A decision that fails cuts it too.
func (g *Gateway) recheck(os *openStream) {
	if os.cut.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.Limits.UpstreamTimeout)
	defer cancel()
	c := *os.c
	c.task, c.carried = nil, nil
	if os.fresh.Swap(false) && c.claims.Task != "" && g.tasks != nil {
		g.tasks.forget(c.claims.Task)
	}
	var d policy.Decision
	var reasons []string
	err := g.loadTask(ctx, &c)
	if err == nil && c.task != nil && len(os.st.grants) > 0 {
		st := *c.task
		st.Grants = slices.Clone(st.Grants)
		for _, gr := range os.st.grants {
			c.carried = append(c.carried, gr.Name)
			if !slices.ContainsFunc(st.Grants, func(in TaskGrant) bool { return in.Name == gr.Name }) && g.streams.isExhausted(gr.Elevation) {
				st.Grants = append(st.Grants, gr)
			}
		}
		c.task = &st
	}
	if err == nil {
		d, _, err = g.decide(ctx, &c, os.st.action, os.st.resource, os.st.input)
	}
	switch {
	case errors.Is(err, errTaskRefused):
		reasons, d.Allowed = []string{err.Error()}, false // a refusal, not an outage
	case err != nil:
		// No decision could be made: try again, up to a bound.
		if n := os.failures.Add(1); n < maxRecheckFailures.Load() {
			g.logger.Warn("a stream could not be decided again; retrying", "agent", c.id, "resource", os.st.resource, "failures", n, "err", err)
			g.streams.retry(os, g.deps.Clock, g.stop)
			return
		}
		reasons, d.Allowed = []string{fmt.Sprintf("decision failed %d times in a row: %v", os.failures.Load(), err)}, false
	default:
		os.failures.Store(0)
	}
	if d.Allowed {
		return
	}
	os.cut.Store(true)
	detail := map[string]string{"gateway": g.cfg.Name, "server": os.st.server, "action": os.st.action,
		"decision_id": d.ID, "opened_by": os.st.decisionID}
	riskDetail(detail, c.risk)
	ev := audit.Event{Actor: c.actor(), Action: ActionStreamClose, Target: os.st.resource.String(), Decision: audit.Deny,
		Reasons: append(append([]string(nil), d.Reasons...), reasons...), Task: c.claims.Task, Detail: detail}
	if _, err := g.deps.Audit.Record(ctx, ev); err != nil {
		// Cut all the same: a stream the policy no longer allows must not
		// flow while the log is down.
		g.logger.Error("could not record a stream's closing", "agent", c.id, "err", err)
	}
	g.logger.Info("closing a stream its new decision does not allow", "agent", c.id, "resource", os.st.resource, "decision_id", d.ID)
	os.cancel(errDecidedAgain)
}

// changed hears a control plane record after which open streams are
// decided again. A task's or elevation's concerns the streams of that
// task, whose state is read anew; a policy, role, catalog or scope change
// concerns every stream, decided at once and again a second and five
// seconds later, by when every replica has loaded a new policy version.
func (g *Gateway) changed(ev audit.Event) {
	if ev.Action == elevation.ActionExhaust {
		g.streams.exhausted(ev.Detail["elevation"])
	}
	if ev.Task != "" && g.tasks != nil {
		// The next request reads the task anew instead of a state cached
		// before this change.
		g.tasks.forget(ev.Task)
	}
	if ev.Task != "" && !slices.Contains(policyChanges, ev.Action) {
		g.streams.redecideIf(func(_ string, os *openStream) bool { return os.c.claims.Task == ev.Task }, true)
		return
	}
	g.streams.redecide("", true)
	go func() {
		for _, d := range []time.Duration{time.Second, 5 * time.Second} {
			select {
			case <-g.stop:
				return
			case <-g.deps.Clock.After(d):
				g.streams.redecide("", true)
			}
		}
	}()
}

// sawVersion re-decides every open stream the first time a decision
// answers with a newer policy version than any before.
func (g *Gateway) sawVersion(v int64) {
	for {
		old := g.version.Load()
		if v <= old {
			return
		}
		if g.version.CompareAndSwap(old, v) {
			if old != 0 {
				g.streams.redecide("")
			}
			return
		}
	}
}
