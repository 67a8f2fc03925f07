package elevation_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/elevation"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func TestParseManifestExample(t *testing.T) {
	m, err := elevation.ParseManifest(readRepo(t, "examples/manifests/report-writer.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tr, ok := m.Trigger("write-report")
	if !ok || tr.MaxUses != 2 || time.Duration(tr.MaxDuration) != 15*time.Minute || tr.Approval != elevation.ApprovalHuman {
		t.Fatalf("write-report = %+v", tr)
	}
	if time.Duration(m.MaxDuration) != 2*time.Hour || m.ScopeLimits.Calls != 50 {
		t.Fatalf("manifest = %+v", m)
	}
	if !m.AllowsAgent("spiffe://bulkhead.local/agent/alpha") || m.AllowsAgent("spiffe://other.test/agent/alpha") {
		t.Fatal("agent patterns")
	}
}

func TestParseManifestErrors(t *testing.T) {
	const base = "name: m\napproved_actions: [{actions: [list_tools]}]\n"
	trig := func(s string) string { return base + "escalation_triggers:\n  - " + s + "\n" }
	for _, c := range []struct{ name, yaml, want string }{
		{"empty", "", "empty"},
		{"unknown key", base + "approved: []\n", "field approved not found"},
		{"two documents", base + "---\nname: n\n", "one document"},
		{"bad name", "name: Bad:Name\n", "manifest name"},
		{"unknown action", "name: m\napproved_actions: [{actions: [rm_rf]}]\n", `unknown action "rm_rf"`},
		{"no actions", "name: m\napproved_actions: [{resources: [files]}]\n", "actions is required"},
		{"bad resource", "name: m\napproved_actions: [{actions: [call_tool], resources: [a/b/c]}]\n", "resource"},
		{"ambiguous short resource", "name: m\napproved_actions: [{actions: [read], resources: [files/x]}]\n", "several kinds"},
		{"server actions on a tool", "name: m\napproved_actions: [{actions: [list_tools], resources: [files/x]}]\n", "apply to servers"},
		{"bad entity type", `name: m` + "\n" + `approved_actions: [{actions: [call_tool], resources: ['Agent::"x"']}]` + "\n", "not one of"},
		{"bad duration", base + "max_duration: forever\n", "not a duration"},
		{"too long", base + "max_duration: 900h\n", "outside"},
		{"trigger without grants", trig("name: t"), "at least one rule"},
		{"trigger twice", trig("{name: t, grants: [{actions: [call_tool]}]}") + "  - {name: t, grants: [{actions: [call_tool]}]}\n", "appears twice"},
		{"bad approval", trig("{name: t, approval: agent, grants: [{actions: [call_tool]}]}"), "approval"},
		{"bad sensitivity", trig("{name: t, sensitivity: extreme, grants: [{actions: [call_tool]}]}"), "sensitivity"},
		{"grant outlives task", base + "max_duration: 10m\nescalation_triggers: [{name: t, max_duration: 1h, grants: [{actions: [call_tool]}]}]\n", "max_duration"},
		{"negative uses", trig("{name: t, max_uses: -1, grants: [{actions: [call_tool]}]}"), "negative"},
		{"agent pattern", base + "agents: [alpha]\n", "SPIFFE ID pattern"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := elevation.ParseManifest([]byte(c.yaml))
			if !errors.Is(err, fault.Invalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an invalid-request error saying %q", err, c.want)
			}
		})
	}
}

func TestCompileRefusesConditionsThatAddPolicies(t *testing.T) {
	for _, when := range []string{
		`true }; permit (principal, action, resource) when { true`,
		`true }; @id("manifest:m:trigger:x") permit (principal, action, resource) when { true`,
		`(`,
	} {
		src := "name: m\napproved_actions: [{actions: [list_tools]}]\nprohibited_actions:\n  - actions: [call_tool]\n    when: '" + strings.ReplaceAll(when, "'", "''") + "'\n"
		m, err := elevation.ParseManifest([]byte(src))
		if err != nil {
			t.Fatalf("%q: %v", when, err)
		}
		if _, err := elevation.Compile(m, 1); !errors.Is(err, fault.Invalid) {
			t.Fatalf("when %q compiled: %v", when, err)
		}
	}
}

func TestCompiledPoliciesValidate(t *testing.T) {
	m, err := elevation.ParseManifest(readRepo(t, "examples/manifests/report-writer.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := elevation.Compile(m, 7)
	if err != nil {
		t.Fatal(err)
	}
	text := set.Files[0].Content
	for _, id := range []string{"manifest:report-writer:prohibited:0", "manifest:report-writer:outside",
		elevation.TriggerPolicyID("report-writer", "write-report"), `context.grants.contains("report-writer/publish")`} {
		if !strings.Contains(text, id) {
			t.Fatalf("compiled set lacks %s:\n%s", id, text)
		}
	}
	// The compiled file validates against Bulkhead's schema like any set.
	if _, err := policy.Compile(set.Files); err != nil {
		t.Fatalf("compiled policies do not validate: %v\n%s", err, text)
	}
	if set.Version != 7 || set.Digest != policy.Digest(set.Files) {
		t.Fatalf("set = %+v", set)
	}
}

func TestTriggerPolicyIDRoundTrip(t *testing.T) {
	id := elevation.TriggerPolicyID("report-writer", "write-report")
	m, tr, ok := elevation.ParseTriggerPolicyID(id)
	if !ok || m != "report-writer" || tr != "write-report" {
		t.Fatalf("%s → %q %q %v", id, m, tr, ok)
	}
	for _, id := range []string{"manifest:report-writer:outside", "manifest:x:prohibited:0", "reader-docs", "manifest::trigger:x", "manifest:a:trigger:B/C"} {
		if _, _, ok := elevation.ParseTriggerPolicyID(id); ok {
			t.Fatalf("%s parsed as a trigger policy", id)
		}
	}
}

// FuzzParseManifest: a manifest never panics the parser or the compiler,
// and whatever compiles is one policy per rule, each with a managed id.
func FuzzParseManifest(f *testing.F) {
	f.Add(readRepo(f, "examples/manifests/report-writer.yaml"))
	f.Add([]byte("name: m\napproved_actions: [{actions: [call_tool], resources: ['Tool::\"a/b\"'], when: 'context.risk > 1'}]\n"))
	f.Add([]byte("name: m\nescalation_triggers: [{name: t, grants: [{actions: [GET], resources: [billing/invoices]}]}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := elevation.ParseManifest(b)
		if err != nil {
			if !errors.Is(err, fault.Invalid) {
				t.Fatalf("parse error of another kind: %v", err)
			}
			return
		}
		set, err := elevation.Compile(m, 1)
		if err != nil {
			if !errors.Is(err, fault.Invalid) {
				t.Fatalf("compile error of another kind: %v", err)
			}
			return
		}
		s, err := policy.Compile(set.Files)
		if err != nil {
			return // a when condition that does not type-check
		}
		want := len(m.ProhibitedActions) + len(m.EscalationTriggers) + 1
		if s.Len() != want {
			t.Fatalf("%d policies, want %d", s.Len(), want)
		}
		for _, p := range s.Policies() {
			if !strings.HasPrefix(p.ID, policy.ManagedPrefix+m.Name+":") {
				t.Fatalf("policy id %q", p.ID)
			}
		}
	})
}
