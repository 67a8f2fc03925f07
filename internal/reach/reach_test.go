package reach_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/attestation"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/reach"
	"github.com/bulkhead-dev/bulkhead/internal/reach/reachtest"
)

const catalogYAML = `servers:
  - name: docs
    sensitivity: low
    tools:
      - { name: search, effects: read }
      - { name: delete_page, sensitivity: high }
  - name: fs
    tools:
      - { name: read_file, effects: read }
      - { name: write_file }
  - name: github
    hosts:
      - { name: "api.github.com:443" }
`

// basePolicies are a fleet's policies whose true reach is known by
// construction: readers search the docs, read files under /srv only by
// argument, and write files during office hours only (a forbid an
// attacker waits out); admins do anything on docs; a tainted task never
// writes; eve alone may connect to GitHub.
var basePolicies = map[string]string{
	"reader.cedar": `@id("reader-docs")
permit (principal in Role::"reader", action == Action::"call_tool", resource in ToolServer::"docs")
when { resource.effects == "read" };
@id("reader-read-srv")
permit (principal in Role::"reader", action == Action::"call_tool", resource == Tool::"fs/read_file")
when { context.input has path && context.input.path like "/srv/*" };
@id("reader-write")
permit (principal in Role::"reader", action == Action::"call_tool", resource == Tool::"fs/write_file");
@id("office-hours")
forbid (principal, action, resource == Tool::"fs/write_file")
when { context.time.toTime() < duration("9h") || context.time.toTime() >= duration("17h") };
@id("no-etc")
forbid (principal, action == Action::"call_tool", resource == Tool::"fs/write_file")
when { context.input has path && context.input.path like "/etc/*" };`,
	"admin.cedar": `@id("admin-docs")
permit (principal in Role::"admin", action, resource in ToolServer::"docs");`,
	"guardrail.cedar": `@id("no-tainted-writes")
forbid (principal, action, resource)
when { context.tainted && resource has effects && resource.effects == "write" };`,
	"eve.cedar": `@id("eve-github")
permit (principal == Agent::"spiffe://bulkhead.local/agent/eve", action == Action::"connect", resource in ToolServer::"github");`,
}

const manifestYAML = `name: maintenance
agents: ["spiffe://bulkhead.local/agent/alpha"]
approved_actions:
  - { actions: [call_tool], resources: [docs] }
escalation_triggers:
  - name: purge
    grants: [{ actions: [call_tool], resources: [docs/delete_page] }]
    approval: two_humans
`

type world struct {
	frozen    *policy.Frozen
	manifests []elevation.Manifest
}

func build(t testing.TB, extra map[string]string) world {
	t.Helper()
	policies := map[string]string{}
	for name, text := range basePolicies {
		policies[name] = text
	}
	for name, text := range extra {
		policies[name] = text
	}
	f, ms := reachtest.World{Policies: policies, Catalog: catalogYAML, Manifests: []string{manifestYAML}, Agents: []policy.AgentRoles{
		{Name: "alpha", SPIFFEID: "spiffe://bulkhead.local/agent/alpha", Roles: []string{"reader"}},
		{Name: "beta", SPIFFEID: "spiffe://bulkhead.local/agent/beta", Roles: []string{"reader"}},
		{Name: "gamma", SPIFFEID: "spiffe://bulkhead.local/agent/gamma", Roles: []string{"admin"}},
		{Name: "delta", SPIFFEID: "spiffe://bulkhead.local/agent/delta"},
		{Name: "eve", SPIFFEID: "spiffe://bulkhead.local/agent/eve", Roles: []string{"reader"}},
	}}.Freeze(t)
	return world{frozen: f, manifests: ms}
}

func agent(name string) cedar.EntityUID {
	return cedar.NewEntityUID(policy.TypeAgent, cedar.String("spiffe://bulkhead.local/agent/"+name))
}

// office is 10:00 UTC; night 22:00 UTC, outside office hours.
var (
	office = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	night  = time.Date(2026, 12, 7, 22, 0, 0, 0, time.UTC)
)

// summary renders a report as "action resource via[,via] weight" lines.
func summary(r reach.Report) []string {
	var out []string
	for _, it := range r.Items {
		var vias []string
		for _, w := range it.Ways {
			vias = append(vias, w.Via)
		}
		out = append(out, fmt.Sprintf("%s %s %s %g", it.Action, it.Resource, strings.Join(vias, ","), it.Weight))
	}
	return out
}

