package reach_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/reach"
	"github.com/bulkhead-dev/bulkhead/internal/reach/reachtest"
)

// fleet builds 1,000 agents over 500 tools: 20 servers of 25 tools, a
// role per server, each agent holding one role, 50 agents also named by
// a policy of their own; a guardrail, an office-hours forbid, and two
// manifests of two triggers each.
func fleet(b *testing.B) (*policy.Frozen, []elevation.Manifest) {
	var cat strings.Builder
	cat.WriteString("servers:\n")
	policies := map[string]string{}
	for s := range 20 {
		fmt.Fprintf(&cat, "  - name: srv%d\n    sensitivity: %s\n    tools:\n", s, []string{"low", "medium", "high"}[s%3])
		for t := range 25 {
			effects := "read"
			if t%5 == 0 {
				effects = "write"
			}
			fmt.Fprintf(&cat, "      - { name: tool%d, effects: %s }\n", t, effects)
		}
		policies[fmt.Sprintf("role%d.cedar", s)] = fmt.Sprintf(
			`permit (principal in Role::"role%d", action == Action::"call_tool", resource in ToolServer::"srv%d");`, s, s)
	}
	policies["guardrail.cedar"] = `forbid (principal, action, resource)
when { context.tainted && resource has effects && resource.effects == "write" };
forbid (principal, action, resource == Tool::"srv1/tool0")
when { context.time.toTime() < duration("9h") };`
	var agents []policy.AgentRoles
	for i := range 1000 {
		id := fmt.Sprintf("spiffe://bulkhead.local/agent/a%d", i)
		agents = append(agents, policy.AgentRoles{Name: fmt.Sprintf("a%d", i), SPIFFEID: id, Roles: []string{fmt.Sprintf("role%d", i%20)}})
		if i%20 == 7 {
			policies[fmt.Sprintf("own%d.cedar", i)] = fmt.Sprintf(
				`permit (principal == Agent::%q, action == Action::"call_tool", resource == Tool::"srv%d/tool3");`, id, (i+1)%20)
		}
	}
	var manifests []string
	for m := range 2 {
		manifests = append(manifests, fmt.Sprintf(`name: m%d
approved_actions: [{ actions: [call_tool], resources: [srv%d] }]
escalation_triggers:
  - { name: t1, grants: [{ actions: [call_tool], resources: [srv%d/tool1] }], approval: human }
  - { name: t2, grants: [{ actions: [call_tool], resources: [srv%d] }], approval: policy }
`, m, m, m+5, m+10))
	}
	return reachtest.World{Policies: policies, Catalog: cat.String(), Agents: agents, Manifests: manifests}.Freeze(b)
}

// BenchmarkFleetBlastRadius computes the whole fleet's blast radius, with
// agents the PDP must decide alike sharing one analysis (what `bulkhead
// blast-radius` does) and, beside it, every agent analysed on its own.
func BenchmarkFleetBlastRadius(b *testing.B) {
	f, manifests := fleet(b)
	for _, unshared := range []bool{false, true} {
		name := "shared"
		if unshared {
			name = "unshared"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				fl, err := reach.All(f, reach.Options{At: office, Manifests: manifests, Unshared: unshared})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(fl.Analyses), "analyses")
				b.ReportMetric(fl.Score, "score")
			}
		})
	}
}
