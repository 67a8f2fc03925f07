package elevation_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// The manifest's compiled policies take effect in the live PDP, beside
// the operator's: its baseline bounds the task, its prohibitions always
// deny, and a trigger's permit applies only while its grant is in
// context.grants.
func TestManifestPoliciesInThePDP(t *testing.T) {
	e := newEnv(t)
	task := e.start(e.alpha)
	const report, draft = "report-writer/write-report", "report-writer/write-draft"
	for _, c := range []struct {
		name   string
		task   *elevation.Task
		grants []string
		tool   string
		input  string
		allow  bool
		reason string
	}{
		{"baseline without a task: the role reads", nil, nil, "files/read_file", `{"path":"/srv/a"}`, true, "reader-docs"},
		{"baseline without a task: no writes", nil, nil, "files/write_file", `{"path":"/reports/a"}`, false, ""},
		{"a grant means nothing without its task", nil, []string{report}, "files/write_file", `{"path":"/reports/a"}`, false, ""},
		{"in the task: approved and in the role", &task, nil, "files/read_file", `{"path":"/srv/a"}`, true, "reader-docs"},
		{"in the task: outside the baseline", &task, nil, "files/write_file", `{"path":"/reports/a"}`, false, "manifest:report-writer:outside"},
		{"in the task with the grant", &task, []string{report}, "files/write_file", `{"path":"/reports/a"}`, true, elevation.TriggerPolicyID("report-writer", "write-report")},
		{"the grant's argument constraint", &task, []string{report}, "files/write_file", `{"path":"/home/a"}`, false, "manifest:report-writer:outside"},
		// The catalog marks write_file's path as a path: a dot-dot is denied
		// before the manifest is even evaluated.
		{"no way out of the granted directory", &task, []string{report}, "files/write_file", `{"path":"/reports/../home/a"}`, false,
			policy.PathArgsReason + `: argument "path": canonpath: path is not canonical: dot segment at offset 9`},
		{"another grant's arguments", &task, []string{draft}, "files/write_file", `{"path":"/reports/a"}`, false, "manifest:report-writer:outside"},
		{"prohibited whatever is granted", &task, []string{report}, "files/write_file", `{"path":"/etc/passwd"}`, false, "manifest:report-writer:prohibited:1"},
		{"prohibited server", &task, []string{report}, "vault/get_secret", `{}`, false, "manifest:report-writer:prohibited:0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := e.decide(e.alpha, c.task, c.grants, c.tool, c.input)
			if d.Allowed != c.allow || (c.reason != "" && !slices.Contains(d.Reasons, c.reason)) || len(d.Errors) > 0 {
				t.Fatalf("decision = %v %v %v; want %v with %q", d.Allowed, d.Reasons, d.Errors, c.allow, c.reason)
			}
		})
	}

	// A manifest with no loaded policies denies its tasks (fail closed).
	ghost := task
	ghost.Manifest = "ghost"
	if d := e.decide(e.alpha, &ghost, nil, "files/read_file", `{"path":"/srv/a"}`); d.Allowed || len(d.Errors) == 0 {
		t.Fatalf("unknown manifest: %+v", d)
	}

	// The operator's policy apply keeps the manifest's policies...
	ctx := context.Background()
	files := []policy.File{{Name: "all.cedar", Content: `@id("admin") permit (principal, action, resource);`}}
	if _, err := e.pol.Apply(ctx, e.alice.Actor(), files, false, "replace"); err != nil {
		t.Fatal(err)
	}
	if d := e.decide(e.alpha, &task, nil, "files/write_file", `{"path":"/reports/a"}`); d.Allowed || !slices.Contains(d.Reasons, "manifest:report-writer:outside") {
		t.Fatalf("after policy apply: %+v", d)
	}
	// ...refuses ids reserved for manifests...
	forged := []policy.File{{Name: "f.cedar", Content: `@id("manifest:report-writer:trigger:write-report") permit (principal, action, resource);`}}
	if _, err := e.pol.Apply(ctx, e.alice.Actor(), forged, false, "forge"); !errors.Is(err, fault.Invalid) || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("a forged manifest id: %v", err)
	}
	// ...and refuses a schema that would break them.
	breaking := append(files, policy.File{Name: "input.cedarschema", Content: `type ToolInput = { path?: Long };`})
	if _, err := e.pol.Apply(ctx, e.alice.Actor(), breaking, false, "break"); !errors.Is(err, fault.Invalid) || !strings.Contains(err.Error(), "report-writer") {
		t.Fatalf("a schema that breaks a manifest: %v", err)
	}
}
