package baseline_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/baseline"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
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
			first, err := src.Baseline(ctx, alpha)
			if err != nil || first.Calls != half {
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
			if again, err := src.Baseline(ctx, alpha); err != nil || again.Calls != len(calls) {
				t.Fatalf("after pruning: %v %d calls", err, again.Calls)
			}
		})
	}
}
