package baseline_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
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
		if r := baseline.Score(b, &recent, c, false); r.Score > worst && !c.Denied {
			worst = r.Score
			t.Logf("highest so far %d: %v", r.Score, r.Why)
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
		code   string
	}{
		{"a new tool", nil, baseline.Call{Agent: alpha, Resource: `Tool::"vault/get_secret"`, Time: monday10}, false, 35, "novel tool", baseline.ReasonNovelTool},
		{"off hours", nil, baseline.Call{Agent: alpha, Resource: search, Time: monday10.Add(-7 * time.Hour)}, false, 15, "off-profile hour 03:00", baseline.ReasonOffHours},
		{"ten times the rate", func(r *baseline.Recent) {
			for i := range 80 {
				r.Observe(baseline.Call{Agent: alpha, Resource: read, Time: monday10.Add(-time.Duration(80-i) * 30 * time.Second)})
			}
		}, baseline.Call{Agent: alpha, Resource: read, Time: monday10}, false, 30, "calls in the last hour", baseline.ReasonHighRate},
		{"denied again and again", func(r *baseline.Recent) {
			for i := range 5 {
				r.Observe(baseline.Call{Agent: alpha, Resource: `Tool::"docs/delete_page"`, Time: monday10.Add(-time.Duration(5-i) * time.Minute), Denied: true})
			}
		}, baseline.Call{Agent: alpha, Resource: search, Time: monday10}, false, 30, "5 denials", baseline.ReasonDenials},
		{"tainted, at night, a new tool", nil, baseline.Call{Agent: alpha, Resource: `Tool::"billing/refunds"`, Time: monday10.Add(13 * time.Hour)}, true, 70, "untrusted output", baseline.ReasonTainted},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r baseline.Recent
			if c.before != nil {
				c.before(&r)
			}
			got := baseline.Score(b, &r, c.call, c.taint)
			if got.Score < c.min || !strings.Contains(strings.Join(got.Why, "; "), c.reason) || !slices.Contains(got.Reasons, c.code) {
				t.Fatalf("score %+v, want at least %d with %q (%s)", got, c.min, c.reason, c.code)
			}
		})
	}
	// An hour later the burst is forgotten.
	var r baseline.Recent
	for i := range 80 {
		r.Observe(baseline.Call{Agent: alpha, Resource: read, Time: monday10.Add(time.Duration(i) * 30 * time.Second)})
	}
	if got := baseline.Score(b, &r, baseline.Call{Agent: alpha, Resource: read, Time: monday10.Add(2 * time.Hour)}, false); got.Score != 0 || len(got.Reasons) != 0 {
		t.Fatalf("an hour after a burst: %+v", got)
	}
}

