package pdpbench

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/bulkhead-dev/bulkhead/internal/clock"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// The scenario: N agents, each with one policy of its own (the per-agent
// grants that make a policy set grow with the fleet), granting call_tool on
// one server's tools below a risk ceiling; plus two guardrail forbids that
// apply to everyone. The catalog is fixed: 50 servers of 10 tools, one in
// ten of high sensitivity.

const (
	servers        = 50
	toolsPerServer = 10
	maxRisk        = 80
)

var td = spiffeid.RequireTrustDomainFromString("bulkhead.local")

//go:embed testdata/bench.rego
var regoPolicy string

func agentID(i int) string { return fmt.Sprintf("spiffe://bulkhead.local/agent/agent-%06d", i) }
func server(i int) string  { return fmt.Sprintf("srv-%03d", i) }
func tool(s, t int) string { return fmt.Sprintf("%s/tool-%d", server(s), t) }
func grantOf(agent int) int {
	return (agent * 7) % servers
}

const guardrails = `
@id("forbid-high-sensitivity")
forbid (principal, action, resource) when { resource.sensitivity == "high" };

@id("forbid-etc")
forbid (principal, action == Action::"call_tool", resource)
when { context.input has path && context.input.path like "/etc/*" };
`

// policyText is the Cedar policy set of n per-agent policies.
func policyText(n int) string {
	var b strings.Builder
	b.Grow(n*200 + len(guardrails))
	b.WriteString(guardrails)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "@id(\"agent-%06d\")\npermit (principal == Agent::%q, action == Action::\"call_tool\", resource in ToolServer::%q)\nwhen { context.risk < %d };\n",
			i, agentID(i), server(grantOf(i)), maxRisk)
	}
	return b.String()
}

func catalog() policy.Catalog {
	var c policy.Catalog
	f := false
	for s := 0; s < servers; s++ {
		srv := policy.Server{Name: server(s), Sensitivity: policy.SensitivityLow, UntrustedOutput: &f}
		for t := 0; t < toolsPerServer; t++ {
			e := policy.ToolEntry{Name: fmt.Sprintf("tool-%d", t)}
			if t == toolsPerServer-1 {
				e.Sensitivity = policy.SensitivityHigh
			}
			srv.Tools = append(srv.Tools, e)
		}
		c.Servers = append(c.Servers, srv)
	}
	if err := c.Normalize(); err != nil {
		panic(err)
	}
	return c
}

// request is one sampled tool call, in each engine's form.
type request struct {
	agent, server, tool int
	path                string
	risk                int64

	bulkhead policy.Request
	cedar    cedar.Request
	opa      ast.Value
}

// sample draws requests: mostly an agent calling a tool of its own server
// (allowed unless the tool is sensitive, the path is under /etc or the risk
// is high), sometimes another server's (denied).
func sample(n, count int, seed uint64) []request {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	out := make([]request, count)
	for i := range out {
		q := request{agent: r.IntN(n), tool: r.IntN(toolsPerServer), path: "/srv/data/report.csv", risk: int64(r.IntN(100))}
		q.server = grantOf(q.agent)
		if r.IntN(10) < 3 {
			q.server = r.IntN(servers)
		}
		if r.IntN(10) == 0 {
			q.path = "/etc/shadow"
		}
		input := cedar.NewRecord(cedar.RecordMap{"path": cedar.String(q.path)})
		q.bulkhead = policy.Request{Principal: cedar.NewEntityUID(policy.TypeAgent, cedar.String(agentID(q.agent))),
			Action: policy.Action(policy.ActionCallTool), Resource: cedar.NewEntityUID(policy.TypeTool, cedar.String(tool(q.server, q.tool))),
			Context: policy.Context{Risk: q.risk, Input: input}}
		q.cedar = cedar.Request{Principal: q.bulkhead.Principal, Action: q.bulkhead.Action, Resource: q.bulkhead.Resource,
			Context: cedar.NewRecord(cedar.RecordMap{"risk": cedar.Long(q.risk), "tainted": cedar.False, "grants": cedar.NewSet(), "input": input,
				"time": cedar.NewDatetimeFromMillis(1_800_000_000_000)})}
		v, err := ast.InterfaceToValue(map[string]any{"subject": agentID(q.agent), "action": "call_tool", "resource": tool(q.server, q.tool),
			"context": map[string]any{"risk": q.risk, "tainted": false, "input": map[string]any{"path": q.path}}})
		if err != nil {
			panic(err)
		}
		q.opa = v
		out[i] = q
	}
	return out
}

// expected is the decision the scenario's policies make, worked out by
// hand: the three engines must all agree with it.
func (q request) expected() bool {
	return q.server == grantOf(q.agent) && q.tool != toolsPerServer-1 && !strings.HasPrefix(q.path, "/etc/") && q.risk < maxRisk
}

// engines holds the three implementations for one policy set size.
type engines struct {
	n      int
	pdp    policy.Decider
	cedar  *cedar.PolicySet
	ents   cedar.EntityMap
	opa    rego.PreparedEvalQuery
	source string
}

