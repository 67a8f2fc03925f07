package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/baseline"
	"github.com/bulkhead-dev/bulkhead/internal/budget"
	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/token"
)

// BenchmarkRiskScoring measures what scoring a call's risk adds to the
// gateway's enforcement pipeline (decision, record, budgets; the PDP and
// the audit log stubbed, as they are measured in their own benchmarks),
// side by side: without a risk tracker, and with one scoring every call
// against a learned baseline of three days and observing it — a usual
// call, and a novel tool whose reasons are written into its record.
func BenchmarkRiskScoring(b *testing.B) {
	cfg, err := ParseConfig([]byte(`listen: 127.0.0.1:0
resource: https://gw.test
servers:
  - name: files
    http: { url: "http://127.0.0.1:1", routes: [{ name: all, method: GET, path: "/*" }] }
    callers: ["spiffe://bulkhead.local/agent/*"]
`), nil)
	if err != nil {
		b.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://bulkhead.local/agent/alpha")
	now := time.Now()
	var history []baseline.Call
	for at := now.Add(-72 * time.Hour); at.Before(now); at = at.Add(time.Minute) {
		history = append(history, baseline.Call{Agent: id.String(), Resource: policy.Tool("files", "search").String(), Time: at})
	}
	learned := baseline.Learn(id.String(), history, baseline.DefaultConfig)
	// A benchmark calls far faster than the agent ever did: lift its
	// busiest hour so that the usual call stays usual.
	learned.PeakPerHour = 1 << 40
	src := baseline.SourceFunc(func(context.Context, string) (baseline.Baseline, error) { return learned, nil })
	rev := NewRevocations(storetest.Logger(b))
	rev.SetReady()
	g, err := New(cfg, Deps{Verifier: &Verifier{}, Revocations: rev, Decider: benchDecider{}, Audit: benchRecorder{},
		Budgets: &budget.Memory{}, Baselines: src, Clock: clock.Real{}, Logger: storetest.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	usual := action{server: &cfg.Servers[0], name: policy.ActionCallTool, resource: policy.Tool("files", "search"), input: []byte(`{"query":"q"}`), metered: true}
	novel := usual
	novel.resource = policy.Tool("files", "export_all")
	for _, c := range []struct {
		name string
		risk *baseline.Tracker
		a    action
	}{{"pipeline", nil, usual}, {"pipeline+risk", g.risk, usual}, {"pipeline+risk-anomalous", g.risk, novel}} {
		var a action
		b.Run(c.name, func(b *testing.B) {
			g.risk, a = c.risk, c.a
			ctx := context.Background()
			for b.Loop() {
				cl := &caller{id: id, claims: &token.Claims{Subject: id.String()}}
				if _, rf := g.authorize(ctx, cl, a); rf != nil {
					b.Fatal(rf.err)
				}
			}
		})
	}
}
