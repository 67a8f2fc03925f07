package gateway

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/baseline"
)

// Usage: what each agent's calls returned is known only once their
// answers end, after their decision records. A gateway adds it up per
// agent, task and resource, and records it every UsageEvery as
// gateway.usage — calls, bytes and records (items) per resource — so that baselines learn
// bytes per call and per task from the log, at a bounded cost to it (a
// record per active agent and task per period, not per call).

// ActionUsage records what an agent's calls returned over a period.
const ActionUsage = "gateway.usage"

// UsageEvery is how often usage is recorded.
const UsageEvery = time.Minute

// maxUsageKeys bounds the agents and tasks held between records; past
// it, usage is recorded at once.
const maxUsageKeys = 10_000

type usageKey struct{ agent, task string }

// usage is the calls and bytes of answers per resource, since the last
// record.
type usage struct {
	mu  sync.Mutex
	acc map[usageKey]map[string]*baseline.Usage
}

func newUsage() *usage { return &usage{acc: map[usageKey]map[string]*baseline.Usage{}} }

// add counts one answered call of agent in task to resource, of n bytes.
// It reports whether the accumulator is full and must be recorded now.
func (u *usage) add(agent, task, resource string, n, items int64) (full bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	k := usageKey{agent, task}
	m := u.acc[k]
	if m == nil {
		m = map[string]*baseline.Usage{}
		u.acc[k] = m
	}
	r := m[resource]
	if r == nil {
		r = &baseline.Usage{}
		m[resource] = r
	}
	r.Calls++
	r.Bytes += n
	r.Items += items
	return len(u.acc) >= maxUsageKeys
}

// take empties the accumulator and returns what it held.
func (u *usage) take() map[usageKey]map[string]*baseline.Usage {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := u.acc
	u.acc = map[usageKey]map[string]*baseline.Usage{}
	return out
}

// noteUsage counts an answered call's bytes and records (items), and
// tells the risk tracker what the task has read so far.
func (g *Gateway) noteUsage(c *caller, resource string, n, items int64) {
	if g.usage == nil {
		return
	}
	if g.risk != nil {
		g.risk.Read(riskKey(c), c.claims.Task, n)
	}
	if g.usage.add(c.id.String(), c.claims.Task, resource, n, items) {
		go g.recordUsage(context.Background())
	}
}

// recordUsage records and forgets what was accumulated. Usage that cannot
// be recorded is logged and dropped: it is evidence for baselines, not
// for what was allowed (each call has its own decision record).
func (g *Gateway) recordUsage(ctx context.Context) {
	for k, m := range g.usage.take() {
		b, err := json.Marshal(m)
		if err != nil {
			continue
		}
		ev := audit.Event{Actor: audit.Actor{Kind: audit.ActorAgent, ID: k.agent}, Action: ActionUsage, Target: k.agent,
			Decision: audit.Allow, Task: k.task, Detail: map[string]string{"gateway": g.cfg.Name, "usage": string(b)}}
		if _, err := g.deps.Audit.Record(ctx, ev); err != nil {
			g.logger.Warn("could not record usage", "agent", k.agent, "err", err)
		}
	}
}

// runUsage records usage every UsageEvery until the gateway closes, and
// once more then.
func (g *Gateway) runUsage() {
	for {
		select {
		case <-g.stop:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			g.recordUsage(ctx)
			cancel()
			close(g.usageDone)
			return
		case <-g.deps.Clock.After(UsageEvery):
			g.recordUsage(context.Background())
		}
	}
}
