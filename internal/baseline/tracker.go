package baseline

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
)

// Source reads an agent's learned baseline: the audit log in process, or
// the control plane's API for a standalone gateway.
type Source interface {
	Baseline(ctx context.Context, agent string) (Baseline, error)
}

// SourceFunc is a function as a Source.
type SourceFunc func(ctx context.Context, agent string) (Baseline, error)

// Baseline calls f.
func (f SourceFunc) Baseline(ctx context.Context, agent string) (Baseline, error) {
	return f(ctx, agent)
}

// TrackerConfig configures a Tracker. Source, Clock and Logger are
// required.
type TrackerConfig struct {
	Source Source
	Clock  clock.Clock
	Logger *slog.Logger
	// Refresh is how old a baseline grows before it is learned again, in
	// the background (default 10 minutes); Retry how long after a failed
	// read the next is tried (default 30 seconds).
	Refresh, Retry time.Duration
	// AlertAt is the score at which a call is an anomaly (default 60;
	// negative: never). Observe reports one at most once per AlertEvery
	// (default 10 minutes) for an agent, unless a new reason appears (and a
	// minute has passed).
	AlertAt    int
	AlertEvery time.Duration
}

// maxAgents bounds the agents a tracker keeps; past it, agents idle for
// an hour are forgotten.
const maxAgents = 100_000

// Tracker keeps, in memory, each agent's baseline and last hour, and
// scores calls against them: the only store read is an agent's first
// baseline, then a refresh in the background every Refresh.
type Tracker struct {
	cfg TrackerConfig

	mu     sync.Mutex
	agents map[string]*agentRisk
}

type agentRisk struct {
	load sync.Mutex // one read of the baseline at a time

	mu         sync.Mutex
	base       Baseline
	loaded     bool
	loadedAt   time.Time // when base was read
	failedAt   time.Time // when the last read failed
	refreshing bool
	recent     Recent
	lastSeen   time.Time
	last       Risk // the last call's risk
	alertedAt  time.Time
	alerted    []string         // the reasons of the last alert
	taskRead   map[string]int64 // bytes of answers by task
	taskOrder  []string         // taskRead's tasks, read longest ago first
}

// maxTaskReads bounds the tasks whose reads an agent's state keeps.
const maxTaskReads = 64

// NewTracker checks cfg and fills its defaults.
func NewTracker(cfg TrackerConfig) *Tracker {
	if cfg.Refresh <= 0 {
		cfg.Refresh = 10 * time.Minute
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 30 * time.Second
	}
	if cfg.AlertAt == 0 {
		cfg.AlertAt = 60
	}
	if cfg.AlertEvery <= 0 {
		cfg.AlertEvery = 10 * time.Minute
	}
	return &Tracker{cfg: cfg, agents: map[string]*agentRisk{}}
}

func (t *Tracker) agent(id string, now time.Time) *agentRisk {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.agents[id]
	if a == nil {
		if len(t.agents) >= maxAgents {
			t.evict(now)
		}
		a = &agentRisk{}
		t.agents[id] = a
	}
	return a
}

// evict forgets agents idle for longer than the window (t.mu held).
func (t *Tracker) evict(now time.Time) {
	for id, a := range t.agents {
		a.mu.Lock()
		idle := now.Sub(a.lastSeen) > window
		a.mu.Unlock()
		if idle {
			delete(t.agents, id)
		}
	}
}

// Score is the risk of agent calling resource now, with arguments of
// shape. The first call of an
// agent reads its baseline (once, whoever else waits); later calls read
// only memory, and start a refresh in the background when the baseline
// is old. A baseline that cannot be read scores as one still learning,
// with the reason no_baseline, so a policy may refuse what needs one.
func (t *Tracker) Score(ctx context.Context, agent, task, resource, shape string, tainted bool) Risk {
	now := t.cfg.Clock.Now()
	a := t.agent(agent, now)
	a.mu.Lock()
	if !a.loaded && (a.failedAt.IsZero() || now.Sub(a.failedAt) >= t.cfg.Retry) {
		a.mu.Unlock()
		// Read apart from the request: a caller that gives up must not
		// leave its agent unscored until the next retry.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
		t.read(rctx, agent, a)
		cancel()
		a.mu.Lock()
	} else if a.loaded && now.Sub(a.loadedAt) >= t.cfg.Refresh && !a.refreshing {
		a.refreshing = true
		go t.refresh(agent, a)
	}
	defer a.mu.Unlock()
	a.lastSeen = now
	b := a.base
	if !a.loaded {
		b = Baseline{Agent: agent, Learning: true}
	}
	var read int64
	if task != "" {
		read = a.taskRead[task]
	}
	r := Score(b, &a.recent, Call{Agent: agent, Resource: resource, Shape: shape, Time: now, TaskRead: read}, tainted)
	if !a.loaded {
		r.Reasons = append(r.Reasons, ReasonNoBaseline)
		r.Why = append(r.Why, "the agent's baseline could not be read")
	}
	return r
}

