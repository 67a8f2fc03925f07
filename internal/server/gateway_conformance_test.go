package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/gateway/gatewaytest"
)

// The official MCP conformance suite (@modelcontextprotocol/conformance
// 0.2.0-alpha.12, server scenarios) runs against conformance-server.mjs
// directly, then through `bulkhead connect` and the gateway as a reader
// agent the policy lets use everything on that server. Every check that
// passes directly must pass through the gateway, unless
// conformanceExceptions says why not.

// conformanceServers are the upstreams, by gateway name: the same server
// with SEP-1699 resumability (2025-11-25 POST streams open with a priming
// event and carry event ids; a cut stream resumes with Last-Event-ID) and
// without it, as many servers run.
var conformanceServers = map[string][]string{
	"conformance":          nil,
	"conformance-noresume": {"--no-resume"},
}

// conformanceRuns are the suite runs compared. "--suite all" takes every
// scenario of the revision, pending and draft ones too; --spec-version runs
// the scenarios both revisions share at each revision's own wire.
var conformanceRuns = []struct {
	name, server string
	args         []string
}{
	{"2025-11-25", "conformance", []string{"--suite", "all", "--spec-version", "2025-11-25"}},
	{"2025-11-25-noresume", "conformance-noresume", []string{"--suite", "all", "--spec-version", "2025-11-25"}},
	{"2026-07-28", "conformance", []string{"--suite", "all", "--spec-version", "2026-07-28"}},
}

// conformanceExceptions are checks that pass against the server directly
// and not through the gateway, each with its kind and reason: "by design"
// (the gateway means to differ) or "gap" (a gateway defect, with its fix;
// when fixed, the entry explains nothing any more and this test asks for
// its removal). run is a run's name; scenario "" is every scenario of the
// run, check "" every check of the scenario.
//
// By design there is none: the suite's DNS-rebinding probes are refused by
// `bulkhead connect` itself (it answers only to loopback Host names, 4xx
// otherwise), and 2025-11-25 session ids pass through, bound to the agent.
var conformanceExceptions = []struct {
	run, scenario, check, kind, reason string
}{}

// conformanceRunTimeout bounds one run of the suite; each scenario in it
// is also bounded by the suite's own --timeout.
const conformanceRunTimeout = 2 * time.Minute

func TestConformanceThroughTheGateway(t *testing.T) {
	gatewaytest.ConformanceHarness(t)
	servers := map[string]*gatewaytest.ConformanceServer{}
	var yaml strings.Builder
	for name, args := range conformanceServers {
		servers[name] = gatewaytest.StartConformanceServer(t, args...)
		fmt.Fprintf(&yaml, "  - name: %s\n    mcp: { url: %s }\n    callers: [\"spiffe://bulkhead.local/agent/*\"]\n", name, servers[name].URL)
	}
	e := startGateway(t, yaml.String())
	ctx := context.Background()
	cat, err := e.Operator.Tools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Every tool the scenarios call, by the server's own names, at low
	// sensitivity: nothing here is the guardrails' business.
	for name, s := range servers {
		entry := api.ToolServer{Name: name, Sensitivity: "low", Groups: []string{"conformance"}}
		for _, tool := range s.Tools {
			entry.Tools = append(entry.Tools, api.ToolEntry{Name: tool})
		}
		cat.Servers = append(cat.Servers, entry)
	}
	if _, err := e.Operator.ApplyTools(ctx, cat); err != nil {
		t.Fatal(err)
	}
	live, err := e.Operator.PolicyVersion(ctx, "1")
	if err != nil {
		t.Fatal(err)
	}
	// Readers may do anything on these servers; the example guardrails
	// stay in force.
	files := append(live.Files, api.PolicyFile{Name: "conformance.cedar", Content: `@id("conformance-all")
permit (principal in Role::"reader", action, resource in ToolGroup::"conformance");`})
	if _, err := e.Operator.ApplyPolicy(ctx, api.PolicyApplyRequest{Files: files}); err != nil {
		t.Fatal(err)
	}
	dir, _ := e.Agent(t, "conformer", "reader")
	sidecar := e.Sidecar(t, dir)

	for _, r := range conformanceRuns {
		t.Run(r.name, func(t *testing.T) {
			direct := gatewaytest.RunConformance(t, servers[r.server].URL, conformanceRunTimeout, r.args...)
			gw := gatewaytest.RunConformance(t, sidecar+"/mcp/"+r.server, conformanceRunTimeout, r.args...)
			t.Logf("%d checks in %d scenarios; direct %v, through the gateway %v; scenario, direct, through the gateway:\n%s",
				len(direct.Checks), len(direct.Scenarios), direct.Elapsed.Round(time.Millisecond),
				gw.Elapsed.Round(time.Millisecond), conformanceTable(direct, gw))
			compareConformance(t, r.name, direct, gw)
		})
	}
	// The gateway decided and recorded the calls: it was in the path.
	n := 0
	for _, ev := range events(t, e.Env.Env, "gateway.call_tool") {
		if strings.HasPrefix(ev.Target, `Tool::"conformance`) {
			n++
		}
	}
	if n == 0 {
		t.Error("no conformance tool call was decided and recorded by the gateway")
	}
	t.Logf("the gateway decided and recorded %d conformance tool calls", n)
}

