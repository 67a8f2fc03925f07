// Package baseline learns how each agent behaves from the audit log —
// which tools it calls, how often, at which hours, how often it is denied
// — and scores a new call's risk (0–100, with its reasons) against that
// baseline and the agent's recent activity. Baselines are learned by
// replaying the gateway's decision records, so they can be rebuilt and
// tested from any history; scoring reads only memory.
package baseline

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// Call is one decided call, as the gateway's decision record has it.
type Call struct {
	Agent    string
	Resource string // e.g. Tool::"docs/search"
	Time     time.Time
	Denied   bool
}

// FromEvent reads a gateway decision record (gateway.call_tool, or an
// HTTP route's); ok is false for any other event.
func FromEvent(e audit.Event) (Call, bool) {
	if e.Actor.Kind != audit.ActorAgent || len(e.Action) < len("gateway.") || e.Action[:len("gateway.")] != "gateway." || e.Target == "" {
		return Call{}, false
	}
	switch e.Action {
	case "gateway.call_tool", "gateway.GET", "gateway.POST", "gateway.PUT", "gateway.PATCH", "gateway.DELETE":
	default:
		return Call{}, false
	}
	return Call{Agent: e.Actor.ID, Resource: e.Target, Time: e.Time, Denied: e.Decision == audit.Deny}, true
}

// Config bounds learning.
type Config struct {
	// MinCalls and MinSpan make a baseline learned: before both, the agent
	// is learning and only what needs no baseline (denials, taint) scores.
	MinCalls int
	MinSpan  time.Duration
}

// DefaultConfig is a day and fifty calls.
var DefaultConfig = Config{MinCalls: 50, MinSpan: 24 * time.Hour}

// Baseline is an agent's learned behaviour (the API's type).
type Baseline = api.AgentBaseline

// Learn replays an agent's calls (any order) into its baseline.
func Learn(agent string, calls []Call, cfg Config) Baseline {
	b := Baseline{Agent: agent, Tools: map[string]int{}}
	hours := map[int64]int{}
	for _, c := range calls {
		if c.Agent != agent {
			continue
		}
		t := c.Time.UTC()
		if b.Calls == 0 || t.Before(b.Since) {
			b.Since = t
		}
		if t.After(b.Until) {
			b.Until = t
		}
		b.Calls++
		b.Tools[c.Resource]++
		b.Hours[t.Hour()]++
		b.Weekdays[t.Weekday()]++
		hours[t.Unix()/3600]++
		if c.Denied {
			b.Denials++
		}
	}
	for _, n := range hours {
		b.PeakPerHour = max(b.PeakPerHour, n)
	}
	if len(hours) > 0 {
		b.PerHour = float64(b.Calls) / float64(len(hours))
	}
	b.Learning = b.Calls < cfg.MinCalls || b.Until.Sub(b.Since) < cfg.MinSpan
	return b
}

// Recent is an agent's activity in the last hour, which a gateway keeps
// in memory: enough to judge rate and denials without reading the store.
type Recent struct {
	calls   []time.Time // allowed and denied, oldest first
	denials []time.Time
}

// window is how far back Recent looks.
const window = time.Hour

// Observe adds a decided call.
func (r *Recent) Observe(c Call) {
	r.calls = append(r.calls, c.Time)
	if c.Denied {
		r.denials = append(r.denials, c.Time)
	}
}

// trim drops what is older than the window before now.
func (r *Recent) trim(now time.Time) {
	cut := now.Add(-window)
	drop := func(ts []time.Time) []time.Time {
		i := sort.Search(len(ts), func(i int) bool { return ts[i].After(cut) })
		return slices.Delete(ts, 0, i)
	}
	r.calls, r.denials = drop(r.calls), drop(r.denials)
}

// Weights of the reasons a call is risky.
const (
	novelTool    = 35
	highRate     = 30
	offHours     = 15
	perDenial    = 10
	maxDenials   = 30
	taintedScore = 20
	// rateFactor is how far above its busiest learned hour an agent's
	// last hour must be to count.
	rateFactor = 3
	// rareHour is the share of calls below which an hour of day is off
	// the agent's profile.
	rareHour = 0.01
)

// Score is a call's risk, 0 to 100, and why: a tool the agent never used,
// a rate far above its busiest hour, an hour of day it is rarely active,
// recent denials, a tainted session. While the agent is learning, only
// denials and taint count. The call itself is not yet in recent.
func Score(b Baseline, recent *Recent, c Call, tainted bool) (int, []string) {
	var score int
	var reasons []string
	add := func(n int, format string, args ...any) {
		score += n
		reasons = append(reasons, fmt.Sprintf(format, args...))
	}
	recent.trim(c.Time)
	if !b.Learning {
		if b.Tools[c.Resource] == 0 {
			add(novelTool, "novel tool %s", c.Resource)
		}
		if n := len(recent.calls) + 1; float64(n) > rateFactor*float64(b.PeakPerHour) {
			add(highRate, "%d calls in the last hour, over %d× its busiest learned hour (%d)", n, rateFactor, b.PeakPerHour)
		}
		if h := c.Time.UTC().Hour(); float64(b.Hours[h]) < rareHour*float64(b.Calls) {
			add(offHours, "off-profile hour %02d:00 UTC (%d of %d learned calls)", h, b.Hours[h], b.Calls)
		}
	}
	if n := len(recent.denials); n > 0 {
		add(min(n*perDenial, maxDenials), "%d denials in the last hour", n)
	}
	if tainted {
		add(taintedScore, "the session has read untrusted output")
	}
	return min(score, 100), reasons
}
