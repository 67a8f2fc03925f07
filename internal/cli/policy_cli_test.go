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

const examples = "../../examples/policies"

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// 'bulkhead policy test' runs without a server and its exit status gates CI.
func TestPolicyTestCommand(t *testing.T) {
	abs, err := filepath.Abs(examples)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	failing := filepath.Join(dir, "failing.yaml")
	writeFile(t, failing, `policies: `+abs+`/live
tools: `+abs+`/tools.yaml
agents: {alpha: [reader]}
cases:
  - name: passes
    principal: alpha
    action: call_tool
    resource: Tool::"docs/search"
    expect: allow
  - name: wrong expectation
    principal: alpha
    action: call_tool
    resource: Tool::"docs/delete_page"
    expect: allow
  - name: wrong reasons
    principal: alpha
    action: call_tool
    resource: Tool::"docs/search"
    expect: allow
    reasons: [admin-all]
`)
	broken := filepath.Join(dir, "broken.yaml")
	writeFile(t, filepath.Join(dir, "bad", "p.cedar"), "permit (principal, action, resource)\n  when { context.nope };\n")
	writeFile(t, broken, "policies: bad\ncases: [{principal: alpha, action: call_tool, resource: 'Tool::\"x/y\"', expect: deny}]\n")

	cases := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr string
	}{
		{"examples pass", []string{"policy", "test", examples + "/tests/live.yaml", examples + "/tests/candidate.yaml"}, 0,
			[]string{"ok    ", "24 of 24 cases passed"}, ""},
		{"failures exit 1", []string{"policy", "test", failing}, 1,
			[]string{"ok    " + failing + ": passes", "FAIL  " + failing + ": wrong expectation\n      got deny, want allow",
				"determining policies [reader-docs], want [admin-all]", "1 of 3 cases passed"}, "2 policy test case(s) failed"},
		{"invalid policies exit 2", []string{"policy", "test", broken}, 2, nil, "p.cedar:1:1"},
		{"missing file exits 2", []string{"policy", "test", filepath.Join(dir, "none.yaml")}, 2, nil, "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// No server and no credentials: the command must not need them.
			code, out, errs := run(t, map[string]string{"BULKHEAD_SERVER": "https://127.0.0.1:1"}, c.args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, c.code, out, errs)
			}
			for _, s := range c.stdout {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			if !strings.Contains(errs, c.stderr) {
				t.Errorf("stderr lacks %q:\n%s", c.stderr, errs)
			}
		})
	}
	code, out, _ := run(t, nil, "policy", "test", "--json", examples+"/tests/live.yaml")
	var reps []struct {
		Passed, Failed int
	}
	if code != 0 || json.Unmarshal([]byte(out), &reps) != nil || len(reps) != 1 || reps[0].Failed != 0 {
		t.Fatalf("--json: exit %d\n%s", code, out)
	}
}

func TestPolicyLifecycleThroughTheCLI(t *testing.T) {
	srv := testenv.Start(t)
	env := map[string]string{"BULKHEAD_SERVER": srv.URL, "BULKHEAD_CREDENTIALS": srv.Server.OperatorDir()}
	must := mustRun(t, env)
	must("agent", "create", "alpha")
	if out := must("agent", "role", "add", "alpha", "reader"); !strings.Contains(out, "alpha is in role reader") {
		t.Fatalf("role add: %s", out)
	}
	if out := must("agent", "role", "list", "alpha"); !strings.Contains(out, "reader") {
		t.Fatalf("role list: %s", out)
	}
	if out := must("tool", "apply", "-f", examples+"/tools.yaml"); !strings.Contains(out, "5 servers, 8 tools, 2 routes") {
		t.Fatalf("tool apply: %s", out)
	}
	if out := must("tool", "list"); !strings.Contains(strings.Join(strings.Fields(out), " "), `Tool::"docs/delete_page" high false`) {
		t.Fatalf("tool list: %s", out)
	}
	if out := must("policy", "apply", "-f", examples+"/live", "--description", "first"); !strings.Contains(out, "applied version 1 (9 policies from 2 files") {
		t.Fatalf("apply: %s", out)
	}

	// An invalid set: refused with its location, live version unchanged.
	bad := t.TempDir()
	writeFile(t, filepath.Join(bad, "ok.cedar"), "permit (principal, action, resource);\n")
	writeFile(t, filepath.Join(bad, "sub", "bad.cedar"), "\n\nforbid (principal, action == Action::\"call_tool\", resource)\nwhen { context.input.path like \"/etc/*\" };\n")
	code, _, errs := run(t, env, "policy", "apply", "-f", bad)
	if code == 0 || !strings.Contains(errs, "sub/bad.cedar:3:1") || !strings.Contains(errs, "nothing was changed") {
		t.Fatalf("invalid apply: exit %d\n%s", code, errs)
	}
	var vs api.PolicyVersions
	if err := json.Unmarshal([]byte(must("policy", "versions", "--json")), &vs); err != nil || vs.State.Live != 1 || len(vs.Versions) != 1 {
		t.Fatalf("versions after a refused apply: %+v %v", vs, err)
	}

	out := must("policy", "explain", "--principal", "alpha", "--action", "call_tool", "--resource", `Tool::"files/read_file"`,
		"--context", `{"risk": 0, "tainted": false, "input": {"path": "/etc/passwd"}}`)
	for _, want := range []string{"DENY", "forbid forbid-etc (guardrails.cedar:", `context.input.path like "/etc/*"`, "of 9 policies"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}

	must("policy", "apply", "--shadow", "-f", examples+"/candidate")
	if out := strings.Join(strings.Fields(must("policy", "versions")), " "); !strings.Contains(out, "1 live 9") || !strings.Contains(out, "2 shadow 10") {
		t.Fatalf("versions: %s", out)
	}
	if out := must("policy", "shadow-report"); !strings.Contains(out, "shadow version 2: 0 requests evaluated, 0 would flip") {
		t.Fatalf("shadow-report: %s", out)
	}
	if out := must("policy", "show", "shadow"); !strings.Contains(out, `@id("reader-wiki")`) {
		t.Fatalf("show shadow: %s", out)
	}
	if out := must("policy", "promote"); !strings.Contains(out, "live version 2, shadow version none") {
		t.Fatalf("promote: %s", out)
	}
	if out := must("policy", "rollback", "1"); !strings.Contains(out, "live version 1") {
		t.Fatalf("rollback: %s", out)
	}
	if out := must("policy", "schema"); !strings.Contains(out, "entity Agent in [Role, Agent]") {
		t.Fatalf("schema: %s", out)
	}
	must("agent", "role", "remove", "alpha", "reader")
	if code, _, errs := run(t, env, "agent", "role", "remove", "alpha", "reader"); code == 0 || !strings.Contains(errs, "does not have role") {
		t.Fatalf("removing a role twice: exit %d %s", code, errs)
	}
}
