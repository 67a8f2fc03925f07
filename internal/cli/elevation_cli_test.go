package cli_test

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/testenv"
)

func repoFile(path string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", path)
}

// The worked example of docs/elevation.md, command by command.
func TestElevationThroughTheCLI(t *testing.T) {
	srv := testenv.Start(t)
	env := map[string]string{"BULKHEAD_SERVER": srv.URL, "BULKHEAD_CREDENTIALS": srv.Server.OperatorDir()}
	must := mustRun(t, env)
	fails := func(want string, args ...string) {
		t.Helper()
		code, _, errs := run(t, env, args...)
		if code == 0 || !strings.Contains(errs, want) {
			t.Fatalf("bulkhead %s: exit %d %q, want a failure saying %q", strings.Join(args, " "), code, errs, want)
		}
	}
	must("tool", "apply", "-f", repoFile("examples/policies/tools.yaml"))
	if out := must("manifest", "apply", "-f", repoFile("examples/manifests/report-writer.yaml")); !strings.Contains(out, "applied manifest report-writer version 1 (3 triggers") {
		t.Fatalf("manifest apply: %s", out)
	}
	if out := must("manifest", "list"); !strings.Contains(out, "write-report,write-draft,publish") {
		t.Fatalf("manifest list: %s", out)
	}
	if out := must("manifest", "show", "report-writer"); !strings.Contains(out, `@id("manifest:report-writer:outside")`) {
		t.Fatalf("manifest show: %s", out)
	}
	must("agent", "create", "alpha", "--scope", "mcp")
	dir := filepath.Join(t.TempDir(), "alpha")
	must("agent", "enroll", "--token", strings.TrimSpace(must("agent", "join-token", "alpha")), "--out", dir)

	task := strings.TrimSpace(must("task", "start", "--dir", dir, "--manifest", "report-writer"))
	if !regexp.MustCompile(`^tk_[0-9a-f]{24}$`).MatchString(task) {
		t.Fatalf("task start printed %q", task)
	}
	fails("is not in manifest report-writer", "elevation", "request", "--dir", dir, "--task", task, "--trigger", "root", "--reason", "x")
	id := strings.TrimSpace(must("elevation", "request", "--dir", dir, "--task", task, "--trigger", "write-report", "--reason", "weekly report"))
	if !strings.HasPrefix(id, "el_") {
		t.Fatalf("elevation request printed %q", id)
	}
	// An agent's credential cannot approve, even through the CLI.
	code, _, errs := run(t, map[string]string{"BULKHEAD_SERVER": srv.URL, "BULKHEAD_CREDENTIALS": dir}, "elevation", "approve", id, "--reason", "me")
	if code == 0 || !strings.Contains(errs, "forbidden") && !strings.Contains(errs, "may not") {
		t.Fatalf("agent approval through the CLI: exit %d %s", code, errs)
	}
	code, out, errs := run(t, env, "elevation", "approve", id, "--reason", "report week 45")
	if code != 0 || !strings.Contains(out, "grant report-writer/write-report in force") || !strings.Contains(errs, `justification: "weekly report"`) {
		t.Fatalf("approve: exit %d\n%s\n%s", code, out, errs)
	}
	var active []api.Elevation
	if err := json.Unmarshal([]byte(must("elevation", "list", "--active", "--json")), &active); err != nil || len(active) != 1 || active[0].ID != id {
		t.Fatalf("list --active: %v %+v", err, active)
	}
	var st api.Standing
	if err := json.Unmarshal([]byte(must("elevation", "list", "--standing", "--json")), &st); err != nil || st.Standing != 0 || st.Active != 1 || st.OpenTasks != 1 {
		t.Fatalf("list --standing: %v %+v", err, st)
	}

	// A second human, with a credential of their own, for two-person
	// approval.
	bobDir := filepath.Join(t.TempDir(), "bob")
	if out := must("operator", "issue", "bob", "--out", bobDir); !strings.Contains(out, "spiffe://bulkhead.local/operator/bob") {
		t.Fatalf("operator issue: %s", out)
	}
	pub := strings.TrimSpace(must("elevation", "request", "--dir", dir, "--task", task, "--trigger", "publish", "--reason", "publish it"))
	if out := must("elevation", "approve", pub, "--reason", "first"); !strings.Contains(out, "needs two distinct humans") {
		t.Fatalf("first approval: %s", out)
	}
	if out := must("--credentials", bobDir, "elevation", "approve", pub, "--reason", "second"); !strings.Contains(out, "in force") {
		t.Fatalf("second approval: %s", out)
	}
	if out := must("elevation", "revoke", pub, "--reason", "not today"); !strings.Contains(out, "revoked elevation "+pub) {
		t.Fatalf("revoke: %s", out)
	}
	if out := must("elevation", "list", "--task", task); !strings.Contains(out, "revoked") || !strings.Contains(out, "active") {
		t.Fatalf("list: %s", out)
	}
	if out := must("elevation", "show", id); !strings.Contains(out, "approved by:   spiffe://bulkhead.local/operator/admin") {
		t.Fatalf("show: %s", out)
	}

	// Tokens for the task carry it.
	must("resource", "add", "https://gw.test")
	tok := strings.TrimSpace(must("token", "get", "--dir", dir, "--resource", "https://gw.test", "--task", task))
	var inspected struct {
		Claims map[string]any `json:"claims"`
	}
	if err := json.Unmarshal([]byte(must("token", "inspect", tok)), &inspected); err != nil || inspected.Claims["task"] != task {
		t.Fatalf("token claims: %v %v", err, inspected.Claims)
	}

	if out := must("task", "complete", "--dir", dir, task); !strings.Contains(out, "back at baseline") {
		t.Fatalf("task complete: %s", out)
	}
	if err := json.Unmarshal([]byte(must("elevation", "list", "--standing", "--json")), &st); err != nil || st.Standing != 0 || st.Active != 0 || st.OpenTasks != 0 {
		t.Fatalf("standing after: %v %+v", err, st)
	}
	// A token for the ended task: refused, saying how and when it ended
	// and what to run instead.
	for _, want := range []string{"task " + task + " ended: completed at ", "open a new task of manifest report-writer",
		"bulkhead task start --dir " + dir + " --manifest report-writer"} {
		fails(want, "token", "get", "--dir", dir, "--resource", "https://gw.test", "--task", task)
	}
	fails("bulkhead task start --dir "+dir+" --manifest report-writer", "elevation", "request", "--dir", dir, "--task", task, "--trigger", "write-report", "--reason", "again")
	if out := must("task", "show", task); !strings.Contains(out, "completed") {
		t.Fatalf("task show: %s", out)
	}
	if out := must("elevation", "policy", "show"); !strings.Contains(out, `@id("agents-never-approve")`) {
		t.Fatalf("policy show: %s", out)
	}
}
