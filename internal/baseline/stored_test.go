package baseline_test

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/baseline"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// Baselines are learned from the log where the stored state left off: two
// reads with events between them learn what one read of everything does,
// and what was learned stays when the events are pruned.
func TestStoredBaselineLearnsIncrementally(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			db := b.Open(t)
			ctx := context.Background()
			l := audit.New(db, clock.Real{}, storetest.Logger(t))
			calls := history(1)
			// A log is in the order things happened.
			slices.SortFunc(calls, func(a, b baseline.Call) int { return a.Time.Compare(b.Time) })
			record := func(cs []baseline.Call) {
				for _, c := range cs {
					ev := audit.Event{Time: c.Time, Actor: audit.Actor{Kind: audit.ActorAgent, ID: c.Agent}, Action: "gateway.call_tool",
						Target: c.Resource, Decision: audit.Allow, Detail: map[string]string{"shape": "q=str:16"}}
					if c.Denied {
						ev.Decision = audit.Deny
					}
					// Another agent's calls and other actions are not learned.
					other := ev
					other.Actor.ID = "spiffe://bulkhead.local/agent/beta"
					renew := audit.Event{Time: c.Time, Actor: ev.Actor, Action: audit.ActionSVIDRenew, Target: c.Agent, Decision: audit.Allow}
					for _, e := range []audit.Event{ev, other, renew} {
						if _, err := l.Record(ctx, e); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			src := baseline.StoredSource{Store: db, Events: db, Config: baseline.DefaultConfig, Clock: clock.Real{}, Logger: storetest.Logger(t)}
			half := len(calls) / 2
			record(calls[:half])
			allowed := 0
			for _, c := range calls[:half] {
				if !c.Denied {
					allowed++
				}
			}
			first, err := src.Baseline(ctx, alpha)
			if err != nil || first.Calls != allowed {
				t.Fatalf("first read: %v %d calls", err, first.Calls)
			}
			record(calls[half:])
			got, err := src.Baseline(ctx, alpha)
			if err != nil {
				t.Fatal(err)
			}
			for i := range calls {
				calls[i].Shape = "q=str:16"
			}
			if want := baseline.Learn(alpha, calls, baseline.DefaultConfig); !reflect.DeepEqual(got, want) {
				t.Fatalf("incremental\n %+v\nwhole\n %+v", got, want)
			}
			// The log is pruned: the baseline stays.
			st, err := db.TreeState(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n, err := db.PruneEvents(ctx, st.Size); err != nil || n == 0 {
				t.Fatalf("pruned %d: %v", n, err)
			}
			if again, err := src.Baseline(ctx, alpha); err != nil || again.Calls+again.Denials != len(calls) {
				t.Fatalf("after pruning: %v %d calls", err, again.Calls)
			}
		})
	}
}

// rolesOf is a fixed list of agents and roles.
type rolesOf []policy.AgentRoles

func (r rolesOf) PolicyAgents(context.Context) ([]policy.AgentRoles, error) { return r, nil }

// A new agent has no baseline of its own yet: it is judged by what the
// agents of its roles do, from its first call — a tool no reader ever
// called is novel — while another role's habits do not count.
func TestANewAgentIsJudgedByItsRoles(t *testing.T) {
	db := storetest.SQLite.Open(t)
	ctx := context.Background()
	l := audit.New(db, clock.Real{}, storetest.Logger(t))
	const (
		beta  = "spiffe://bulkhead.local/agent/beta"
		gamma = "spiffe://bulkhead.local/agent/gamma"
		ops   = "spiffe://bulkhead.local/agent/ops"
		delta = "spiffe://bulkhead.local/agent/delta"
	)
	for _, who := range []struct {
		id, tool string
	}{{beta, search}, {gamma, read}, {ops, `Tool::"vault/get_secret"`}} {
		for _, c := range history(1) {
			ev := audit.Event{Time: c.Time, Actor: audit.Actor{Kind: audit.ActorAgent, ID: who.id}, Action: "gateway.call_tool",
				Target: who.tool, Decision: audit.Allow}
			if _, err := l.Record(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	roles := rolesOf{{Name: "beta", SPIFFEID: beta, Roles: []string{"reader"}}, {Name: "gamma", SPIFFEID: gamma, Roles: []string{"reader", "writer"}},
		{Name: "ops", SPIFFEID: ops, Roles: []string{"ops"}}, {Name: "delta", SPIFFEID: delta, Roles: []string{"reader"}}}
	src := baseline.StoredSource{Store: db, Events: db, Roles: roles, Config: baseline.DefaultConfig, Clock: clock.Real{}, Logger: storetest.Logger(t)}
	for _, id := range []string{delta, delta + "/sub/w1"} {
		b, err := src.Baseline(ctx, id)
		if err != nil || b.Learning || b.Basis != "roles reader (2 agents)" || b.Tools[search] == 0 || b.Tools[read] == 0 || b.Tools[`Tool::"vault/get_secret"`] != 0 {
			t.Fatalf("%s: %v %+v", id, err, b)
		}
		at := start.AddDate(0, 0, 21).Add(10 * time.Hour)
		var r baseline.Recent
		got := baseline.Score(b, &r, baseline.Call{Agent: id, Resource: `Tool::"vault/get_secret"`, Time: at}, false)
		if got.Score != 35 || !slices.Equal(got.Reasons, []string{baseline.ReasonByRole, baseline.ReasonNovelTool}) {
			t.Fatalf("%s: a tool no reader calls: %+v", id, got)
		}
	}
	// An agent with a baseline of its own is judged by it.
	if b, err := src.Baseline(ctx, beta); err != nil || b.Basis != "" || b.Tools[read] != 0 {
		t.Fatalf("beta: %v %+v", err, b)
	}
}

// What answers returned is learned from the gateways' usage records: per
// resource, and per task.
func TestUsageIsLearned(t *testing.T) {
	db := storetest.SQLite.Open(t)
	ctx := context.Background()
	l := audit.New(db, clock.Real{}, storetest.Logger(t))
	for _, u := range []struct {
		task, usage string
	}{
		{"t1", `{"Tool::\"docs/search\"":{"calls":4,"bytes":4000,"items":10},"Tool::\"docs/read_page\"":{"calls":1,"bytes":9000,"items":1}}`},
		{"t1", `{"Tool::\"docs/search\"":{"calls":6,"bytes":2000}}`},
		{"t2", `{"Tool::\"docs/search\"":{"calls":2,"bytes":1000}}`},
		{"", `{"Tool::\"docs/search\"":{"calls":8,"bytes":1000}}`},
	} {
		if _, err := l.Record(ctx, audit.Event{Actor: audit.Actor{Kind: audit.ActorAgent, ID: alpha}, Action: "gateway.usage", Target: alpha,
			Decision: audit.Allow, Task: u.task, Detail: map[string]string{"usage": u.usage}}); err != nil {
			t.Fatal(err)
		}
	}
	src := baseline.StoredSource{Store: db, Events: db, Config: baseline.DefaultConfig, Clock: clock.Real{}, Logger: storetest.Logger(t)}
	b, err := src.Baseline(ctx, alpha)
	if err != nil {
		t.Fatal(err)
	}
	if b.BytesPerCall[search] != 400 || b.BytesPerCall[read] != 9000 || b.MaxBytesPerTask != 15000 || b.MeanBytesPerTask != 8000 ||
		b.ItemsPerCall[search] != 0.5 || b.ItemsPerCall[read] != 1 {
		t.Fatalf("bytes per call %v, per task max %d mean %d", b.BytesPerCall, b.MaxBytesPerTask, b.MeanBytesPerTask)
	}
}
