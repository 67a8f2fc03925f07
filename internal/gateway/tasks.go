package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Tasks (see internal/elevation): a token may name the agent's task. The
// gateway then decides each request with the task's live state as
// context (task, manifest, taint, grants in force), spends a grant's use
// at the control plane before forwarding a call a grant allowed, marks the
// task tainted before forwarding a call to a tool whose output is
// untrusted, and counts the task's budgets. A task that is no longer open
// is no task: its token is decided at the agent's baseline.

// TaskSource is the control plane's side of tasks: the elevation service
// in process, or its API for a standalone gateway.
type TaskSource interface {
	TaskState(ctx context.Context, id string) (TaskState, error)
	// ReportOutput tells that agent, working in task, is about to receive
	// output from resource; suspect, if set, says why that output is
	// untrusted whatever the catalog says. It returns whether the
	// resource's output is untrusted and whether the task is tainted now.
	ReportOutput(ctx context.Context, task, agent string, resource cedar.EntityUID, suspect string) (untrusted, tainted bool, err error)
	// UseGrant spends one use of a grant (an elevation id) for a call;
	// the call may be forwarded only if it returns nil.
	UseGrant(ctx context.Context, grant string, u GrantUse) error
}

// TaskState is a task's state as a gateway decides with it.
type TaskState struct {
	ID       string
	Agent    string // the SPIFFE ID of the agent that opened it
	Manifest string
	Open     bool
	Tainted  bool
	Grants   []TaskGrant
	Limits   TaskLimits
	// Status and EndedAt say how and when a task that is not open ended,
	// for the denial's record; a source may leave them empty.
	Status  string
	EndedAt time.Time
}

// TaskGrant is a grant in force.
type TaskGrant struct {
	Elevation string
	// Name is the grant's name in context.grants ("MANIFEST/TRIGGER").
	Name      string
	ExpiresAt time.Time
	MaxUses   int64
	Uses      int64
}

// TaskLimits are a task's budgets (0: none).
type TaskLimits struct{ Calls, ResponseBytes int64 }

// GrantUse describes the call a grant is spent on.
type GrantUse struct {
	Task, Agent, Resource, DecisionID string
}

// Cache bounds: a task's state is read again after TaskStateMaxAge, so a
// change made elsewhere (an approval, the task's end) reaches every
// gateway within it; a grant's use is checked at the control plane on
// every call, so an ended grant is refused at once.
const (
	TaskStateMaxAge = 500 * time.Millisecond
	trustMaxAge     = 30 * time.Second
	maxCachedTasks  = 65536
)

// taskCache holds tasks' states briefly, and which resources the control
// plane said are trusted.
type taskCache struct {
	src   TaskSource
	clock clock.Clock
	// ended is called once when a task is first seen no longer open.
	ended func(task string)

	mu      sync.Mutex
	entries map[string]*taskEntry
	trusted map[cedar.EntityUID]time.Time
	// forgotten counts forget calls: a read begun before one must not
	// store the state it read, which may predate the change.
	forgotten uint64
}

type taskEntry struct {
	st    TaskState
	at    time.Time
	ended bool
}

func newTaskCache(src TaskSource, clk clock.Clock, ended func(string)) *taskCache {
	return &taskCache{src: src, clock: clk, ended: ended, entries: map[string]*taskEntry{}, trusted: map[cedar.EntityUID]time.Time{}}
}

// get returns task id's state, at most TaskStateMaxAge old.
func (tc *taskCache) get(ctx context.Context, id string) (TaskState, error) {
	now := tc.clock.Now()
	tc.mu.Lock()
	e := tc.entries[id]
	if e != nil && now.Sub(e.at) < TaskStateMaxAge && !now.Before(e.at) {
		st := e.st
		tc.mu.Unlock()
		return st, nil
	}
	gen := tc.forgotten
	tc.mu.Unlock()
	st, err := tc.src.TaskState(ctx, id)
	if err != nil {
		return TaskState{}, err
	}
	tc.mu.Lock()
	if tc.forgotten != gen {
		// A change arrived while this read was under way: answer with
		// what was read, but keep nothing that may be older than it.
		tc.mu.Unlock()
		return st, nil
	}
	if len(tc.entries) >= maxCachedTasks {
		for k, old := range tc.entries {
			if now.Sub(old.at) >= TaskStateMaxAge || len(tc.entries) >= maxCachedTasks {
				delete(tc.entries, k)
			}
		}
	}
	wasEnded := e != nil && e.ended
	tc.entries[id] = &taskEntry{st: st, at: now, ended: !st.Open}
	tc.mu.Unlock()
	if !st.Open && !wasEnded && tc.ended != nil {
		tc.ended(id)
	}
	return st, nil
}

// forget drops a task's cached state, so the next request reads it anew.
func (tc *taskCache) forget(id string) {
	tc.mu.Lock()
	delete(tc.entries, id)
	tc.forgotten++
	tc.mu.Unlock()
}

