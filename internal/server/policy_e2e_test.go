package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cedar-policy/cedar-go"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/client"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

const policyExamples = "../../examples/policies"

// policyEnv is a control plane with the example catalog and live policies
// applied, and agents alpha (reader), root (admin) and mallory (enrolled,
// no role).
func policyEnv(t *testing.T, opts ...testenv.Option) (*testenv.Env, string) {
	t.Helper()
	env := testenv.Start(t, opts...)
	ctx := context.Background()
	malloryDir := env.Enroll("mallory")
	for name, role := range map[string]string{"alpha": "reader", "root": "admin"} {
		if _, err := env.Operator.CreateAgent(ctx, name, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Operator.AddAgentRole(ctx, name, role); err != nil {
			t.Fatal(err)
		}
	}
	cat, err := policy.ParseCatalog("tools.yaml", readFile(t, policyExamples+"/tools.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Operator.ApplyTools(ctx, policy.CatalogJSON(cat)); err != nil {
		t.Fatal(err)
	}
	applyDir(t, env.Operator, policyExamples+"/live", false)
	return env, malloryDir
}

func applyDir(t *testing.T, c *client.Client, dir string, shadow bool) api.PolicyVersion {
	t.Helper()
	files, err := policy.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	req := api.PolicyApplyRequest{Shadow: shadow}
	for _, f := range files {
		req.Files = append(req.Files, api.PolicyFile(f))
	}
	v, err := c.ApplyPolicy(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func agentSubject(name string) *api.AuthZENEntity {
	return &api.AuthZENEntity{Type: "Agent", ID: "spiffe://bulkhead.local/agent/" + name}
}

func toolCall(agent, tool string, input map[string]any) api.AuthZENRequest {
	r := api.AuthZENRequest{Subject: agentSubject(agent), Action: &api.AuthZENAction{Name: "call_tool"},
		Resource: &api.AuthZENEntity{Type: "Tool", ID: tool}, Context: gatewayContext(input)}
	return r
}

// gatewayContext is the context a gateway sends: risk and taint always
// (the example policies read them, and a missing attribute is an
// evaluation error, which denies), tool arguments when there are any.
func gatewayContext(input map[string]any) json.RawMessage {
	ctx := map[string]any{"risk": 5, "tainted": false}
	if input != nil {
		ctx["input"] = input
	}
	b, _ := json.Marshal(ctx)
	return b
}

// The three stories, through AuthZEN over mTLS, asked by a
// Bulkhead component (the control plane's own /bulkhead/ identity stands in
// for a gateway) and by an operator.
func TestAuthZENDecisions(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			env, _ := policyEnv(t, testenv.WithBackend(b))
			ctx := context.Background()
			gateway := env.Client(filepath.Join(env.DataDir, "server"))
			live, _ := env.Server.Policy().State()
			cases := []struct {
				name    string
				req     api.AuthZENRequest
				allowed bool
				reasons []string
			}{
				{"reader may call a docs tool", toolCall("alpha", "docs/search", map[string]any{"query": "setup"}), true, []string{"reader-docs"}},
				{"reader may not call another tool", toolCall("alpha", "wiki/search", nil), false, nil},
				{"reader may not list tools", api.AuthZENRequest{Subject: agentSubject("alpha"), Action: &api.AuthZENAction{Name: "list_tools"},
					Resource: &api.AuthZENEntity{Type: "ToolServer", ID: "docs"}, Context: gatewayContext(nil)}, false, nil},
				{"without risk, a policy reading it fails, which denies", api.AuthZENRequest{Subject: agentSubject("alpha"),
					Action: &api.AuthZENAction{Name: "call_tool"}, Resource: &api.AuthZENEntity{Type: "Tool", ID: "docs/search"}}, false, nil},
				{"high sensitivity beats the reader permit", toolCall("alpha", "docs/delete_page", nil), false, []string{"forbid-high-sensitivity"}},
				{"high sensitivity beats the admin permit", toolCall("root", "vault/get_secret", nil), false, []string{"forbid-high-sensitivity"}},
				{"an argument under /etc is denied", toolCall("alpha", "files/read_file", map[string]any{"path": "/etc/shadow"}), false, []string{"forbid-etc"}},
				{"the same tool with another argument is allowed", toolCall("alpha", "files/read_file", map[string]any{"path": "/home/alpha/notes"}), true, []string{"reader-docs"}},
				{"a reader's sub-agent inherits the role", toolCall("alpha/sub/w1", "docs/search", nil), true, []string{"reader-docs"}},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					for _, caller := range []*client.Client{gateway, env.Operator} {
						d, err := caller.Evaluate(ctx, c.req)
						if err != nil {
							t.Fatal(err)
						}
						if d.Decision != c.allowed || !slices.Equal(d.Context.Reasons, c.reasons) || d.Context.PolicyVersion != live || d.Context.ID == "" {
							t.Fatalf("%s: decision = %v %+v, want %v %v", caller.Source().ID(), d.Decision, d.Context, c.allowed, c.reasons)
						}
						// Every tool allowed here is declared effects: read in
						// the example catalog; a standalone gateway learns it
						// from this answer.
						if d.Context.ReadOnly != c.allowed {
							t.Fatalf("read_only = %v for an allowed=%v decision", d.Context.ReadOnly, c.allowed)
						}
						if (d.Context.Sensitivity != "") != c.allowed {
							t.Fatalf("sensitivity = %q for an allowed=%v decision", d.Context.Sensitivity, c.allowed)
						}
						ev := lastEvent(t, env, policy.ActionDecision)
						if ev.Detail["decision_id"] != d.Context.ID || ev.Detail["policy_version"] != fmt.Sprint(live) ||
							ev.Actor.ID != caller.Source().ID().String() || (ev.Decision == audit.Allow) != c.allowed {
							t.Fatalf("decision record = %+v", ev)
						}
					}
				})
			}
			// Each caller is recorded as what it is: the component as a
			// workload, the operator as an operator.
			evs := events(t, env, policy.ActionDecision)
			if evs[0].Actor.Kind != audit.ActorWorkload || evs[1].Actor.Kind != audit.ActorOperator || evs[0].Target != "spiffe://bulkhead.local/agent/alpha" {
				t.Fatalf("first records = %+v, %+v", evs[0], evs[1])
			}
		})
	}
}

