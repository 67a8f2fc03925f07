package assess_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/assess"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/identity"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/reach/reachtest"
)

var now = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

// world is a deployment built by construction: its true tiers are known.
type world struct {
	agents    []identity.Agent
	events    []audit.Event
	policies  map[string]string
	catalog   string
	manifests []string
	standing  int64
	tokenTTL  time.Duration
}

func (w world) ListAgents(context.Context) ([]identity.Agent, error) { return w.agents, nil }

func (w world) Events(_ context.Context, q audit.Query) ([]audit.Row, error) {
	var out []audit.Row
	for i, ev := range w.events {
		if len(q.Actions) > 0 && !slices.Contains(q.Actions, ev.Action) || q.Decision != "" && ev.Decision != q.Decision {
			continue
		}
		b, err := ev.Encode()
		if err != nil {
			return nil, err
		}
		out = append(out, audit.Row{Seq: int64(i), Action: ev.Action, Body: b})
	}
	return out, nil
}

func (w world) Standing(context.Context) (elevation.Standing, error) {
	return elevation.Standing{Standing: w.standing}, nil
}

type frozen struct{ f *policy.Frozen }

func (f frozen) Freeze(*policy.Set, ...policy.ManagedSet) (*policy.Frozen, error) { return f.f, nil }

type manifests []elevation.Manifest

func (m manifests) Manifests(context.Context) ([]elevation.StoredManifest, error) {
	var out []elevation.StoredManifest
	for _, x := range m {
		out = append(out, elevation.StoredManifest{Manifest: x})
	}
	return out, nil
}

