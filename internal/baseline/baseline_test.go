package baseline_test

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/baseline"
)

const alpha = "spiffe://bulkhead.local/agent/alpha"

var (
	search = `Tool::"docs/search"`
	read   = `Tool::"docs/read_page"`
	start  = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC) // a Monday
)

// history is two weeks of a normal agent: weekdays 09:00–17:00 UTC, a
// few searches and reads an hour, one denial a day.
func history(seed uint64) []baseline.Call {
	r := rand.New(rand.NewPCG(seed, 1))
	var out []baseline.Call
	for d := range 14 {
		day := start.AddDate(0, 0, d)
		if day.Weekday() == time.Saturday || day.Weekday() == time.Sunday {
			continue
		}
		for h := 9; h < 17; h++ {
			for range 3 + r.IntN(4) {
				res := search
				if r.IntN(3) == 0 {
					res = read
				}
				out = append(out, baseline.Call{Agent: alpha, Resource: res, Time: day.Add(time.Duration(h)*time.Hour + time.Duration(r.IntN(3600))*time.Second)})
			}
		}
		out = append(out, baseline.Call{Agent: alpha, Resource: `Tool::"docs/delete_page"`, Time: day.Add(12 * time.Hour), Denied: true})
	}
	return out
}

func TestLearnFromHistory(t *testing.T) {
	b := baseline.Learn(alpha, history(1), baseline.DefaultConfig)
	if b.Learning || b.Tools[search] == 0 || b.Tools[read] == 0 || b.Hours[3] != 0 || b.Hours[10] == 0 || b.Weekdays[time.Saturday] != 0 ||
		b.Denials != 10 || b.PeakPerHour > 8 || b.PerHour < 3 {
		t.Fatalf("baseline %+v", b)
	}
	young := baseline.Learn(alpha, history(1)[:20], baseline.DefaultConfig)
	if !young.Learning {
		t.Fatal("20 calls in an afternoon are a learned baseline")
	}
}

// A normal agent's risk stays low over a normal day; an agent whose
// behaviour shifts crosses the thresholds with the right reasons.
func TestScoreByReplay(t *testing.T) {
	b := baseline.Learn(alpha, history(1), baseline.DefaultConfig)
	// The third week, as normal as the first two.
	var worst int
	var recent baseline.Recent
	for _, c := range history(2) {
		c.Time = c.Time.AddDate(0, 0, 14)
		if s, reasons := baseline.Score(b, &recent, c, false); s > worst && !c.Denied {
			worst = s
			t.Logf("highest so far %d: %v", s, reasons)
		}
		recent.Observe(c)
	}
	if worst > 20 {
		t.Fatalf("a normal week scored %d", worst)
	}

	monday10 := start.AddDate(0, 0, 21).Add(10 * time.Hour)
	cases := []struct {
		name   string
		before func(*baseline.Recent)
		call   baseline.Call
		taint  bool
		min    int
		reason string
	}{
		{"a new tool", nil, baseline.Call{Agent: alpha, Resource: `Tool::"vault/get_secret"`, Time: monday10}, false, 35, "novel tool"},
		{"off hours", nil, baseline.Call{Agent: alpha, Resource: search, Time: monday10.Add(-7 * time.Hour)}, false, 15, "off-profile hour 03:00"},
		{"ten times the rate", func(r *baseline.Recent) {
			for i := range 80 {
				r.Observe(baseline.Call{Agent: alpha, Resource: read, Time: monday10.Add(-time.Duration(80-i) * 30 * time.Second)})
			}
		}, baseline.Call{Agent: alpha, Resource: read, Time: monday10}, false, 30, "calls in the last hour"},
		{"denied again and again", func(r *baseline.Recent) {
			for i := range 5 {
				r.Observe(baseline.Call{Agent: alpha, Resource: `Tool::"docs/delete_page"`, Time: monday10.Add(-time.Duration(5-i) * time.Minute), Denied: true})
			}
		}, baseline.Call{Agent: alpha, Resource: search, Time: monday10}, false, 30, "5 denials"},
		{"tainted, at night, a new tool", nil, baseline.Call{Agent: alpha, Resource: `Tool::"billing/refunds"`, Time: monday10.Add(13 * time.Hour)}, true, 70, "untrusted output"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r baseline.Recent
			if c.before != nil {
				c.before(&r)
			}
			s, reasons := baseline.Score(b, &r, c.call, c.taint)
			if s < c.min || !strings.Contains(strings.Join(reasons, "; "), c.reason) {
				t.Fatalf("score %d %v, want at least %d with %q", s, reasons, c.min, c.reason)
			}
		})
	}
	// An hour later the burst is forgotten.
	var r baseline.Recent
	for i := range 80 {
		r.Observe(baseline.Call{Agent: alpha, Resource: read, Time: monday10.Add(time.Duration(i) * 30 * time.Second)})
	}
	if s, reasons := baseline.Score(b, &r, baseline.Call{Agent: alpha, Resource: read, Time: monday10.Add(2 * time.Hour)}, false); s != 0 {
		t.Fatalf("an hour after a burst: %d %v", s, reasons)
	}
}