func TestAuthZENBatchSemantics(t *testing.T) {
	env, _ := policyEnv(t)
	ctx := context.Background()
	items := []api.AuthZENRequest{
		{Resource: &api.AuthZENEntity{Type: "Tool", ID: "docs/search"}},
		{Resource: &api.AuthZENEntity{Type: "Tool", ID: "wiki/search"}},
		{Resource: &api.AuthZENEntity{Type: "Tool", ID: "docs/read_page"}},
		{Resource: &api.AuthZENEntity{Type: "", ID: "broken"}},
	}
	base := api.AuthZENRequest{Subject: agentSubject("alpha"), Action: &api.AuthZENAction{Name: "call_tool"},
		Context: gatewayContext(nil), Evaluations: items}
	cases := []struct {
		semantic string
		want     []bool
	}{
		{"", []bool{true, false, true, false}},
		{policy.DenyOnFirstDeny, []bool{true, false}},
		{policy.PermitOnFirstPermit, []bool{true}},
	}
	for _, c := range cases {
		t.Run("semantic "+c.semantic, func(t *testing.T) {
			req := base
			if c.semantic != "" {
				req.Options = &api.AuthZENOptions{EvaluationsSemantic: c.semantic}
			}
			out, err := env.Operator.EvaluateBatch(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]bool, len(out.Evaluations))
			for i, d := range out.Evaluations {
				got[i] = d.Decision
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("decisions = %v, want %v", got, c.want)
			}
			if c.semantic == "" {
				if e := out.Evaluations[3].Context.Error; e == nil || e.Status != http.StatusBadRequest {
					t.Fatalf("a malformed item = %+v", out.Evaluations[3])
				}
			}
		})
	}
	// Without an evaluations array the batch endpoint answers like the
	// single one.
	d, err := env.Operator.Evaluate(ctx, toolCall("alpha", "docs/search", nil))
	if err != nil || !d.Decision {
		t.Fatalf("single evaluation = %+v, %v", d, err)
	}
	// A batch sent to the single endpoint is refused.
	if _, err := env.Operator.Evaluate(ctx, base); !client.IsCode(err, "invalid_request") {
		t.Fatalf("batch on /evaluation: %v", err)
	}
}

// An agent may not use the PDP: asking what it may do is reconnaissance.
func TestAgentsMayNotAskThePDP(t *testing.T) {
	env, malloryDir := policyEnv(t)
	mallory := env.Client(malloryDir)
	_, err := mallory.Evaluate(context.Background(), toolCall("mallory", "vault/get_secret", nil))
	if !client.IsCode(err, "forbidden") {
		t.Fatalf("agent asked the PDP: %v", err)
	}
	if _, err := mallory.AddAgentRole(context.Background(), "mallory", "admin"); !client.IsCode(err, "forbidden") {
		t.Fatalf("agent gave itself a role: %v", err)
	}
	ev := lastEvent(t, env, audit.ActionAPIAccess)
	if ev.Decision != audit.Deny || ev.Actor.ID != "spiffe://bulkhead.local/agent/mallory" {
		t.Fatalf("refusal record = %+v", ev)
	}
}

