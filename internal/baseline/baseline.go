// Package baseline learns how each agent behaves from the audit log —
// which tools it calls, how often, at which hours, how often it is denied
// — and scores a new call's risk (0–100, with its reasons) against that
// baseline and the agent's recent activity. Baselines are learned by
// replaying the gateway's decision records, so they can be rebuilt and
// tested from any history; scoring reads only memory.
package baseline

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
)

// Call is one decided call, as the gateway's decision record has it.
type Call struct {
	Agent    string
	Resource string // e.g. Tool::"docs/search"
	// Shape is the shape of its arguments (see Shape); empty if unknown.
	Shape  string
	Time   time.Time
	Denied bool
	// TaskRead is what the call's task has read so far (answers' bytes),
	// as the scoring gateway saw it; 0 outside a task.
	TaskRead int64
	// Risk is the risk its record carries: a call allowed at a risk of
	// learnBelow or more is not learned as habit.
	Risk int
}

// learnBelow is the risk below which an allowed call is learned as habit.
const learnBelow = 50

// FromEvent reads a gateway decision record (gateway.call_tool, or an
// HTTP route's); ok is false for any other event.
func FromEvent(e audit.Event) (Call, bool) {
	if e.Actor.Kind != audit.ActorAgent || e.Target == "" || !slices.Contains(decisionActions, e.Action) {
		return Call{}, false
	}
	risk, _ := strconv.Atoi(e.Detail["risk"])
	return Call{Agent: e.Actor.ID, Resource: e.Target, Shape: e.Detail["shape"], Time: e.Time, Denied: e.Decision == audit.Deny, Risk: risk}, true
}

// decisionActions are the gateway records a baseline learns calls from.
var decisionActions = []string{"gateway.call_tool", "gateway.GET", "gateway.POST", "gateway.PUT", "gateway.PATCH", "gateway.DELETE"}

// actionUsage is a gateway's record of what an agent's answers returned
// (gateway.ActionUsage).
const actionUsage = "gateway.usage"

// Usage is what a resource's answered calls returned over a period: a
// gateway.usage record's detail holds it by resource.
type Usage struct {
	Calls int64 `json:"calls"`
	Bytes int64 `json:"bytes"`
	// Items are the records the answers held (MCP content items,
	// resource contents, prompt messages).
	Items int64 `json:"items,omitempty"`
}