// While learning, nothing unknown is held against the agent: only
// denials and taint score.
func TestLearningScoresOnlyWhatNeedsNoBaseline(t *testing.T) {
	b := baseline.Learn(alpha, nil, baseline.DefaultConfig)
	var r baseline.Recent
	if s, reasons := baseline.Score(b, &r, baseline.Call{Agent: alpha, Resource: `Tool::"vault/get_secret"`, Time: start.Add(3 * time.Hour)}, false); s != 0 {
		t.Fatalf("a new agent scored %d %v", s, reasons)
	}
	if s, _ := baseline.Score(b, &r, baseline.Call{Agent: alpha, Resource: search, Time: start}, true); s != 20 {
		t.Fatalf("taint while learning: %d", s)
	}
}

func TestFromEvent(t *testing.T) {
	for _, c := range []struct {
		ev audit.Event
		ok bool
	}{
		{audit.Event{Actor: audit.Actor{Kind: audit.ActorAgent, ID: alpha}, Action: "gateway.call_tool", Target: search, Decision: audit.Deny}, true},
		{audit.Event{Actor: audit.Actor{Kind: audit.ActorAgent, ID: alpha}, Action: "gateway.GET", Target: `Route::"billing/invoices"`}, true},
		{audit.Event{Actor: audit.Actor{Kind: audit.ActorAgent, ID: alpha}, Action: "gateway.budget", Target: search}, false},
		{audit.Event{Actor: audit.Actor{Kind: audit.ActorWorkload, ID: "gateway/x"}, Action: "gateway.call_tool", Target: search}, false},
		{audit.Event{Actor: audit.Actor{Kind: audit.ActorAgent, ID: alpha}, Action: "svid.renew", Target: alpha}, false},
	} {
		if _, ok := baseline.FromEvent(c.ev); ok != c.ok {
			t.Errorf("%s by %s: %v", c.ev.Action, c.ev.Actor.Kind, ok)
		}
	}
}

// Scoring is in the gateway's hot path: measure it beside learning's
// cost per call, in one run.
func BenchmarkScore(b *testing.B) {
	bl := baseline.Learn(alpha, history(1), baseline.DefaultConfig)
	calls := history(2)
	b.Run("score", func(b *testing.B) {
		var r baseline.Recent
		i := 0
		for b.Loop() {
			c := calls[i%len(calls)]
			c.Time = c.Time.AddDate(0, 0, 14*(1+i/len(calls)))
			baseline.Score(bl, &r, c, false)
			r.Observe(c)
			i++
		}
	})
	b.Run("learn-per-call", func(b *testing.B) {
		for b.Loop() {
			baseline.Learn(alpha, calls, baseline.DefaultConfig)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(calls)), "ns/call")
	})
}