func TestBlastRadiusOfAKnownFleet(t *testing.T) {
	w := build(t, nil)
	cases := []struct {
		agent string
		at    time.Time
		want  []string
		score float64
	}{
		{"alpha", office, []string{
			`call_tool Tool::"docs/delete_page" elevation 4.5`, // high write (18) behind two humans (×0.25)
			`call_tool Tool::"docs/search" baseline 1`,
			`call_tool Tool::"fs/read_file" arguments 3`,
			`call_tool Tool::"fs/write_file" baseline 6`,
		}, 14.5},
		// At night the office-hours forbid denies, but only until nine.
		{"alpha", night, []string{
			`call_tool Tool::"docs/delete_page" elevation 4.5`,
			`call_tool Tool::"docs/search" baseline 1`,
			`call_tool Tool::"fs/read_file" arguments 3`,
			`call_tool Tool::"fs/write_file" time 6`,
		}, 14.5},
		// beta holds the same role but may not open maintenance tasks.
		{"beta", office, []string{
			`call_tool Tool::"docs/search" baseline 1`,
			`call_tool Tool::"fs/read_file" arguments 3`,
			`call_tool Tool::"fs/write_file" baseline 6`,
		}, 10},
		{"gamma", office, []string{
			`call_tool Tool::"docs/delete_page" baseline 18`,
			`call_tool Tool::"docs/search" baseline 1`,
		}, 19},
		{"delta", office, nil, 0},
		{"eve", office, []string{
			`connect Host::"github/api.github.com:443" baseline 6`,
			`call_tool Tool::"docs/search" baseline 1`,
			`call_tool Tool::"fs/read_file" arguments 3`,
			`call_tool Tool::"fs/write_file" baseline 6`,
		}, 16},
	}
	for _, c := range cases {
		t.Run(c.agent+"@"+c.at.Format("15h"), func(t *testing.T) {
			r, err := reach.Agent(w.frozen, agent(c.agent), reach.Options{At: c.at, Manifests: w.manifests})
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(r); !slices.Equal(got, c.want) || r.Score != c.score {
				t.Fatalf("reach:\n%s\nscore %g\nwant:\n%s\nscore %g", strings.Join(got, "\n"), r.Score, strings.Join(c.want, "\n"), c.score)
			}
			if len(r.Findings) != 0 {
				t.Fatalf("findings: %v", r.Findings)
			}
		})
	}
}

// The conditions of each reach are reported: the contexts that deny it,
// the forbids on arguments or time that did not fire, the elevation's
// approval, the permit's condition on arguments.
func TestBlastRadiusNamesItsConditions(t *testing.T) {
	w := build(t, nil)
	r, err := reach.Agent(w.frozen, agent("alpha"), reach.Options{At: office, Manifests: w.manifests})
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]reach.Item{}
	for _, it := range r.Items {
		byKey[it.Key()] = it
	}
	write := byKey[`call_tool Tool::"fs/write_file"`]
	if !slices.Contains(write.Unless, "tainted") || !containsPrefix(write.Unless, "forbid no-etc: when") || !containsPrefix(write.Unless, "forbid office-hours: when") {
		t.Errorf("write_file unless %q", write.Unless)
	}
	if w := write.Ways[0]; !slices.Equal(w.Policies, []string{"reader-write"}) {
		t.Errorf("write_file allowed by %v", w.Policies)
	}
	purge := byKey[`call_tool Tool::"docs/delete_page"`].Ways[0]
	if purge.Manifest != "maintenance" || purge.Trigger != "purge" || purge.Approval != "two_humans" {
		t.Errorf("delete_page way %+v", purge)
	}

	args := byKey[`call_tool Tool::"fs/read_file"`].Ways[0]
	if !strings.Contains(args.Context, `context.input.path like "/srv/*"`) {
		t.Errorf("read_file condition %q", args.Context)
	}
}