func (w world) assess(t *testing.T) api.Assessment {
	t.Helper()
	f, ms := w.frozen(t)
	a, err := assess.Assess(context.Background(), assess.Deps{Agents: w, Events: w, PDP: frozen{f}, Manifests: ms, Grants: w, TokenTTL: w.tokenTTL}, now)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// frozen builds the world's PDP and manifests.
func (w world) frozen(t *testing.T) (*policy.Frozen, manifests) {
	t.Helper()
	var roles []policy.AgentRoles
	for _, a := range w.agents {
		roles = append(roles, policy.AgentRoles{Name: a.Name, SPIFFEID: a.SPIFFEID, Roles: []string{strings.TrimSuffix(a.Name, "-admin")}})
	}
	f, ms := reachtest.World{Policies: w.policies, Catalog: w.catalog, Agents: roles, Manifests: w.manifests}.Freeze(t)
	return f, manifests(ms)
}

const catalog = `servers:
  - name: docs
    sensitivity: low
    tools:
      - { name: search, effects: read }
      - { name: delete_page, sensitivity: high }
  - name: notes
    tools: [{ name: note }]
`

func agent(name string, ttl time.Duration) identity.Agent {
	return identity.Agent{Name: name, SPIFFEID: "spiffe://bulkhead.local/agent/" + name, Status: identity.StatusActive, SVIDTTL: ttl}
}

func report(t *testing.T, r api.GatewayReport) audit.Event {
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return audit.Event{Time: now.Add(-time.Hour), Actor: audit.Actor{Kind: audit.ActorWorkload, ID: "spiffe://bulkhead.local/bulkhead/gateway/" + r.Name}, Action: "gateway.start",
		Decision: audit.Allow, Detail: map[string]string{"config": string(b)}}
}

func event(action, target string, at time.Time, actor audit.Actor) audit.Event {
	return audit.Event{Time: at, Actor: actor, Action: action, Target: target, Decision: audit.Allow}
}

var alphaActor = audit.Actor{Kind: audit.ActorAgent, ID: "spiffe://bulkhead.local/agent/reader"}

// enterprise is a deployment at the Enterprise midpoint: one-hour SVIDs
// renewed, five-minute tokens, a reader role, guardrails on taint and
// sensitivity, delete behind a two-person trigger with bounded uses, a
// sandboxed stdio server.
func enterprise(t *testing.T) world {
	return world{
		agents: []identity.Agent{agent("reader", time.Hour), agent("ops-admin", time.Hour)},
		events: []audit.Event{
			event("svid.issue", "spiffe://bulkhead.local/agent/reader", now.Add(-3*time.Hour), audit.Actor{Kind: audit.ActorAnonymous}),
			event("svid.renew", "spiffe://bulkhead.local/agent/reader", now.Add(-150*time.Minute), alphaActor),
			event("svid.issue", "spiffe://bulkhead.local/agent/ops-admin", now.Add(-10*time.Minute), audit.Actor{Kind: audit.ActorAnonymous}),
			report(t, api.GatewayReport{Name: "gw1", Servers: []api.GatewayServerReport{
				{Name: "docs", Transport: "mcp-http", Callers: []string{"spiffe://bulkhead.local/agent/*"}},
				{Name: "notes", Transport: "mcp-stdio", Callers: []string{"spiffe://bulkhead.local/agent/reader"}, Sandbox: "strict"}}}),
			event("gateway.call_tool", `Tool::"docs/search"`, now.Add(-time.Minute), alphaActor),
		},
		policies: map[string]string{
			"roles.cedar": `@id("reader-docs")
permit (principal in Role::"reader", action == Action::"call_tool", resource in ToolServer::"docs") when { resource.effects == "read" };
@id("ops-notes")
permit (principal in Role::"ops", action == Action::"call_tool", resource in ToolServer::"notes");`,
			"guardrails.cedar": `@id("no-tainted-writes")
forbid (principal, action, resource) when { context.tainted && resource has effects && resource.effects == "write" };`,
		},
		catalog: catalog,
		manifests: []string{`name: cleanup
approved_actions: [{ actions: [call_tool], resources: [docs] }]
escalation_triggers:
  - { name: purge, grants: [{ actions: [call_tool], resources: [docs/delete_page] }], approval: two_humans, max_uses: 1 }
`},
		tokenTTL: 5 * time.Minute,
	}
}

func tiers(a api.Assessment) map[string]string {
	out := map[string]string{}
	for _, s := range a.Surfaces {
		out[s.Surface] = s.Tier
	}
	return out
}

// blockers lists the unmet criteria's blockers of a surface and tier.
func blockers(a api.Assessment, surface, tier string) []string {
	var out []string
	for _, s := range a.Surfaces {
		for _, c := range s.Criteria {
			if s.Surface == surface && c.Tier == tier && !c.Met {
				out = append(out, c.Blockers...)
			}
		}
	}
	return out
}

func TestAnEnterpriseDeploymentIsAssessedEnterprise(t *testing.T) {
	a := enterprise(t).assess(t)
	want := map[string]string{assess.Identity: "enterprise", assess.ServiceAuth: "enterprise", assess.Permission: "advanced",
		assess.Privilege: "advanced", assess.Isolation: "enterprise"}
	if got := tiers(a); !mapsEqual(got, want) {
		t.Fatalf("tiers %v, want %v", got, want)
	}
	// Stage 2 is complete, so it works through stage 3, blocked by the
	// hardware criteria only.
	if a.Stage != 3 || len(a.Next) != 3 || len(a.Lint) != 0 {
		t.Fatalf("stage %d, next %+v, lint %v", a.Stage, a.Next, a.Lint)
	}
	for _, c := range a.Next {
		if c.Tier != "advanced" || !strings.Contains(c.Blockers[0], "hardware") && !strings.Contains(c.Blockers[0], "microVM") {
			t.Errorf("stage 3 blocker %+v", c)
		}
	}
}

// A gateway's refusal of egress no agent's session owned names the
// gateway, not an agent: nothing happened, and no agent is left
// unattributed by it.
func TestAnOrphanRefusalIsNoAnonymousDecision(t *testing.T) {
	w := enterprise(t)
	orphan := event("gateway.connect", `Host::"notes/evil.example:443"`, now, audit.Actor{Kind: audit.ActorWorkload, ID: "spiffe://bulkhead.local/bulkhead/gateway/gw1"})
	orphan.Decision = audit.Deny
	w.events = append(w.events, orphan)
	if got := tiers(w.assess(t))[assess.Identity]; got != "enterprise" {
		t.Fatalf("identity: %s", got)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Each regression from the Enterprise world drops exactly its surface,
// and names the object to fix.
func TestEachGapNamesWhatToFix(t *testing.T) {
	cases := []struct {
		name    string
		change  func(*world)
		surface string
		tier    string // the tier the surface falls to
		blocker string // in the blockers of the tier above it
	}{
		{"a day-long SVID", func(w *world) { w.agents[1].SVIDTTL = 24 * time.Hour }, assess.Identity, "foundation", "agent ops-admin: SVID TTL 24h0m0s"},
		{"no rotation", func(w *world) { w.events = slices.Delete(w.events, 1, 2) }, assess.Identity, "foundation", "agent reader: enrolled"},
		{"an anonymous decision", func(w *world) {
			w.events = append(w.events, event("gateway.call_tool", `Tool::"notes/note"`, now, audit.Actor{Kind: audit.ActorWorkload, ID: "gateway/gw1"}))
		}, assess.Identity, "none", "names no agent"},
		{"hour-long tokens", func(w *world) { w.tokenTTL = time.Hour }, assess.ServiceAuth, "none", "access tokens live 1h0m0s"},
		{"no gateway reported", func(w *world) { w.events = slices.Delete(w.events, 3, 4) }, assess.ServiceAuth, "foundation", "no gateway has reported"},
		{"a permit for everything", func(w *world) { w.policies["open.cedar"] = `@id("open") permit (principal, action, resource);` }, assess.Permission, "none", "policy open (open.cedar:1)"},
		{"no live signal", func(w *world) { delete(w.policies, "guardrails.cedar") }, assess.Permission, "enterprise", "no policy reads context.tainted or context.risk"},
		{"roles alone", func(w *world) {
			delete(w.policies, "guardrails.cedar")
			w.policies["roles.cedar"] = strings.Replace(w.policies["roles.cedar"], `when { resource.effects == "read" }`, "", 1)
		}, assess.Permission, "foundation", "no policy reads the resource"},
		{"a standing grant", func(w *world) { w.standing = 1 }, assess.Privilege, "foundation", "1 grants are in force outside an open task"},
		{"delete at baseline", func(w *world) {
			w.policies["roles.cedar"] += `
@id("reader-delete") permit (principal in Role::"reader", action == Action::"call_tool", resource == Tool::"docs/delete_page");`
		}, assess.Privilege, "foundation", `spiffe://bulkhead.local/agent/reader: call_tool Tool::"docs/delete_page" at baseline (allowed by reader-delete)`},
		{"a superuser", func(w *world) {
			w.policies["roles.cedar"] += `
@id("ops-all") permit (principal in Role::"ops", action, resource);`
		}, assess.Privilege, "none", "agent spiffe://bulkhead.local/agent/ops-admin reaches all 3 actions"},
		{"unbounded uses", func(w *world) { w.manifests[0] = strings.Replace(w.manifests[0], ", max_uses: 1", "", 1) }, assess.Privilege, "enterprise", "manifest cleanup, trigger purge: no max_uses"},
		{"an unsandboxed stdio server", func(w *world) {
			w.events[3] = report(t, api.GatewayReport{Name: "gw1", Servers: []api.GatewayServerReport{
				{Name: "notes", Transport: "mcp-stdio", Callers: []string{"spiffe://bulkhead.local/agent/reader"}, Sandbox: "none"}}})
		}, assess.Isolation, "foundation", "gateway gw1, server notes: sandbox: none"},
		{"an open server", func(w *world) {
			w.events[3] = report(t, api.GatewayReport{Name: "gw1", Servers: []api.GatewayServerReport{{Name: "docs", Transport: "mcp-http", Callers: []string{"*"}}}})
		}, assess.Isolation, "none", "gateway gw1, server docs: callers [*]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := enterprise(t)
			w.policies = cloneMap(w.policies)
			w.manifests = slices.Clone(w.manifests)
			c.change(&w)
			a := w.assess(t)
			if got := tiers(a)[c.surface]; got != c.tier {
				t.Fatalf("%s: %s, want %s", c.surface, got, c.tier)
			}
			above := []string{"foundation", "enterprise", "advanced"}[assess.Rank(c.tier)]
			if b := blockers(a, c.surface, above); !slices.ContainsFunc(b, func(s string) bool { return strings.Contains(s, c.blocker) }) {
				t.Fatalf("blockers of %s %s: %q, want one containing %q", c.surface, above, b, c.blocker)
			}
		})
	}
}

func cloneMap(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// A forbid by time of day, and a rate limit without a budget, only
// throttle: linted, and counted toward no tier.
func TestThrottlesAreLinted(t *testing.T) {
	w := enterprise(t)
	w.policies = cloneMap(w.policies)
	w.policies["hours.cedar"] = `@id("office-hours")
forbid (principal, action, resource in ToolServer::"docs") when { context.time.toTime() < duration("9h") };`
	w.events[3] = report(t, api.GatewayReport{Name: "gw1", Servers: []api.GatewayServerReport{
		{Name: "docs", Transport: "mcp-http", Callers: []string{"spiffe://bulkhead.local/agent/*"}, RatePerSecond: 5}}})
	a := w.assess(t)
	joined := strings.Join(a.Lint, "\n")
	for _, want := range []string{"policy office-hours (hours.cedar:1) forbids by time", "server docs: a rate limit without a budget"} {
		if !strings.Contains(joined, want) {
			t.Errorf("lint lacks %q:\n%s", want, joined)
		}
	}
}

type checkpoint struct {
	cp audit.StoredCheckpoint
	ok bool
}

func (c checkpoint) LatestCheckpoint(context.Context) (audit.StoredCheckpoint, bool, error) {
	return c.cp, c.ok, nil
}

// The status names what needs a look: a sandbox refusal, a standing
// grant, an old checkpoint.
func TestStatusRaisesAlerts(t *testing.T) {
	w := enterprise(t)
	w.standing = 2
	w.events = append(w.events, event("sandbox.violation", `ToolServer::"notes"`, now.Add(-time.Minute), alphaActor),
		audit.Event{Time: now.Add(-2 * time.Hour), Actor: audit.Actor{Kind: audit.ActorSystem, ID: "bulkhead-serve"}, Action: audit.ActionServerStart,
			Decision: audit.Allow, Detail: map[string]string{"listen": "10.0.0.1:8443"}})
	f, ms := w.frozen(t)
	st, err := assess.Status(context.Background(), assess.Deps{Agents: w, Events: w, PDP: frozen{f}, Manifests: ms, Grants: w, TokenTTL: w.tokenTTL},
		checkpoint{audit.StoredCheckpoint{Size: 9, IssuedAt: now.Add(-3 * time.Hour)}, true}, now)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(st.Alerts, "\n")
	for _, want := range []string{"1 system calls refused by sandboxes", "2 grants in force outside an open task", "no signed checkpoint from the last hour"} {
		if !strings.Contains(joined, want) {
			t.Errorf("alerts lack %q:\n%s", want, joined)
		}
	}
	if !slices.Equal(st.Replicas, []string{"10.0.0.1:8443"}) || !slices.Equal(st.Gateways, []string{"gw1"}) || st.Agents["active"] != 2 ||
		st.Tiers[assess.Privilege] != "foundation" || st.CheckpointSize != 9 {
		t.Fatalf("status %+v", st)
	}
}
