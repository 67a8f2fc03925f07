package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

// An operator asks what each agent can reach, and what a candidate
// policy set would add before it is applied: the diff fails the gate
// unless the growth is allowed.
func TestBlastRadiusThroughTheCLI(t *testing.T) {
	srv := testenv.Start(t)
	env := map[string]string{"BULKHEAD_SERVER": srv.URL, "BULKHEAD_CREDENTIALS": srv.Server.OperatorDir()}
	must := mustRun(t, env)
	for _, a := range [][2]string{{"alpha", "reader"}, {"beta", "reader"}, {"root", "admin"}} {
		must("agent", "create", a[0])
		must("agent", "role", "add", a[0], a[1])
	}
	must("tool", "apply", "-f", examples+"/tools.yaml")
	must("policy", "apply", "-f", examples+"/live")

	// No call yet: alpha is learning.
	if out := must("agent", "baseline", "alpha"); !strings.Contains(out, "0 calls") || !strings.Contains(out, "(learning)") {
		t.Fatalf("agent baseline: %s", out)
	}
	out := must("blast-radius", "alpha")
	for _, want := range []string{`call_tool  Tool::"docs/search"`, `call_tool  Tool::"files/read_file"`, "baseline", "risk 100",
		`forbid forbid-etc: when { context.input has path && context.input.path like "/etc/*" }`} {
		if !strings.Contains(out, want) {
			t.Errorf("blast-radius alpha lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "vault") || strings.Contains(out, "wiki") || strings.Contains(out, "delete_page") {
		t.Errorf("a reader reaches beyond the docs:\n%s", out)
	}
	var fleet api.BlastRadius
	if err := json.Unmarshal([]byte(must("blast-radius", "--json")), &fleet); err != nil {
		t.Fatal(err)
	}
	scores := map[string]float64{}
	for _, r := range fleet.Fleet.Agents {
		scores[strings.TrimPrefix(r.Agent, "spiffe://bulkhead.local/agent/")] = r.Score
	}
	// alpha and beta share one analysis; root, an admin, reaches more.
	if fleet.Fleet.Analyses != 2 || scores["alpha"] != scores["beta"] || scores["root"] <= scores["alpha"] || fleet.Version != 1 {
		t.Fatalf("fleet: %d analyses, scores %v, version %d", fleet.Fleet.Analyses, scores, fleet.Version)
	}

	// The candidate gives readers the wiki: the gate fails at growth 0.
	code, stdout, errs := run(t, env, "blast-radius", "--diff", examples+"/candidate")
	if code == 0 || !strings.Contains(errs, "over --max-growth 0") {
		t.Fatalf("the gate passed a growth: exit %d %s", code, errs)
	}
	for _, want := range []string{`+  spiffe://bulkhead.local/agent/alpha  call_tool  Tool::"wiki/edit_page"`, `+  spiffe://bulkhead.local/agent/beta   call_tool  Tool::"wiki/search"`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the diff lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "root") {
		t.Errorf("the diff changes an admin's reach:\n%s", stdout)
	}
	must("blast-radius", "--diff", examples+"/candidate", "--max-growth", "1000")
	// A candidate manifest whose trigger the approval policy may grant
	// alone adds its grant to the agents that may open its tasks.
	manifest := filepath.Join(t.TempDir(), "oncall.yaml")
	writeFile(t, manifest, `name: oncall
agents: ["spiffe://bulkhead.local/agent/alpha"]
approved_actions: [{ actions: [call_tool], resources: [docs] }]
escalation_triggers:
  - { name: peek, grants: [{ actions: [call_tool], resources: [wiki/edit_page] }], approval: policy }
`)
	code, stdout, errs = run(t, env, "blast-radius", "--diff-manifest", manifest)
	if code == 0 || !strings.Contains(stdout, `+  spiffe://bulkhead.local/agent/alpha  call_tool  Tool::"wiki/edit_page"  elevation`) || strings.Contains(stdout, "agent/beta") {
		t.Fatalf("--diff-manifest: exit %d\n%s\n%s", code, stdout, errs)
	}
	// Nothing was applied.
	if out := must("policy", "versions"); strings.Contains(out, " 2 ") {
		t.Fatalf("the diff applied the candidate: %s", out)
	}
	// Applying it says the same.
	if out := must("policy", "apply", "-f", examples+"/candidate"); !strings.Contains(out, "blast radius: 4 items added and 0 removed across 2 agents; fleet score 43 -> 57") {
		t.Fatalf("policy apply: %s", out)
	}
	if code, _, errs := run(t, env, "blast-radius", "nobody"); code == 0 || !strings.Contains(errs, "no active agent") {
		t.Fatalf("an unknown agent: exit %d %s", code, errs)
	}
}

// 'bulkhead assess' judges the live deployment and gates CI: with no
// gateway reporting, isolation is below Foundation and names why; with no
// manifest, every privilege is standing.
func TestAssessThroughTheCLI(t *testing.T) {
	srv := testenv.Start(t)
	env := map[string]string{"BULKHEAD_SERVER": srv.URL, "BULKHEAD_CREDENTIALS": srv.Server.OperatorDir()}
	must := mustRun(t, env)
	for _, a := range [][2]string{{"alpha", "reader"}, {"root", "admin"}} {
		must("agent", "create", a[0])
		must("agent", "role", "add", a[0], a[1])
	}
	must("tool", "apply", "-f", examples+"/tools.yaml")
	must("policy", "apply", "-f", examples+"/live")
	out := must("assess")
	for _, want := range []string{"stage 1: Foundation agency and containment (in progress)", "no gateway has reported what it serves",
		"no manifest declares an escalation trigger", "to complete stage 1:", "access tokens live 5m0s"} {
		if !strings.Contains(out, want) {
			t.Errorf("assess lacks %q:\n%s", want, out)
		}
	}
	code, _, errs := run(t, env, "assess", "--require", "foundation")
	if code == 0 || !strings.Contains(errs, "below foundation: isolation (none)") {
		t.Fatalf("--require foundation: exit %d %s", code, errs)
	}
	if code, _, errs := run(t, env, "assess", "--require", "platinum"); code == 0 || !strings.Contains(errs, "is not foundation, enterprise or advanced") {
		t.Fatalf("--require platinum: exit %d %s", code, errs)
	}
	page := filepath.Join(t.TempDir(), "assess.html")
	if out := must("assess", "--html", page); !strings.Contains(out, "wrote "+page) {
		t.Fatalf("assess --html: %s", out)
	}
	if b, err := os.ReadFile(page); err != nil || !strings.Contains(string(b), "no gateway has reported what it serves") {
		t.Fatalf("the page: %v\n%s", err, b)
	}
	var a api.Assessment
	if err := json.Unmarshal([]byte(must("assess", "--json")), &a); err != nil || a.Stage != 1 || len(a.Surfaces) != 5 {
		t.Fatalf("assess --json: %+v %v", a, err)
	}
	out = strings.Join(strings.Fields(must("status")), " ")
	for _, want := range []string{"agents 2 active", "gateways none", "tiers identity enterprise; service auth foundation;", "stage 1: Foundation agency",
		"replicas 127.0.0.1:"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}