// FromUsage reads a gateway.usage record: the task and the usage by
// resource; ok is false for any other event.
func FromUsage(e audit.Event) (task string, usage map[string]Usage, ok bool) {
	if e.Action != actionUsage || e.Actor.Kind != audit.ActorAgent {
		return "", nil, false
	}
	if json.Unmarshal([]byte(e.Detail["usage"]), &usage) != nil {
		return "", nil, false
	}
	return e.Task, usage, true
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

// maxShapes bounds the argument shapes kept per resource: a resource
// called with more is marked as taking any shape (ShapeAny), and no shape
// of it is novel.
const maxShapes = 64

// ShapeAny marks a resource seen with more than maxShapes shapes.
const ShapeAny = "*"

// learner is a baseline being learned, with what it needs to go on
// learning from later events: it is what the store keeps.
type learner struct {
	B Baseline `json:"baseline"`
	// ActiveHours counts the hours with calls; Hour is the newest of
	// them (Unix hours) and HourCalls its calls so far.
	ActiveHours int   `json:"active_hours"`
	Hour        int64 `json:"hour"`
	HourCalls   int   `json:"hour_calls"`
	// EWMA is the weighted rate of the active hours before Hour.
	EWMA float64 `json:"ewma"`
	// What answers returned: by resource, and by task (the most recent
	// maxTasks tasks, oldest first in TaskOrder; the largest ever and the
	// total over all).
	ResCalls   map[string]int64 `json:"res_calls"`
	ResBytes   map[string]int64 `json:"res_bytes"`
	ResItems   map[string]int64 `json:"res_items"`
	TaskBytes  map[string]int64 `json:"task_bytes"`
	TaskOrder  []string         `json:"task_order"`
	Tasks      int64            `json:"tasks"`
	TotalBytes int64            `json:"total_task_bytes"`
	MaxTask    int64            `json:"max_task_bytes"`
}

// maxTasks bounds the tasks whose totals a learner keeps.
const maxTasks = 256

func newLearner(agent string) *learner {
	return &learner{B: Baseline{Agent: agent, Tools: map[string]int{}, DeniedTools: map[string]int{}, Shapes: map[string]map[string]int{}},
		ResCalls: map[string]int64{}, ResBytes: map[string]int64{}, ResItems: map[string]int64{}, TaskBytes: map[string]int64{}}
}

// addUsage learns what a task's answers returned.
func (l *learner) addUsage(task string, usage map[string]Usage) {
	var n int64
	for res, u := range usage {
		l.ResCalls[res] += u.Calls
		l.ResBytes[res] += u.Bytes
		l.ResItems[res] += u.Items
		n += u.Bytes
	}
	if task == "" {
		return
	}
	if _, ok := l.TaskBytes[task]; !ok {
		l.Tasks++
		l.TaskOrder = append(l.TaskOrder, task)
		if len(l.TaskOrder) > maxTasks {
			delete(l.TaskBytes, l.TaskOrder[0])
			l.TaskOrder = l.TaskOrder[1:]
		}
	}
	l.TaskBytes[task] += n
	l.TotalBytes += n
	l.MaxTask = max(l.MaxTask, l.TaskBytes[task])
}

// add learns one call. Calls come in about the order they were made (the
// log's); one older than the newest hour counts in that hour. Only
// allowed calls at a usual risk are habit: a refused one is counted as a
// denial (probing a tool, or spraying calls at 03:00, does not make it
// usual), an anomalous one as such (an anomaly does not become the norm
// at the next refresh).
func (l *learner) add(c Call) {
	b := &l.B
	switch {
	case c.Denied:
		b.Denials++
		b.DeniedTools[c.Resource]++
		return
	case c.Risk >= learnBelow:
		b.Anomalous++
		return
	}
	t := c.Time.UTC()
	if b.Calls == 0 || t.Before(b.Since) {
		b.Since = t
	}
	if t.After(b.Until) {
		b.Until = t
	}
	b.Calls++
	b.Hours[t.Hour()]++
	b.Weekdays[t.Weekday()]++
	b.Tools[c.Resource]++
	if h := t.Unix() / 3600; l.ActiveHours == 0 || h > l.Hour {
		if l.ActiveHours > 0 {
			l.EWMA = ewma(l.EWMA, l.HourCalls, l.ActiveHours == 1)
		}
		l.ActiveHours, l.Hour, l.HourCalls = l.ActiveHours+1, h, 1
	} else {
		l.HourCalls++
	}
	b.PeakPerHour = max(b.PeakPerHour, l.HourCalls)
	if c.Shape != "" {
		l.addShape(c.Resource, c.Shape, 1)
	}
}

// ewmaAlpha weighs the newest active hour in RateEWMA.
const ewmaAlpha = 0.2

// ewma folds an hour's calls into the weighted rate (the first hour is
// the rate).
func ewma(rate float64, calls int, first bool) float64 {
	if first {
		return float64(calls)
	}
	return ewmaAlpha*float64(calls) + (1-ewmaAlpha)*rate
}

// addShape counts n calls of resource with arguments of shape.
func (l *learner) addShape(resource, shape string, n int) {
	shapes := l.B.Shapes[resource]
	if shapes == nil {
		shapes = map[string]int{}
		l.B.Shapes[resource] = shapes
	}
	switch {
	case shapes[shape] > 0 || len(shapes) < maxShapes:
		shapes[shape] += n
	default:
		shapes[ShapeAny] += n
	}
}

// baseline is what was learned, judged by cfg.
func (l *learner) baseline(cfg Config) Baseline {
	b := l.B
	if len(l.ResCalls) > 0 {
		b.BytesPerCall, b.ItemsPerCall = map[string]int64{}, map[string]float64{}
		for res, n := range l.ResCalls {
			if n > 0 {
				b.BytesPerCall[res] = l.ResBytes[res] / n
				b.ItemsPerCall[res] = float64(l.ResItems[res]) / float64(n)
			}
		}
	}
	if l.ActiveHours > 0 {
		b.RateEWMA = ewma(l.EWMA, l.HourCalls, l.ActiveHours == 1)
	}
	b.MaxBytesPerTask = l.MaxTask
	if l.Tasks > 0 {
		b.MeanBytesPerTask = l.TotalBytes / l.Tasks
	}
	if l.ActiveHours > 0 {
		b.PerHour = float64(b.Calls) / float64(l.ActiveHours)
	}
	b.Learning = b.Calls < cfg.MinCalls || b.Until.Sub(b.Since) < cfg.MinSpan
	return b
}

// merge adds what another learner learned (another agent's): counts add
// up, and the busiest hour is the busiest of any one agent, since a rate
// is judged per agent.
func (l *learner) merge(o *learner) {
	b, ob := &l.B, &o.B
	if ob.Calls == 0 {
		return
	}
	if b.Calls == 0 || ob.Since.Before(b.Since) {
		b.Since = ob.Since
	}
	if ob.Until.After(b.Until) {
		b.Until = ob.Until
	}
	b.Calls += ob.Calls
	b.Denials += ob.Denials
	b.Anomalous += ob.Anomalous
	for k, n := range ob.Tools {
		b.Tools[k] += n
	}
	for k, n := range ob.DeniedTools {
		b.DeniedTools[k] += n
	}
	for res, shapes := range ob.Shapes {
		for sh, n := range shapes {
			l.addShape(res, sh, n)
		}
	}
	for h, n := range ob.Hours {
		b.Hours[h] += n
	}
	for d, n := range ob.Weekdays {
		b.Weekdays[d] += n
	}
	l.ActiveHours += o.ActiveHours
	b.PeakPerHour = max(b.PeakPerHour, ob.PeakPerHour)
	// Rates are per agent: the busiest agent's.
	l.EWMA = max(l.EWMA, ewma(o.EWMA, o.HourCalls, o.ActiveHours == 1))
	for res, n := range o.ResCalls {
		l.ResCalls[res] += n
		l.ResBytes[res] += o.ResBytes[res]
		l.ResItems[res] += o.ResItems[res]
	}
	// A task is one agent's: the largest of any, and the mean over all.
	l.Tasks += o.Tasks
	l.TotalBytes += o.TotalBytes
	l.MaxTask = max(l.MaxTask, o.MaxTask)
}

// Learn replays an agent's calls (any order) into its baseline.
func Learn(agent string, calls []Call, cfg Config) Baseline {
	mine := make([]Call, 0, len(calls))
	for _, c := range calls {
		if c.Agent == agent {
			mine = append(mine, c)
		}
	}
	slices.SortStableFunc(mine, func(a, b Call) int { return a.Time.Compare(b.Time) })
	l := newLearner(agent)
	for _, c := range mine {
		l.add(c)
	}
	return l.baseline(cfg)
}

// Recent is an agent's activity in the last hour, which a gateway keeps
// in memory: enough to judge rate and denials without reading the store.
// It counts by minute, so its size is fixed whatever the agent's rate.
type Recent struct {
	buckets [window / time.Minute]bucket
}

type bucket struct {
	minute         int64 // Unix minute the counts are of
	calls, denials int
}

// window is how far back Recent looks.
const window = time.Hour

// Observe adds a decided call.
func (r *Recent) Observe(c Call) {
	m := c.Time.Unix() / 60
	b := &r.buckets[m%int64(len(r.buckets))]
	if b.minute != m {
		*b = bucket{minute: m}
	}
	b.calls++
	if c.Denied {
		b.denials++
	}
}

// last returns the calls and denials of the hour before now.
func (r *Recent) last(now time.Time) (calls, denials int) {
	m := now.Unix() / 60
	for _, b := range r.buckets {
		if b.minute > m-int64(len(r.buckets)) && b.minute <= m {
			calls += b.calls
			denials += b.denials
		}
	}
	return calls, denials
}

// Weights of the reasons a call is risky.
const (
	novelTool  = 35
	novelShape = 20
	bulkRead   = 30
	// bulkFactor is how far past the most its tasks ever read a task's
	// reads must go to count, and bulkFloor the least that counts.
	bulkFactor   = 4
	bulkFloor    = 1 << 20
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

// The codes of a risk's reasons, which policies read in
// context.risk_reasons.
const (
	ReasonNovelTool  = "novel_tool"
	ReasonNovelArgs  = "novel_arguments"
	ReasonBulkRead   = "bulk_read"
	ReasonHighRate   = "high_rate"
	ReasonOffHours   = "off_hours"
	ReasonDenials    = "denials"
	ReasonTainted    = "tainted"
	ReasonLearning   = "learning"      // no points: the baseline is too young to judge by
	ReasonNoBaseline = "no_baseline"   // no points: the baseline could not be read
	ReasonByRole     = "role_baseline" // no points: judged by its roles' agents, its own still learning
)

// habitual reports a resource whose use a baseline learns: a tool or an
// HTTP route (decisionActions' resources).
func habitual(resource string) bool {
	return strings.HasPrefix(resource, "Tool::") || strings.HasPrefix(resource, "Route::")
}

// Risk is a call's risk: a score from 0 to 100, the codes of what raised
// it (context.risk_reasons) and, for the record, why in words.
type Risk struct {
	Score   int
	Reasons []string
	Why     []string
}

func (r *Risk) add(points int, code, format string, args ...any) {
	r.Score = min(r.Score+points, 100)
	r.Reasons = append(r.Reasons, code)
	r.Why = append(r.Why, fmt.Sprintf(format, args...))
}

// Score is a call's risk: a tool the agent never used (or used with
// arguments of another shape), a rate far above
// its busiest hour, an hour of day it is rarely active, recent denials, a
// tainted session. While the agent is learning, only denials and taint
// count. The call itself is not yet in recent.
func Score(b Baseline, recent *Recent, c Call, tainted bool) Risk {
	var r Risk
	calls, denials := recent.last(c.Time)
	if b.Learning {
		r.add(0, ReasonLearning, "the baseline is still learning (%d calls)", b.Calls)
	} else {
		if b.Basis != "" {
			r.add(0, ReasonByRole, "judged by the baseline of its %s", b.Basis)
		}
		if !habitual(c.Resource) {
			// A server's lists, resources, prompts and egress are not
			// learned as habits: neither novel nor usual.
		} else if b.Tools[c.Resource] == 0 {
			r.add(novelTool, ReasonNovelTool, "novel tool %s", c.Resource)
		} else if known := b.Shapes[c.Resource]; c.Shape != "" && len(known) > 0 && known[c.Shape] == 0 && known[ShapeAny] == 0 {
			r.add(novelShape, ReasonNovelArgs, "arguments shaped %s, never seen for %s", c.Shape, c.Resource)
		}
		if n := calls + 1; float64(n) > rateFactor*float64(b.PeakPerHour) {
			r.add(highRate, ReasonHighRate, "%d calls in the last hour, over %d× its busiest learned hour (%d)", n, rateFactor, b.PeakPerHour)
		}
		if b.MaxBytesPerTask > 0 && c.TaskRead > max(bulkFactor*b.MaxBytesPerTask, bulkFloor) {
			r.add(bulkRead, ReasonBulkRead, "its task has read %d bytes, over %d× the most any of its tasks read (%d)", c.TaskRead, bulkFactor, b.MaxBytesPerTask)
		}
		if h := c.Time.UTC().Hour(); float64(b.Hours[h]) < rareHour*float64(b.Calls) {
			r.add(offHours, ReasonOffHours, "off-profile hour %02d:00 UTC (%d of %d learned calls)", h, b.Hours[h], b.Calls)
		}
	}
	if n := denials; n > 0 {
		r.add(min(n*perDenial, maxDenials), ReasonDenials, "%d denials in the last hour", n)
	}
	if tainted {
		r.add(taintedScore, ReasonTainted, "the session has read untrusted output")
	}
	return r
}