// markTainted records locally what the control plane just said.
func (tc *taskCache) markTainted(id string) {
	tc.mu.Lock()
	if e := tc.entries[id]; e != nil {
		e.st.Tainted = true
	}
	tc.mu.Unlock()
}

func (tc *taskCache) isTrusted(res cedar.EntityUID) bool {
	now := tc.clock.Now()
	tc.mu.Lock()
	defer tc.mu.Unlock()
	at, ok := tc.trusted[res]
	return ok && now.Sub(at) < trustMaxAge && !now.Before(at)
}

func (tc *taskCache) setTrusted(res cedar.EntityUID) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if len(tc.trusted) >= maxCachedTasks {
		clear(tc.trusted)
	}
	tc.trusted[res] = tc.clock.Now()
}

// errTaskRefused is a request whose task this gateway cannot serve.
var errTaskRefused = errors.New("task refused")

// loadTask attaches the caller's task, if its token names one: its state
// if the task is open, nothing if it ended. It fails, and the request is
// refused, if the state cannot be read or the task is not the caller's.
func (g *Gateway) loadTask(ctx context.Context, c *caller) error {
	id := c.claims.Task
	if id == "" {
		return nil
	}
	if g.tasks == nil {
		return fmt.Errorf("%w: this gateway is not configured for tasks", errTaskRefused)
	}
	st, err := g.tasks.get(ctx, id)
	if err != nil {
		return fmt.Errorf("the state of task %s is unavailable: %w", id, err)
	}
	agent := c.id.String()
	if st.Agent != agent && !strings.HasPrefix(agent, st.Agent+"/sub/") {
		return fmt.Errorf("%w: task %s is not %s's", errTaskRefused, id, agent)
	}
	if st.Open {
		c.task = &st
	}
	return nil
}

// decideCall decides a call. A call in a task that is denied is decided
// once more on the task's state read anew, so that a grant approved a
// moment ago applies at once: at most one more read per denied call,
// beside the denial's own audit record.
func (g *Gateway) decideCall(ctx context.Context, c *caller, action string, resource cedar.EntityUID, input []byte) (policy.Decision, time.Duration, error) {
	d, latency, err := g.decide(ctx, c, action, resource, input)
	if err != nil || d.Allowed || c.claims.Task == "" || g.tasks == nil {
		return d, latency, err
	}
	g.tasks.forget(c.claims.Task)
	c.task = nil
	if err := g.loadTask(ctx, c); err != nil {
		return policy.Decision{ID: d.ID}, latency, err
	}
	d2, latency2, err := g.decide(ctx, c, action, resource, input)
	if err == nil && !d2.Allowed && c.task == nil {
		// The token names a task that has ended: say so in the record,
		// beside whatever the baseline's policies said.
		d2.Reasons = append(d2.Reasons[:len(d2.Reasons):len(d2.Reasons)], g.taskEnded(ctx, c.claims.Task))
	}
	return d2, latency + latency2, err
}

// taskEnded is the reason a call in an ended task was decided at the
// agent's baseline, from the state just read (cached).
func (g *Gateway) taskEnded(ctx context.Context, id string) string {
	st, err := g.tasks.get(ctx, id)
	if err != nil || st.Status == "" {
		return fmt.Sprintf("task %s is not open: decided at the agent's baseline", id)
	}
	when := ""
	if !st.EndedAt.IsZero() {
		when = " at " + st.EndedAt.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("task %s ended (%s%s): decided at the agent's baseline", id, st.Status, when)
}

// taskID is the caller's open task, or "".
func (c *caller) taskID() string {
	if c.task == nil {
		return ""
	}
	return c.task.ID
}

func (c *caller) taskLimits() TaskLimits {
	if c.task == nil {
		return TaskLimits{}
	}
	return c.task.Limits
}

// grantNames are the caller's grants in force now, for context.grants:
// unexpired, with a use left — or, for the next round of a multi
// round-trip call, one of the grants its first round was allowed by
// (that round spent the use).
func (c *caller) grantNames(now time.Time) []string {
	if c.task == nil {
		return nil
	}
	var out []string
	for _, gr := range c.task.Grants {
		if now.Before(gr.ExpiresAt) && (gr.MaxUses == 0 || gr.Uses < gr.MaxUses || slices.Contains(c.carried, gr.Name)) {
			out = append(out, gr.Name)
		}
	}
	return out
}

// taint marks the caller's task tainted, at the control plane, before it
// receives output from resource, if that output is untrusted. Marking
// before forwarding means the agent can never act on untrusted output
// under an untainted task; a call whose taint cannot be recorded is not
// forwarded.
func (g *Gateway) taint(ctx context.Context, c *caller, resource cedar.EntityUID) error {
	if c.task == nil || c.task.Tainted || g.tasks.isTrusted(resource) {
		return nil
	}
	untrusted, tainted, err := g.tasks.src.ReportOutput(ctx, c.task.ID, c.id.String(), resource, "")
	if err != nil {
		return err
	}
	if !untrusted {
		g.tasks.setTrusted(resource)
	}
	if tainted {
		g.tasks.markTainted(c.task.ID)
	}
	return nil
}