func build(tb testing.TB, n int) *engines {
	tb.Helper()
	e := &engines{n: n, source: policyText(n)}
	cat := catalog()
	agents := make([]policy.AgentRoles, n)
	for i := range agents {
		agents[i] = policy.AgentRoles{Name: fmt.Sprintf("agent-%06d", i), SPIFFEID: agentID(i)}
	}

	// Bulkhead: the real PDP over a store that holds this world.
	st := &memStore{files: []policy.File{{Name: "bench.cedar", Content: e.source}}, agents: agents, catalog: cat}
	// Nothing polls this store, so its state never goes stale.
	pdp, err := policy.NewPDP(context.Background(), policy.PDPConfig{Store: st, TrustDomain: td, Clock: clock.Real{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), MaxStale: 24 * time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	e.pdp = pdp

	// Raw cedar-go: the same policies, and the same entities in a map.
	ps, err := cedar.NewPolicySetFromBytes("bench.cedar", []byte(e.source))
	if err != nil {
		tb.Fatal(err)
	}
	e.cedar = ps
	e.ents = cedar.EntityMap{}
	for i := 0; i < n; i++ {
		uid := cedar.NewEntityUID(policy.TypeAgent, cedar.String(agentID(i)))
		e.ents[uid] = cedar.Entity{UID: uid, Attributes: cedar.NewRecord(cedar.RecordMap{"name": cedar.String(fmt.Sprintf("agent-%06d", i))})}
	}
	for _, s := range cat.Servers {
		srv := policy.ToolServer(s.Name)
		e.ents[srv] = cedar.Entity{UID: srv, Attributes: cedar.NewRecord(cedar.RecordMap{"sensitivity": cedar.String(s.Sensitivity)})}
		for _, t := range s.Tools {
			uid := policy.Tool(s.Name, t.Name)
			e.ents[uid] = cedar.Entity{UID: uid, Parents: cedar.NewEntityUIDSet(srv),
				Attributes: cedar.NewRecord(cedar.RecordMap{"sensitivity": cedar.String(t.Sensitivity), "server": srv})}
		}
	}

	// OPA: the Rego policy, with grants and catalog as data.
	grants := make(map[string]any, n)
	for i := 0; i < n; i++ {
		grants[agentID(i)] = []any{map[string]any{"action": "call_tool", "server": server(grantOf(i)), "max_risk": maxRisk}}
	}
	tools := map[string]any{}
	for _, s := range cat.Servers {
		for _, t := range s.Tools {
			tools[s.Name+"/"+t.Name] = map[string]any{"server": s.Name, "sensitivity": t.Sensitivity}
		}
	}
	store := inmem.NewFromObjectWithOpts(map[string]any{"grants": grants, "tools": tools}, inmem.OptReturnASTValuesOnRead(true))
	pq, err := rego.New(rego.Query("data.bulkhead.allow"), rego.Module("bench.rego", regoPolicy), rego.Store(store),
		rego.StoreReadAST(true)).PrepareForEval(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	e.opa = pq
	return e
}

func (e *engines) bulkhead(q *request) bool {
	d, err := e.pdp.Decide(context.Background(), q.bulkhead)
	if err != nil {
		panic(err)
	}
	return d.Allowed
}

func (e *engines) raw(q *request) bool {
	d, _ := cedar.Authorize(e.cedar, e.ents, q.cedar)
	return d == cedar.Allow
}

func (e *engines) rego(q *request) bool {
	rs, err := e.opa.Eval(context.Background(), rego.EvalParsedInput(q.opa))
	if err != nil {
		panic(err)
	}
	return rs.Allowed()
}

// memStore is a PDP store holding one version in memory.
type memStore struct {
	files   []policy.File
	agents  []policy.AgentRoles
	catalog policy.Catalog
}

func (m *memStore) PolicyState(context.Context) (policy.State, error) {
	return policy.State{Live: 1, Generation: 1}, nil
}

func (m *memStore) PolicyVersion(_ context.Context, n int64) (policy.Version, error) {
	if n != 1 {
		return policy.Version{}, fault.NotFound
	}
	return policy.Version{Number: 1, Files: m.files}, nil
}

func (m *memStore) PolicyAgents(context.Context) ([]policy.AgentRoles, error) { return m.agents, nil }
func (m *memStore) ToolCatalog(context.Context) (policy.Catalog, error)       { return m.catalog, nil }
func (m *memStore) RecordShadow(context.Context, []policy.ShadowDiff, []policy.ShadowStats) error {
	return nil
}

func (m *memStore) ShadowDiffs(context.Context, int64, int) ([]policy.ShadowDiff, error) {
	return nil, nil
}

func (m *memStore) ShadowSummary(context.Context, int64) (policy.ShadowSummary, error) {
	return policy.ShadowSummary{}, nil
}

// The three engines must decide every sampled request alike, and as the
// scenario says; otherwise the timings compare different things.
func TestEnginesAgree(t *testing.T) {
	for _, n := range []int{10, 100, 1000} {
		e := build(t, n)
		allowed := 0
		for _, q := range sample(n, 2000, 1) {
			want := q.expected()
			if b, c, o := e.bulkhead(&q), e.raw(&q), e.rego(&q); b != want || c != want || o != want {
				t.Fatalf("n=%d agent %d tool %s path %s risk %d: bulkhead %v, cedar-go %v, OPA %v, want %v",
					n, q.agent, tool(q.server, q.tool), q.path, q.risk, b, c, o, want)
			}
			if want {
				allowed++
			}
		}
		if allowed < 200 || allowed > 1800 {
			t.Fatalf("n=%d: %d of 2000 allowed; the sample should mix both decisions", n, allowed)
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 1000, 100_000} {
		e := build(b, n)
		reqs := sample(n, 1024, 2)
		for _, c := range []struct {
			name string
			fn   func(*request) bool
		}{{"bulkhead", e.bulkhead}, {"cedar-go", e.raw}, {"opa", e.rego}} {
			if c.name == "cedar-go" && n > 10_000 {
				continue // seconds per iteration batch; the comparison test covers it
			}
			b.Run(fmt.Sprintf("%s/policies=%d", c.name, n), func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					c.fn(&reqs[i%len(reqs)])
				}
			})
		}
	}
}