// read loads a's baseline unless another caller just did.
func (t *Tracker) read(ctx context.Context, agent string, a *agentRisk) {
	a.load.Lock()
	defer a.load.Unlock()
	a.mu.Lock()
	done := a.loaded || (!a.failedAt.IsZero() && t.cfg.Clock.Now().Sub(a.failedAt) < t.cfg.Retry)
	a.mu.Unlock()
	if !done {
		t.fetch(ctx, agent, a)
	}
}

// readTimeout bounds one read of a baseline.
const readTimeout = 30 * time.Second

func (t *Tracker) refresh(agent string, a *agentRisk) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	a.load.Lock()
	defer a.load.Unlock()
	t.fetch(ctx, agent, a)
	a.mu.Lock()
	a.refreshing = false
	a.mu.Unlock()
}

// fetch reads the baseline (a.load held).
func (t *Tracker) fetch(ctx context.Context, agent string, a *agentRisk) {
	b, err := t.cfg.Source.Baseline(ctx, agent)
	now := t.cfg.Clock.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		// A refresh that fails keeps the baseline it has, and is tried
		// again after Retry, not at the next call.
		t.cfg.Logger.Warn("could not read an agent's baseline", "agent", agent, "err", err)
		a.failedAt = now
		if a.loaded {
			a.loadedAt = now.Add(t.cfg.Retry - t.cfg.Refresh)
		}
		return
	}
	a.base, a.loaded, a.loadedAt = b, true, now
}

// Read adds n bytes of an answer to what agent's task has read.
func (t *Tracker) Read(agent, task string, n int64) {
	if task == "" || n <= 0 {
		return
	}
	a := t.agent(agent, t.cfg.Clock.Now())
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.taskRead == nil {
		a.taskRead = map[string]int64{}
	}
	// The task read longest ago is forgotten, never one still reading.
	if _, ok := a.taskRead[task]; ok {
		a.taskOrder = slices.DeleteFunc(a.taskOrder, func(t string) bool { return t == task })
	} else if len(a.taskOrder) >= maxTaskReads {
		delete(a.taskRead, a.taskOrder[0])
		a.taskOrder = a.taskOrder[1:]
	}
	a.taskOrder = append(a.taskOrder, task)
	a.taskRead[task] += n
}

// Observe adds a decided call, of risk r, to the agent's last hour. alert
// says the call is an anomaly to report; changed, that the agent's risk
// differs from its previous call's, so what was decided with the old one
// (open streams) must be decided again.
func (t *Tracker) Observe(agent, resource string, denied bool, r Risk) (alert, changed bool) {
	now := t.cfg.Clock.Now()
	a := t.agent(agent, now)
	a.mu.Lock()
	a.recent.Observe(Call{Agent: agent, Resource: resource, Time: now, Denied: denied})
	changed = a.last.Score != r.Score || !slices.Equal(a.last.Reasons, r.Reasons)
	a.last = r
	if t.cfg.AlertAt >= 0 && r.Score >= t.cfg.AlertAt {
		// Once per AlertEvery; sooner for a new reason, but no more than
		// once a minute, whatever reasons alternate.
		fresh := now.Sub(a.alertedAt) >= t.cfg.AlertEvery
		for _, code := range r.Reasons {
			fresh = fresh || !slices.Contains(a.alerted, code) && now.Sub(a.alertedAt) >= time.Minute
		}
		if fresh {
			alert, a.alertedAt, a.alerted = true, now, slices.Clone(r.Reasons)
		}
	}
	a.mu.Unlock()
	return alert, changed
}