func TestInvalidPolicyApplyIsRefusedWithItsLocation(t *testing.T) {
	env, _ := policyEnv(t)
	ctx := context.Background()
	before, err := env.Operator.PolicyVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := policy.LoadDir(policyExamples + "/live")
	req := api.PolicyApplyRequest{}
	for _, f := range files {
		req.Files = append(req.Files, api.PolicyFile(f))
	}
	req.Files = append(req.Files, api.PolicyFile{Name: "extra/bad.cedar",
		Content: "@id(\"bad\")\npermit (principal in Role::\"reader\", action == Action::\"call_tool\", resource)\nwhen { context.input.path like \"/tmp/*\" };\n"})
	_, err = env.Operator.ApplyPolicy(ctx, req)
	if !client.IsCode(err, "invalid_request") || !strings.Contains(err.Error(), "extra/bad.cedar:1:1") ||
		!strings.Contains(err.Error(), "input.path") {
		t.Fatalf("apply of an invalid set: %v", err)
	}
	after, err := env.Operator.PolicyVersions(ctx)
	if err != nil || after.State != before.State || len(after.Versions) != len(before.Versions) {
		t.Fatalf("state changed by a refused apply: %+v → %+v (%v)", before.State, after.State, err)
	}
	d, err := env.Operator.Evaluate(ctx, toolCall("alpha", "docs/search", nil))
	if err != nil || !d.Decision || d.Context.PolicyVersion != before.State.Live {
		t.Fatalf("decision after a refused apply = %+v, %v", d, err)
	}
}

func TestShadowModeThroughTheAPI(t *testing.T) {
	env, _ := policyEnv(t)
	ctx := context.Background()
	cand := applyDir(t, env.Operator, policyExamples+"/candidate", true)
	if !cand.Candidate || cand.Live {
		t.Fatalf("candidate version = %+v", cand)
	}
	flips := map[string]bool{}
	for _, c := range []struct {
		req  api.AuthZENRequest
		flip bool
	}{
		{toolCall("alpha", "docs/search", nil), false},
		{toolCall("alpha", "wiki/search", nil), true},
		{toolCall("alpha/sub/w1", "docs/search", nil), true},
		{toolCall("root", "vault/get_secret", nil), false},
	} {
		d, err := env.Operator.Evaluate(ctx, c.req)
		if err != nil {
			t.Fatal(err)
		}
		if c.flip {
			flips[d.Context.ID] = true
		}
	}
	rep, err := env.Operator.ShadowReport(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ShadowVersion != cand.Version || rep.Evaluated != 4 || rep.Flipped != 2 || len(rep.Differences) != 2 {
		t.Fatalf("report = %+v", rep)
	}
	for _, d := range rep.Differences {
		if !flips[d.DecisionID] {
			t.Fatalf("report lists %s, which did not flip", d.DecisionID)
		}
	}
	ex, err := env.Operator.ExplainPolicy(ctx, api.PolicyExplainRequest{Subject: *agentSubject("alpha"),
		Action: api.AuthZENAction{Name: "call_tool"}, Resource: api.AuthZENEntity{Type: "Tool", ID: "wiki/search"},
		Context: gatewayContext(nil), Shadow: true})
	if err != nil || ex.Decision != "allow" || ex.Version != cand.Version || len(ex.Determining) != 1 || ex.Determining[0].ID != "reader-wiki" ||
		!strings.Contains(ex.Determining[0].Position, "roles.cedar:") {
		t.Fatalf("explain against the shadow set = %+v, %v", ex, err)
	}
	if _, err := env.Operator.PromotePolicy(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := env.Operator.Evaluate(ctx, toolCall("alpha", "wiki/search", nil))
	if err != nil || !d.Decision || d.Context.PolicyVersion != cand.Version {
		t.Fatalf("after promotion = %+v, %v", d, err)
	}
	// The Go API sees the same state, in process.
	dd, err := env.Server.Policy().Decide(ctx, policy.Request{Principal: cedar.NewEntityUID(policy.TypeAgent, "spiffe://bulkhead.local/agent/alpha"),
		Action: policy.Action(policy.ActionCallTool), Resource: policy.Tool("wiki", "search")})
	if err != nil || !dd.Allowed || dd.Version != cand.Version {
		t.Fatalf("Go API after promotion = %+v, %v", dd, err)
	}
}