// While learning, nothing unknown is held against the agent: only
// denials and taint score.
func TestLearningScoresOnlyWhatNeedsNoBaseline(t *testing.T) {
	b := baseline.Learn(alpha, nil, baseline.DefaultConfig)
	var r baseline.Recent
	if got := baseline.Score(b, &r, baseline.Call{Agent: alpha, Resource: `Tool::"vault/get_secret"`, Time: start.Add(3 * time.Hour)}, false); got.Score != 0 || !slices.Equal(got.Reasons, []string{baseline.ReasonLearning}) {
		t.Fatalf("a new agent scored %+v", got)
	}
	if got := baseline.Score(b, &r, baseline.Call{Agent: alpha, Resource: search, Time: start}, true); got.Score != 20 {
		t.Fatalf("taint while learning: %+v", got)
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

func TestShape(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"path":"/srv/docs/a.md"}`, "path=path:/srv/docs"},
		{`{"path":"/srv/docs/deep/b.md"}`, "path=path:/srv/docs"},
		{`{"path":"/srv/a"}`, "path=path:/srv"},
		{`{"path":"/home/u/.ssh/id_rsa"}`, "path=path:/home/u"},
		{`{"file":"/srv/docs/../../etc/shadow"}`, "file=path:.."},
		{`{"query":"q","limit":3}`, "limit=num;query=str:16"},
		{`{"query":"` + strings.Repeat("w", 300) + `"}`, "query=str:long"},
		{`{"url":"https://evil.example/x?y"}`, "url=url:https://evil.example"},
		{`{"opts":{"a":1},"tags":[],"on":true,"n":null}`, "n=null;on=bool;opts=obj;tags=arr"},
		{`{}`, ""}, {``, ""}, {`[1]`, ""}, {`{"broken"`, ""},
	} {
		if got := baseline.Shape([]byte(c.in)); got != c.want {
			t.Errorf("Shape(%s) = %q, want %q", c.in, got, c.want)
		}
	}
}

// An agent that reads its docs starts reading elsewhere with the same
// tool: the tool is not new, its arguments' shape is.
func TestNovelArgumentShape(t *testing.T) {
	var calls []baseline.Call
	for _, c := range history(1) {
		c.Shape = "path=path:/srv/docs"
		calls = append(calls, c)
	}
	b := baseline.Learn(alpha, calls, baseline.DefaultConfig)
	at := start.AddDate(0, 0, 21).Add(10 * time.Hour)
	var r baseline.Recent
	if got := baseline.Score(b, &r, baseline.Call{Agent: alpha, Resource: read, Shape: "path=path:/srv/docs", Time: at}, false); got.Score != 0 {
		t.Fatalf("the usual shape: %+v", got)
	}
	got := baseline.Score(b, &r, baseline.Call{Agent: alpha, Resource: read, Shape: "path=path:/home/u", Time: at}, false)
	if got.Score != 20 || !slices.Equal(got.Reasons, []string{baseline.ReasonNovelArgs}) {
		t.Fatalf("a new shape: %+v", got)
	}
}

// A resource called with too many shapes to judge by takes any.
func TestTooManyShapes(t *testing.T) {
	var calls []baseline.Call
	for i, c := range history(1) {
		c.Shape = fmt.Sprintf("q=%d", i)
		calls = append(calls, c)
	}
	b := baseline.Learn(alpha, calls, baseline.DefaultConfig)
	if len(b.Shapes[search]) != 65 || b.Shapes[search][baseline.ShapeAny] == 0 {
		t.Fatalf("%d shapes of search", len(b.Shapes[search]))
	}
	var r baseline.Recent
	if got := baseline.Score(b, &r, baseline.Call{Agent: alpha, Resource: search, Shape: "q=new", Time: start.AddDate(0, 0, 21).Add(10 * time.Hour)}, false); got.Score != 0 {
		t.Fatalf("any shape: %+v", got)
	}
}

// Shaping a call's arguments is in the gateway's hot path too: beside
// decoding them with encoding/json alone, in one run.
func BenchmarkShape(b *testing.B) {
	in := []byte(`{"path":"/srv/docs/guide.md","limit":20,"query":"release notes for the gateway"}`)
	b.Run("shape", func(b *testing.B) {
		for b.Loop() {
			baseline.Shape(in)
		}
	})
	b.Run("json-decode", func(b *testing.B) {
		for b.Loop() {
			var m map[string]any
			_ = json.Unmarshal(in, &m)
		}
	})
}

// Shape reads arguments without decoding them; for any valid object it
// must agree with a reading by encoding/json.
func FuzzShape(f *testing.F) {
	for _, s := range []string{`{"path":"/srv/docs/a.md"}`, `{"q":"a\"b","n":1.5e3,"o":{"x":[1,"]"]}}`, `{"k\u00e9":"\u002fetc/x"}`, `{}`, `[]`, `{"a":}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got := baseline.Shape(in)
		var m map[string]json.RawMessage
		if !json.Valid(in) || json.Unmarshal(in, &m) != nil {
			return
		}
		if strings.Count(got, "=") != min(len(m), 16) && got != "" {
			return // duplicate names: encoding/json keeps one
		}
		names := make([]string, 0, len(m))
		for k := range m {
			names = append(names, k)
		}
		slices.Sort(names)
		if len(names) > 16 {
			names = names[:16]
		}
		var want []string
		for _, k := range names {
			v := m[k]
			var kind string
			switch v[0] {
			case '{':
				kind = "obj"
			case '[':
				kind = "arr"
			case 't', 'f':
				kind = "bool"
			case 'n':
				kind = "null"
			case '"':
				var s string
				_ = json.Unmarshal(v, &s)
				kind = baseline.Shape([]byte(`{"x":` + string(v) + `}`))[2:]
				_ = s
			default:
				kind = "num"
			}
			if len(k) > 32 {
				k = k[:32]
			}
			want = append(want, k+"="+kind)
		}
		if w := strings.Join(want, ";"); got != w {
			t.Fatalf("Shape(%q) = %q, encoding/json reads %q", in, got, w)
		}
	})
}

// A compromised agent probing a tool while its baseline is young does not
// make the tool usual: what was refused is not learned as habit.
func TestProbingDoesNotTrainTheBaseline(t *testing.T) {
	calls := history(1) // denied delete_page once a day
	b := baseline.Learn(alpha, calls, baseline.DefaultConfig)
	del := `Tool::"docs/delete_page"`
	if b.Tools[del] != 0 || b.DeniedTools[del] != 10 {
		t.Fatalf("tools %v, denied %v", b.Tools, b.DeniedTools)
	}
	var r baseline.Recent
	if got := baseline.Score(b, &r, baseline.Call{Agent: alpha, Resource: del, Time: start.AddDate(0, 0, 21).Add(10 * time.Hour)}, false); !slices.Contains(got.Reasons, baseline.ReasonNovelTool) {
		t.Fatalf("a probed tool, now allowed: %+v", got)
	}
}

// What is refused, or allowed only at a high risk, is not habit: 1000
// denied calls at 03:00 move neither the hours nor the busiest hour, and
// a novel tool allowed at risk 65 stays novel after the next refresh.
// A server's lists and egress are not habits at all: never novel.
func TestOnlyUsualAllowedCallsAreHabit(t *testing.T) {
	calls := history(1)
	night := start.AddDate(0, 0, 13).Add(3 * time.Hour)
	for i := range 1000 {
		calls = append(calls, baseline.Call{Agent: alpha, Resource: fmt.Sprintf(`Tool::"x/t%d"`, i), Time: night.Add(time.Duration(i) * time.Second), Denied: true})
	}
	calls = append(calls, baseline.Call{Agent: alpha, Resource: `Tool::"vault/get_secret"`, Time: night, Risk: 65})
	b := baseline.Learn(alpha, calls, baseline.DefaultConfig)
	if b.Hours[3] != 0 || b.PeakPerHour > 8 || b.Denials != 1010 || b.Anomalous != 1 || b.Tools[`Tool::"vault/get_secret"`] != 0 {
		t.Fatalf("hours[3]=%d peak=%d denials=%d anomalous=%d tools=%v", b.Hours[3], b.PeakPerHour, b.Denials, b.Anomalous, b.Tools)
	}
	at := start.AddDate(0, 0, 21).Add(10 * time.Hour)
	var r baseline.Recent
	for _, res := range []string{`ToolServer::"files"`, `Host::"tool/api.example.com:443"`} {
		if got := baseline.Score(b, &r, baseline.Call{Agent: alpha, Resource: res, Time: at}, false); got.Score != 0 {
			t.Fatalf("%s: %+v", res, got)
		}
	}
}