// compareConformance fails t for every check that succeeded directly and
// not through the gateway, unless conformanceExceptions explains it, and
// for every exception of this run that explains nothing.
func compareConformance(t *testing.T, run string, direct, gw *gatewaytest.ConformanceRun) {
	t.Helper()
	got := gw.Keyed()
	used := make([]bool, len(conformanceExceptions))
	var diffs []string
	seen := map[string]int{}
	for _, c := range direct.Checks {
		base := c.Scenario + " " + c.ID
		seen[base]++
		key := c.Key(seen[base])
		g, ok := got[key]
		if c.Status != "SUCCESS" || ok && g.Status == "SUCCESS" {
			continue
		}
		explained := false
		for i, x := range conformanceExceptions {
			if x.run == run && (x.scenario == "" || x.scenario == c.Scenario) && (x.check == "" || x.check == c.ID) {
				if !used[i] {
					t.Logf("%s (%s %s): %s", x.kind, x.scenario, x.check, x.reason)
				}
				used[i], explained = true, true
			}
		}
		if explained {
			continue
		}
		if !ok {
			diffs = append(diffs, fmt.Sprintf("  %s: SUCCESS directly, not recorded through the gateway", key))
			continue
		}
		diffs = append(diffs, fmt.Sprintf("  %s: SUCCESS directly, %s through the gateway: %s\n    details: %s",
			key, g.Status, g.ErrorMessage, g.Details))
	}
	if len(diffs) > 0 {
		t.Errorf("%d conformance check(s) pass directly but not through the gateway:\n%s\nthe suite's output through the gateway:\n%s",
			len(diffs), strings.Join(diffs, "\n"), gw.Output)
	}
	for i, x := range conformanceExceptions {
		if x.run == run && !used[i] {
			t.Errorf("conformanceExceptions: %s %q %q explains no difference in run %s any more: remove it", x.kind, x.scenario, x.check, run)
		}
	}
}

// conformanceTable renders each scenario's outcome in both runs: pass, or
// FAIL, with the number of checks that succeeded.
func conformanceTable(direct, gw *gatewaytest.ConformanceRun) string {
	verdict := func(r *gatewaytest.ConformanceRun, s string) string {
		n := 0
		for _, c := range r.Checks {
			if c.Scenario == s && c.Status == "SUCCESS" {
				n++
			}
		}
		if r.ScenarioPassed(s) {
			return fmt.Sprintf("pass (%d)", n)
		}
		return fmt.Sprintf("FAIL (%d ok)", n)
	}
	var b strings.Builder
	for _, s := range direct.Scenarios {
		fmt.Fprintf(&b, "  %-48s %-14s %s\n", s, verdict(direct, s), verdict(gw, s))
	}
	return b.String()
}