func containsPrefix(list []string, prefix string) bool {
	return slices.ContainsFunc(list, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

// Agents with the same roles that no policy names are analysed once.
func TestFleetSharesAnalysesBetweenAgentsAlike(t *testing.T) {
	w := build(t, nil)
	f, err := reach.All(w.frozen, reach.Options{At: office, Manifests: w.manifests})
	if err != nil {
		t.Fatal(err)
	}
	// alpha and beta share one; gamma, delta and eve (named by a policy)
	// one each.
	if f.Analyses != 4 || len(f.Agents) != 5 || f.Score != 14.5+10+19+0+16 {
		t.Fatalf("classes %d, agents %d, score %g", f.Analyses, len(f.Agents), f.Score)
	}
}

// Sharing an analysis between agents alike changes no answer.
func TestSharedAnalysesAnswerAsUnshared(t *testing.T) {
	w := build(t, nil)
	opts := reach.Options{At: office, Manifests: w.manifests}
	shared, err := reach.All(w.frozen, opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Unshared = true
	alone, err := reach.All(w.frozen, opts)
	if err != nil {
		t.Fatal(err)
	}
	if d := reach.Compare(alone, shared); len(d.Changes) != 0 || alone.Analyses != 5 {
		t.Fatalf("shared and unshared analyses differ: %+v (%d analyses)", d.Changes, alone.Analyses)
	}
}

// A sub-agent is bounded by its parent; a policy that lets sub-agents
// (and only them) reach further is a finding.
func TestSubAgentBeyondItsParentIsAFinding(t *testing.T) {
	w := build(t, map[string]string{"subs.cedar": `@id("subs-purge")
permit (principal, action == Action::"call_tool", resource == Tool::"docs/delete_page") when { principal has parent };`})
	r, err := reach.Agent(w.frozen, agent("beta"), reach.Options{At: office, Manifests: w.manifests})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Findings) != 1 || !strings.Contains(r.Findings[0], "subs-purge") || !slices.Contains(summary(r), `call_tool Tool::"docs/delete_page" delegation 18`) {
		t.Fatalf("findings %v, reach %v", r.Findings, summary(r))
	}
}

// A candidate that lets readers delete pages adds it to every reader:
// the diff names each agent, and alpha's delete_page, which needed two
// people before, now counts its difference.
func TestDiffOfACandidatePolicy(t *testing.T) {
	before, err := reach.All(build(t, nil).frozen, reach.Options{At: office, Manifests: build(t, nil).manifests})
	if err != nil {
		t.Fatal(err)
	}
	cw := build(t, map[string]string{"purge.cedar": `@id("reader-purge")
permit (principal in Role::"reader", action == Action::"call_tool", resource == Tool::"docs/delete_page");`})
	after, err := reach.All(cw.frozen, reach.Options{At: office, Manifests: cw.manifests})
	if err != nil {
		t.Fatal(err)
	}
	d := reach.Compare(before, after)
	var got []string
	for _, c := range d.Changes {
		for _, it := range c.Added {
			got = append(got, fmt.Sprintf("%s +%s %g", strings.TrimPrefix(c.Agent, "spiffe://bulkhead.local/agent/"), it.Key(), it.Weight))
		}
		if len(c.Removed) > 0 {
			t.Errorf("%s lost %v", c.Agent, c.Removed)
		}
	}
	want := []string{`alpha +call_tool Tool::"docs/delete_page" 13.5`, `beta +call_tool Tool::"docs/delete_page" 18`, `eve +call_tool Tool::"docs/delete_page" 18`}
	if !slices.Equal(got, want) || d.Grew() != 49.5 {
		t.Fatalf("diff %v (grew %g), want %v", got, d.Grew(), want)
	}
}

// Differential: every item reported reachable (other than by arguments,
// whose values are a condition) is allowed by the PDP in the context the
// report names; every (agent, action, resource) not reported is denied
// in every context the analysis knows of.
func TestBlastRadiusAgreesWithThePDP(t *testing.T) {
	w := build(t, nil)
	for _, at := range []time.Time{office, night} {
		f, err := reach.All(w.frozen, reach.Options{At: at, Manifests: w.manifests})
		if err != nil {
			t.Fatal(err)
		}
		reported := map[string]bool{}
		for _, r := range f.Agents {
			p := cedar.NewEntityUID(policy.TypeAgent, cedar.String(r.Agent))
			for _, it := range r.Items {
				reported[r.Agent+" "+it.Key()] = true
				res := resourceUID(t, it.Resource)
				for _, way := range it.Ways {
					if way.Via == reach.ViaArguments || way.Via == reach.ViaElevation && strings.Contains(way.Context, ", when ") {
						continue // allowed for some arguments only
					}
					req, when := requestFor(p, it.Action, res, way, at)
					if d, err := w.frozen.Decide(req, when); err != nil || !d.Allowed {
						t.Errorf("%s %s via %s (%s): the PDP says %+v %v", r.Agent, it.Key(), way.Via, way.Context, d, err)
					}
				}
			}
		}
		for _, a := range w.frozen.Agents() {
			for _, res := range w.frozen.Resources() {
				for _, action := range reach.Actions(res.UID.Type) {
					if reported[string(a.ID)+" "+action+" "+res.UID.String()] {
						continue
					}
					for _, ctx := range allContexts(w.manifests) {
						for _, when := range []time.Time{at, at.Add(11 * time.Hour)} {
							req := policy.Request{Principal: a, Action: policy.Action(action), Resource: res.UID, Context: ctx}
							if d, err := w.frozen.Decide(req, when); err != nil || d.Allowed && !elevatedForOthers(ctx, a, w.manifests) {
								t.Errorf("unreported %s %s %s is allowed in %+v at %s: %+v %v", a.ID, action, res.UID, ctx, when, d, err)
							}
						}
					}
				}
			}
		}
	}
}

func resourceUID(t *testing.T, s string) cedar.EntityUID {
	var uid cedar.EntityUID
	if err := uid.UnmarshalCedar([]byte(s)); err != nil {
		t.Fatal(err)
	}
	return uid
}

// requestFor is the request and time a way names.
func requestFor(p cedar.EntityUID, action string, res cedar.EntityUID, way reach.Way, at time.Time) (policy.Request, time.Time) {
	req := policy.Request{Principal: p, Action: policy.Action(action), Resource: res}
	switch way.Via {
	case reach.ViaContext:
		switch way.Context {
		case "tainted":
			req.Context.Tainted = true
		case "risk 50":
			req.Context.Risk = 50
		case "risk 100":
			req.Context.Risk = 100
		case "key in a TPM":
			req.Context.Attestation = attestation.Claims{Protection: attestation.TPM, Method: attestation.MethodEKPinned}
		case "lineage from a TPM":
			req.Context.Attestation = attestation.Claims{Protection: attestation.Software, Method: attestation.MethodLineage, Depth: 1}
		}
	case reach.ViaElevation:
		req.Context = policy.Context{Task: "t", Manifest: way.Manifest, Grants: []string{elevation.GrantName(way.Manifest, way.Trigger)}}
	case reach.ViaTime:
		at, _ = time.Parse(time.RFC3339, strings.Fields(strings.TrimPrefix(way.Context, "at "))[0])
	case reach.ViaDelegation:
		req.Principal = cedar.NewEntityUID(policy.TypeAgent, cedar.String(string(p.ID)+"/sub/blast-radius"))
	}
	return req, at
}

func allContexts(ms []elevation.Manifest) []policy.Context {
	out := []policy.Context{{}, {Tainted: true}, {Risk: 50}, {Risk: 100},
		{Attestation: attestation.Claims{Protection: attestation.TPM, Method: attestation.MethodEKPinned}},
		{Attestation: attestation.Claims{Protection: attestation.Software, Method: attestation.MethodLineage, Depth: 1}}}
	for _, m := range ms {
		for _, tr := range m.EscalationTriggers {
			out = append(out, policy.Context{Task: "t", Manifest: m.Name, Grants: []string{elevation.GrantName(m.Name, tr.Name)}})
		}
	}
	return out
}

// elevatedForOthers says ctx is a grant of a manifest agent a may not open
// tasks of: the PDP would allow it, but no such task can exist for a.
func elevatedForOthers(ctx policy.Context, a cedar.EntityUID, ms []elevation.Manifest) bool {
	for _, m := range ms {
		if ctx.Manifest == m.Name && !m.AllowsAgent(string(a.ID)) {
			return true
		}
	}
	return false
}

// What an agent uses without holding it: the secrets injected into the
// servers it reaches, and their sandboxes' egress; nothing of servers it
// does not reach.
func TestIndirectReach(t *testing.T) {
	w := build(t, nil)
	r, err := reach.Agent(w.frozen, agent("beta"), reach.Options{At: office, Manifests: w.manifests})
	if err != nil {
		t.Fatal(err)
	}
	reach.Indirect(&r, map[string]api.GatewayReport{"gw": {Name: "gw", Servers: []api.GatewayServerReport{
		{Name: "docs", Credentials: []string{"docs-api-key"}},
		{Name: "fs", Egress: []string{"backup.internal:443"}, Credentials: []string{"fs-token"}},
		{Name: "github", Credentials: []string{"github-token"}}, // beta does not reach it
	}}})
	want := []string{"docs-api-key (injected by gateway gw into server docs)", "fs-token (injected by gateway gw into server fs)"}
	if !slices.Equal(r.Secrets, want) || !slices.Equal(r.Egress, []string{"backup.internal:443 (from server fs's sandbox, gateway gw)"}) {
		t.Fatalf("secrets %q, egress %q", r.Secrets, r.Egress)
	}
}

// Removing a guardrail adds no item and no weight, but takes a condition
// away from each item it guarded: the review gate counts that too.
func TestDiffSeesARemovedGuardrail(t *testing.T) {
	before, err := reach.All(build(t, nil).frozen, reach.Options{At: office, Manifests: build(t, nil).manifests})
	if err != nil {
		t.Fatal(err)
	}
	cw := build(t, map[string]string{"guardrail.cedar": "// removed\n"})
	after, err := reach.All(cw.frozen, reach.Options{At: office, Manifests: cw.manifests})
	if err != nil {
		t.Fatal(err)
	}
	d := reach.Compare(before, after)
	if d.Grew() == 0 || !slices.ContainsFunc(d.Changes, func(c reach.Change) bool {
		return slices.ContainsFunc(c.Added, func(it reach.Item) bool { return it.Key() == `call_tool Tool::"fs/write_file"` })
	}) {
		t.Fatalf("removing the taint guardrail went unseen: %+v", d)
	}
}

// A write only TPM-held keys may make is in the reach of an agent, by way
// of the key in a TPM.
func TestAttestationIsAWay(t *testing.T) {
	w := build(t, map[string]string{"tpm.cedar": `@id("tpm-deletes")
permit (principal, action == Action::"call_tool", resource == Tool::"docs/delete_page")
when { context.attestation.protection == "tpm" };`})
	r, err := reach.Agent(w.frozen, agent("beta"), reach.Options{At: office})
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range r.Items {
		if it.Key() == `call_tool Tool::"docs/delete_page"` {
			if len(it.Ways) != 1 || it.Ways[0].Via != reach.ViaContext || it.Ways[0].Context != "key in a TPM" {
				t.Fatalf("delete_page ways %+v", it.Ways)
			}
			return
		}
	}
	t.Fatalf("the TPM-only delete is not in beta's reach: %v", summary(r))
}

// A grant whose permit has a condition no plain request meets is still
// what approving it adds, with the condition: arguments (deletes under
// /drafts only), or a key in a TPM. The console's approval shows it.
func TestConditionalGrantIsAWay(t *testing.T) {
	for _, c := range []struct{ name, when, want string }{
		{"drafts", `context.input has path && context.input.path like "/drafts/*"`, `context.input.path like "/drafts/*"`},
		{"hardware", `context.attestation.protection == "tpm"`, "key in a TPM"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tidy := `name: tidy
agents: ["spiffe://bulkhead.local/agent/alpha"]
approved_actions:
  - { actions: [call_tool], resources: [docs] }
escalation_triggers:
  - name: ` + c.name + `
    grants: [{ actions: [call_tool], resources: [docs/delete_page], when: '` + c.when + `' }]
    approval: human
`
			f, ms := reachtest.World{Policies: basePolicies, Catalog: catalogYAML, Manifests: []string{tidy}, Agents: []policy.AgentRoles{
				{Name: "alpha", SPIFFEID: "spiffe://bulkhead.local/agent/alpha", Roles: []string{"reader"}},
			}}.Freeze(t)
			r, err := reach.Agent(f, agent("alpha"), reach.Options{At: office, Manifests: ms})
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range r.Items {
				if it.Key() != `call_tool Tool::"docs/delete_page"` {
					continue
				}
				if len(it.Ways) != 1 || it.Ways[0].Via != reach.ViaElevation || it.Ways[0].Trigger != c.name ||
					!strings.Contains(it.Ways[0].Context, c.want) {
					t.Fatalf("delete_page ways %+v", it.Ways)
				}
				return
			}
			t.Fatalf("the conditional grant's delete_page is not in alpha's reach: %v", summary(r))
		})
	}
}
